#!/usr/bin/env bash
# cmake --install into a temporary prefix, then use only what it installed:
#   - the shared library exports exactly the API of include/dinoscope/ (nm -D);
#   - examples/fit_and_score.c builds with `pkg-config --cflags --libs
#     dinoscope` and with find_package(dinoscope), links the installed .so,
#     and on the demo data (ds_make_demo_data) prints the score the CLI gives;
#   - a man page per command, rendered by groff without warnings, listing
#     every option of the command's --help; the bash completion offers them.
# env: DS_BUILD (build dir), DS_TMP, DS_SANITIZE=ON skips (an ASan library
# cannot be loaded by an uninstrumented program).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DS_SANITIZE:-OFF}" = ON ]; then echo "install_check: skipped in the sanitizer build"; exit 77; fi
B=${DS_BUILD:?}
T=${DS_TMP:-/tmp}/install_check
rm -rf "$T" && mkdir -p "$T"
P=$T/prefix
fail() { echo "install_check: FAIL: $*" >&2; exit 1; }

cmake --install "$B" --prefix "$P" > "$T/install.log"
for f in bin/dinoscope lib/libdinoscope.a include/dinoscope/dinoscope.h include/dinoscope/model.h \
         lib/pkgconfig/dinoscope.pc lib/cmake/dinoscope/dinoscopeConfig.cmake \
         share/man/man1/dinoscope.1 share/bash-completion/completions/dinoscope; do
  [ -e "$P/$f" ] || fail "not installed: $f"
done
so=$(readlink -f "$P/lib/libdinoscope.so")
soname=$(objdump -p "$so" | awk '/SONAME/ {print $2}')
[ "$soname" = libdinoscope.so.0 ] || fail "SONAME is '$soname', expected libdinoscope.so.0"
[[ "$so" == */libdinoscope.so.0.*.* ]] || fail "the library file $so carries no version"
echo "install_check: installed into $P; $(basename "$so"), SONAME $soname"

# exports == declarations (comments stripped by the preprocessor)
printf '#include <dinoscope/%s>\n' $(cd include/dinoscope && ls *.h) > "$T/all.c"
cc -E -P -I"$P/include" "$T/all.c" > "$T/all.i"
grep -oE '\bds_[a-z0-9_]+ *\(' "$T/all.i" | tr -d ' (' | sort -u > "$T/declared"
grep -oE 'extern const [a-z0-9_ ]+ (DS_[A-Z0-9_]+)' "$T/all.i" | awk '{print $NF}' >> "$T/declared"
sort -u -o "$T/declared" "$T/declared"
# OpenMP's named critical sections are global locks by design (libgomp)
nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^\.gomp_critical_user_' | sort -u > "$T/exported"
if ! diff "$T/declared" "$T/exported" > "$T/exports.diff"; then
  cat "$T/exports.diff" >&2
  fail "exported symbols differ from the declarations in include/dinoscope/ (< declared only, > exported only)"
fi
echo "install_check: $(wc -l < "$T/exported") symbols exported, exactly the declared ones"

# the example, with pkg-config against the installed tree
export PKG_CONFIG_PATH=$P/lib/pkgconfig
cc -std=c11 -Wall -Wextra -Werror examples/fit_and_score.c $(pkg-config --cflags --libs dinoscope) \
   -Wl,-rpath,"$(pkg-config --variable=libdir dinoscope)" -o "$T/fit_and_score"
loaded=$(ldd "$T/fit_and_score" | awk '/libdinoscope/ {print $3}')
[ "$(readlink -f "$loaded")" = "$so" ] || fail "the example loads '$loaded', not the installed $so"
"$B/ds_make_demo_data" "$T/data" > /dev/null
W=tests/fixtures/vit/plain.safetensors
IMG=$T/data/test/anomaly/blob_000.png
out=$("$T/fit_and_score" "$W" "$T/data/train/normal" "$IMG" 112)
echo "install_check: example: $out"
lib_score=$(echo "$out" | awk '{print $3}')
# the same fit and score through the installed CLI
"$P/bin/dinoscope" fit --backbone "$W" --size 112 --scorer patchbank --out "$T/m.dsm" "$T/data/train/normal" 2> /dev/null
cli_score=$("$P/bin/dinoscope" score --model "$T/m.dsm" "$IMG" 2> /dev/null | awk -F, 'NR == 2 {print $2}')
awk -v a="$lib_score" -v b="$cli_score" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-6 * (b < 0 ? -b : b) + 1e-6) }' ||
  fail "example score $lib_score differs from the CLI's $cli_score"
echo "install_check: example score $lib_score = CLI score $cli_score"

# the example, with the CMake package
cmake -S examples -B "$T/example-cmake" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=Release > "$T/cmake.log"
cmake --build "$T/example-cmake" > "$T/cmake-build.log"
out2=$("$T/example-cmake/fit_and_score" "$W" "$T/data/train/normal" "$IMG" 112)
[ "$out2" = "$out" ] || fail "the find_package build prints '$out2', the pkg-config build '$out'"
echo "install_check: find_package(dinoscope) build gives the same output"

# man pages and completion
comp=$P/share/bash-completion/completions/dinoscope
cmds=$("$P/bin/dinoscope" --help | awk '/^  [a-z]+  / {print $1}')
[ -n "$cmds" ] || fail "no commands in dinoscope --help"
for c in $cmds; do
  page=$P/share/man/man1/dinoscope-$c.1
  [ -f "$page" ] || fail "no man page for $c"
  if command -v groff > /dev/null; then
    warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || true
    [ -z "$warn" ] || fail "groff warns on dinoscope-$c.1: $warn"
  fi
  text=$(sed 's/\\-/-/g' "$page")
  offered=$(bash -c "source '$comp'; COMP_WORDS=(dinoscope $c -); COMP_CWORD=2; _dinoscope; echo \"\${COMPREPLY[*]}\"")
  # the option lines of --help: "  -t, --threads T   help"
  for opt in $("$P/bin/dinoscope" "$c" --help | sed -nE 's/^  (-[-a-z0-9]+(, -[-a-z0-9]+)*).*/\1/p' | tr ',' ' '); do
    grep -qF -- "$opt" <<< "$text" || fail "dinoscope-$c.1 lacks $opt"
    grep -qw -- "$opt" <<< "$offered" || fail "bash completion of '$c' lacks $opt"
  done
done
command -v groff > /dev/null || echo "install_check: groff not installed: man pages not rendered"
echo "install_check: man pages and completion cover every option of: $(echo $cmds)"
echo "install_check: all passed"
