# Sourced by the shell tests (tests/cli_*.sh): the environment CTest sets,
# the skip rules, a scratch folder and check().
#   . "$(dirname "$0")/shell_lib.sh" NAME [demo]
# NAME: the scratch folder $DS_TMP/NAME (emptied); demo: the test also needs
# the demo-data tool ($MAKE_DATA). Exit 77 = skipped (CTest SKIP_RETURN_CODE).
set -u
CLI=${DS_CLI:?DS_CLI not set}
FIX=${DS_FIXTURES:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fixtures}
TMP=${DS_TMP:-/tmp}/$1
MAKE_DATA=$(dirname "$CLI")/ds_make_demo_data
VIT=$FIX/vit/plain.safetensors
[ -x "$CLI" ] || { echo "SKIP: no CLI binary at $CLI"; exit 77; }
if [ "${2:-}" = demo ]; then
    [ -x "$MAKE_DATA" ] || { echo "SKIP: no demo-data tool at $MAKE_DATA (build target ds_make_demo_data)"; exit 77; }
fi
rm -rf "$TMP" && mkdir -p "$TMP" || exit 1

pass=0 fail=0
check() { # check "sentence" command...
    local descr=$1; shift
    if "$@"; then pass=$((pass + 1)); echo "ok   $descr"; else fail=$((fail + 1)); echo "FAIL $descr"; fi
}
# The last line of a test: the counts, and its status.
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]
}
