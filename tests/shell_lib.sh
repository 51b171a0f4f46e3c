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
# same_scores A.csv B.csv TOL: two score tables with the same rows and
# columns, numbers within TOL (relative; absolute below 1), the last column
# (ms) left out. Prints the first differences; status 0 if the same.
same_scores() {
    awk -F, -v tol="$3" 'NR == FNR { a[FNR] = $0; n = FNR; next }
        { if (!(FNR in a)) { bad = 1; exit } split(a[FNR], x, ","); if (length(x) != NF) { print "columns differ at line " FNR; bad = 1; exit }
          for (i = 1; i < NF; i++) if (x[i] != $i) { d = x[i] - $i; if (d < 0) d = -d; m = ($i < 0 ? -$i : $i);
              if (x[i] + 0 != x[i] || d > tol * (m > 1 ? m : 1)) { print "differ: line " FNR " col " i ": " x[i] " vs " $i; bad = 1 } }
          m2 = FNR }
        END { if (m2 != n) { print "row counts differ: " n " vs " m2; bad = 1 } exit bad }' "$1" "$2"
}
