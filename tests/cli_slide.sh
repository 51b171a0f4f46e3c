#!/usr/bin/env bash
# `dinoscope slide` usage errors (status 2, before any file is opened) and a
# missing model (status 1). The end-to-end runs on real slides (heatmaps,
# GeoJSON, kill + resume, one error per bad slide) are in tests/test_wsi.c.
# Env (set by CTest): DS_CLI, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_slide
run() { # run NAME args... : stdout/stderr to files, status in $rc
    local p=$1; shift
    "$CLI" slide "$@" >"$TMP/$p.out" 2>"$TMP/$p.err"
    rc=$?
}
lines() { wc -l <"$1" | tr -d ' '; }

run help --help
check "--help exits 0 and shows the usage" test "$rc" = 0 -a -n "$(grep -l 'usage: dinoscope slide' "$TMP/help.out")"
run noout --model m.dsm s.svs
check "a missing --out is a usage error (status 2)" test "$rc" = 2
run noslide --model m.dsm --out "$TMP/o"
check "no slide is a usage error (status 2)" test "$rc" = 2
run both --model m.dsm --out "$TMP/o" --level 1 --mpp 0.5 s.svs
check "--level with --mpp is a usage error (status 2), one line" test "$rc" = 2 -a "$(lines "$TMP/both.err")" = 1
run tissue --model m.dsm --out "$TMP/o" --tissue maybe s.svs
check "an unknown --tissue is a usage error (status 2)" test "$rc" = 2
run tile --model m.dsm --out "$TMP/o" --tile 8 s.svs
check "a --tile below 32 is a usage error (status 2)" test "$rc" = 2
run overlap --model m.dsm --out "$TMP/o" --overlap 1 s.svs
check "--overlap 1 is a usage error (status 2)" test "$rc" = 2
run step --model m.dsm --out "$TMP/o" --tile 256 --map-step 512 s.svs
check "a --map-step above the tile is a usage error (status 2)" test "$rc" = 2
run scorer --model m.dsm --out "$TMP/o" --scorer best s.svs
check "an unknown --scorer is a usage error (status 2)" test "$rc" = 2
run nomodel --model "$TMP/none.dsm" --out "$TMP/o" s.svs
check "a missing model is one error line naming it (status 1)" \
    test "$rc" = 1 -a "$(lines "$TMP/nomodel.err")" = 1 -a -n "$(grep -l 'none.dsm' "$TMP/nomodel.err")"
check "nothing was written for it" test ! -e "$TMP/o"

finish
