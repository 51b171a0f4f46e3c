#!/usr/bin/env bash
# Valgrind memcheck over the CLI end-to-end tests that do not need ../shared
# (tests/cli_eval.sh, cli_preprocess.sh, cli_slide.sh): each test runs with
# DS_CLI pointing at a wrapper that starts the real binary under memcheck,
# one log per process. Fails if any process has an invalid read/write, a use
# of uninitialised memory, or a definite leak (--errors-for-leak-kinds=
# definite; "still reachable" globals of libvips/glib/OpenMP are not errors).
#   bash tests/valgrind.sh [BUILD_DIR] [tests...]     (default: build, all three)
# A Release build (-O3, no sanitizer) is what it is meant for: build-asan
# binaries cannot run under valgrind. Memcheck runs the CLI ~30-50x slower:
# measured on the shared 2-core machine, cli_slide 124 s, cli_preprocess
# 396 s, cli_eval over 18 minutes (its fit under memcheck), so CI does not
# run it (the ASan pass covers the same tests); run it by hand before a
# release or after touching memory handling, e.g. the fast two first:
#   bash tests/valgrind.sh build cli_slide cli_preprocess
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(cli_preprocess cli_slide cli_eval)
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not installed (apt-get install valgrind)"; exit 77; }
cli=$PWD/$build/dinoscope
[ -x "$cli" ] || { echo "valgrind.sh: no $cli (build first)"; exit 1; }
work=$PWD/$build/valgrind
rm -rf "$work" && mkdir -p "$work/bin" "$work/logs"
ln -s "$PWD/$build/ds_make_demo_data" "$work/bin/ds_make_demo_data"
cat >"$work/bin/dinoscope" <<WRAP
#!/usr/bin/env bash
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \\
    --show-leak-kinds=definite --track-origins=no --num-callers=30 --suppressions=$PWD/tests/valgrind.supp \\
    --log-file=$work/logs/%p.log "$cli" "\$@"
WRAP
chmod +x "$work/bin/dinoscope"
status=0
for t in "${tests[@]}"; do
    start=$(date +%s)
    DS_CLI=$work/bin/dinoscope DS_FIXTURES=$PWD/tests/fixtures DS_TMP=$work/tmp OMP_WAIT_POLICY=PASSIVE \
        bash "tests/$t.sh" >"$work/$t.out" 2>&1
    rc=$?
    echo "$t: exit $rc in $(( $(date +%s) - start )) s ($(grep -c '^ok' "$work/$t.out") ok, $(grep -c '^FAIL' "$work/$t.out") FAIL)"
    [ $rc -eq 0 ] || [ $rc -eq 77 ] || { status=1; grep '^FAIL' "$work/$t.out" | head -5; }
done
n=$(ls "$work/logs" | wc -l)
bad=$(grep -l "ERROR SUMMARY: [1-9]" "$work/logs"/*.log 2>/dev/null | wc -l)
echo "valgrind: $n processes, $bad with errors (logs in $work/logs)"
if [ "$bad" -gt 0 ]; then
    status=1
    for f in $(grep -l "ERROR SUMMARY: [1-9]" "$work/logs"/*.log | head -3); do
        echo "== $f"; grep -A12 -m3 -E "Invalid|uninitialised|definitely lost" "$f" | head -40
    done
fi
exit $status
