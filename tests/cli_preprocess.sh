#!/usr/bin/env bash
# `dinoscope preprocess` end to end: outputs, sizes, exit statuses, the
# all-or-nothing default, --skip-bad, --side-by-side, folders and CSVs.
# Pixel values are checked against OpenCV/torchvision by tests/test_preprocess.c
# (library) and tests/cli_preprocess_shared.sh (real images); here the
# prepared output of one fixture is compared with its reference PNG when
# /usr/bin/python3 with PIL is available.
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_preprocess
# PNG width and height from the IHDR chunk
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'; }
# no files at all (hidden part files included) in a folder
empty_dir() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }
run() { # run OUT_PREFIX args... : stdout/stderr to files, status in $rc
    local p=$1; shift
    "$CLI" preprocess "$@" >"$TMP/$p.out" 2>"$TMP/$p.err"
    rc=$?
}

HE=$FIX/image/pipeline_he224_in.png
GREY16=$FIX/image/load/grey16.png
RGBA=$FIX/image/load/rgba.png

# --- usage --------------------------------------------------------------
run help --help
check "--help exits 0 and shows the usage" test "$rc" = 0 -a -n "$(grep -l 'usage: dinoscope preprocess' "$TMP/help.out")"
run noout "$HE"
check "a missing --out is a usage error (status 2)" test "$rc" = 2
run badopt --bogus --out "$TMP/x" "$HE"
check "an unknown option is a usage error (status 2)" test "$rc" = 2
run badsize --size -4 --out "$TMP/x" "$HE"
check "a negative --size is a usage error (status 2)" test "$rc" = 2
run badnorm --stain-norm reinhard --out "$TMP/x" "$HE"
check "an unknown --stain-norm is a usage error (status 2)" test "$rc" = 2

# --- one image, default size ---------------------------------------------
run one --stain-norm clahe --out "$TMP/one" "$HE"
check "one image: status 0" test "$rc" = 0
check "one image: writes <stem>.png" test -f "$TMP/one/pipeline_he224_in.png"
check "one image: the output is 518x518" test "$(png_size "$TMP/one/pipeline_he224_in.png")" = 518x518
check "one image: nothing else is left in the folder" test "$(ls -A "$TMP/one" | wc -l)" = 1
if /usr/bin/python3 -c "import PIL, numpy" 2>/dev/null; then
    /usr/bin/python3 - "$TMP/one/pipeline_he224_in.png" "$FIX/image/pipeline_he224_clahe_518.png" <<'EOF'
import sys
import numpy as np
from PIL import Image
a = np.asarray(Image.open(sys.argv[1]).convert("RGB")).astype(int)
b = np.asarray(Image.open(sys.argv[2]).convert("RGB")).astype(int)
d = np.abs(a - b)
print("     CLI output vs OpenCV+torchvision reference: max diff %d, %d of %d values differ" % (d.max(), (d > 0).sum(), d.size))
sys.exit(0 if d.max() <= 2 and (d > 1).mean() <= 0.001 else 1)
EOF
    check "one image: pixels equal the OpenCV CLAHE + torchvision Resize reference (<= 1 level on 99.9%, max 2)" test $? = 0
fi

# --- sizes, 16-bit, alpha, side by side -------------------------------------
run keep --size 0 --out "$TMP/keep" "$GREY16" "$RGBA"
check "--size 0 keeps each image's size" test "$(png_size "$TMP/keep/grey16.png") $(png_size "$TMP/keep/rgba.png")" = "40x30 24x20"
run sbs --size 100 --side-by-side --out "$TMP/sbs" "$HE" "$GREY16"
check "--side-by-side: status 0" test "$rc" = 0
check "--side-by-side: a square 224 image at size 100 gives 200x100 (original|prepared)" test "$(png_size "$TMP/sbs/pipeline_he224_in.png")" = 200x100
check "--side-by-side: a 40x30 image at size 100 gives 133x100 + 100 = 233x100" test "$(png_size "$TMP/sbs/grey16.png")" = 233x100

# --- all or nothing -----------------------------------------------------------
printf 'not an image\n' >"$TMP/notes.png"
run bad1 --out "$TMP/allornothing" "$HE" "$TMP/notes.png" "$GREY16"
check "a bad file among good ones: status 1" test "$rc" = 1
check "the error is one line naming the file and the reason" test "$(wc -l <"$TMP/bad1.err")" = 1 -a -n "$(grep -F "$TMP/notes.png" "$TMP/bad1.err" | grep 'not an image')"
check "and nothing was written" empty_dir "$TMP/allornothing"
head -c 20000 "$HE" >"$TMP/truncated.png"
run bad2 --out "$TMP/allornothing2" "$HE" "$GREY16" "$TMP/truncated.png"
check "a truncated PNG (good header, found while decoding): status 1" test "$rc" = 1
check "it is named in one line as truncated or corrupt" test "$(wc -l <"$TMP/bad2.err")" = 1 -a -n "$(grep -F "$TMP/truncated.png" "$TMP/bad2.err" | grep 'truncated or corrupt')"
check "and no output (no part files either) is left for the images before it" empty_dir "$TMP/allornothing2"
run missing --out "$TMP/missing" "$TMP/nope.png"
check "a missing file: status 1, named in the error" test "$rc" = 1 -a -n "$(grep -F "$TMP/nope.png" "$TMP/missing.err" | grep 'no such file')"
run bomb --out "$TMP/bomb" "$FIX/image/load/bomb.png"
check "a decompression bomb is refused from its header" test "$rc" = 1 -a -n "$(grep 'exceeds the limit' "$TMP/bomb.err")"
run limit --max-pixels 500 --out "$TMP/limit" "$HE"
check "--max-pixels lowers the limit" test "$rc" = 1 -a -n "$(grep 'exceeds the limit of 500' "$TMP/limit.err")"

# --- --skip-bad ---------------------------------------------------------------
run skip --skip-bad --size 64 --out "$TMP/skip" "$HE" "$TMP/notes.png" "$GREY16" "$TMP/truncated.png" "$TMP/nope.png"
check "--skip-bad: status 3 when inputs were skipped" test "$rc" = 3
check "--skip-bad: the good images are written" test -f "$TMP/skip/pipeline_he224_in.png" -a -f "$TMP/skip/grey16.png"
check "--skip-bad: only those" test "$(ls -A "$TMP/skip" | wc -l)" = 2
check "--skip-bad: every skipped file is listed at the end" \
    test -n "$(sed -n '/skipped 3 bad inputs/,$p' "$TMP/skip.err" | grep -F "$TMP/notes.png")" -a \
    -n "$(sed -n '/skipped 3 bad inputs/,$p' "$TMP/skip.err" | grep -F "$TMP/truncated.png")" -a \
    -n "$(sed -n '/skipped 3 bad inputs/,$p' "$TMP/skip.err" | grep -F "$TMP/nope.png")"
run skipok --skip-bad --size 64 --out "$TMP/skipok" "$HE"
check "--skip-bad with nothing to skip: status 0" test "$rc" = 0

# --- folders and CSVs -----------------------------------------------------------
mkdir -p "$TMP/in/sub" "$TMP/in/a" "$TMP/in/b"
cp "$HE" "$TMP/in/he.png"
cp "$GREY16" "$TMP/in/sub/g.png"
cp "$RGBA" "$TMP/in/readme.txt"
run dir --size 32 --out "$TMP/dir" "$TMP/in"
check "a folder: its images (not sub-folders, not other files)" test "$rc" = 0 -a "$(ls -A "$TMP/dir")" = he.png
run rec --size 32 --recursive --out "$TMP/rec" "$TMP/in"
check "--recursive adds sub-folders" test "$rc" = 0 -a "$(ls -A "$TMP/rec" | tr '\n' ' ')" = "g.png he.png "
printf 'filename,split,label,maskfile\nhe.png,train,0,\nsub/g.png,test,1,\n' >"$TMP/in/labels.csv"
run csv --size 32 --out "$TMP/csv" "$TMP/in/labels.csv"
check "a labels.csv: its files, relative to the CSV" test "$rc" = 0 -a "$(ls -A "$TMP/csv" | tr '\n' ' ')" = "g.png he.png "
cp "$HE" "$TMP/in/a/x.png"
cp "$GREY16" "$TMP/in/b/x.png"
run clash --size 32 --out "$TMP/clash" "$TMP/in/a/x.png" "$TMP/in/b/x.png"
check "two inputs with the same output name: status 1, both named, nothing written" \
    test "$rc" = 1 -a -n "$(grep -F "$TMP/in/a/x.png" "$TMP/clash.err" | grep -F "$TMP/in/b/x.png")" -a ! -e "$TMP/clash/x.png"
: >"$TMP/afile"
run outfile --out "$TMP/afile" "$HE"
check "--out naming an existing file: status 1" test "$rc" = 1

finish
