#!/usr/bin/env bash
# The Snakemake workflow (workflow/Snakefile) run locally with --cores 2 on
# the synthetic demo data and the tiny random DINOv2 of the fixtures: 3 fit
# shards -> merge -> 2 score shards -> merged scores -> eval. With no
# held-out images and the whole bank (--val-split 0 --coreset 1) the parts
# hold exactly a plain fit's training set, so the workflow's scores.csv must
# equal one plain `fit` + one `score` run (1e-4); the Slurm profile must
# parse (a dry run). Needs Debian's snakemake (.ci/run installs it).
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_SRC, DS_TMP. Exit 77 = skipped.
command -v snakemake >/dev/null || { echo "SKIP: snakemake is not installed (Debian package snakemake)"; exit 77; }
. "$(dirname "$0")/shell_lib.sh" cli_snakemake demo
SRC=${DS_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
"$MAKE_DATA" "$TMP/data" >/dev/null || exit 1

ARGS="--size 112 --scorer all --gaussian-per-patch --val-split 0 --coreset 1"
CONFIG=(labels="$TMP/data/labels.csv" backbone="$VIT" dinoscope="$CLI" out="$TMP/out" fit_shards=3 score_shards=2
        "fit_args=$ARGS")
snakemake -s "$SRC/workflow/Snakefile" --cores 2 --directory "$TMP" --config "${CONFIG[@]}" >"$TMP/snakemake.log" 2>&1
rc=$?
check "the workflow runs to the end with --cores 2" test $rc -eq 0
[ $rc -eq 0 ] || tail -30 "$TMP/snakemake.log"
check "it fitted 3 parts" test -s "$TMP/out/parts/part2.dsm"
check "it wrote the merged model, the scores and the report" \
    test -s "$TMP/out/model.dsm" -a -s "$TMP/out/scores.csv" -a -s "$TMP/out/report/report.json"
# shellcheck disable=SC2086
"$CLI" fit --backbone "$VIT" $ARGS --out "$TMP/plain.dsm" "$TMP/data/labels.csv" 2>/dev/null
"$CLI" score --model "$TMP/plain.dsm" --out "$TMP/plain.csv" "$TMP/data/labels.csv" 2>/dev/null
check "the workflow's scores equal one plain fit + score run (1e-4)" same_scores "$TMP/plain.csv" "$TMP/out/scores.csv" 1e-4
check "a second run has nothing to do" bash -c "snakemake -s '$SRC/workflow/Snakefile' --cores 2 --directory '$TMP' \
    --config ${CONFIG[*]@Q} -n 2>&1 | grep -q 'Nothing to be done'"
mkdir -p "$TMP/dry"
check "the Slurm profile parses (dry run of the whole workflow)" bash -c "snakemake -s '$SRC/workflow/Snakefile' \
    --profile '$SRC/workflow/profiles/slurm' --directory '$TMP/dry' --config ${CONFIG[*]@Q} out='$TMP/dry/out' -n \
    > '$TMP/dry.log' 2>&1 && grep -q 'fit_shard' '$TMP/dry.log'"
mkdir -p "$TMP/slides" && touch "$TMP/slides/a.svs" "$TMP/slides/b.ndpi" "$TMP/slides/notes.txt"
snakemake -s "$SRC/workflow/Snakefile" --cores 2 --directory "$TMP" --config "${CONFIG[@]}" slides="$TMP/slides" -n \
    >"$TMP/slides.log" 2>&1
check "with slides=DIR the workflow adds one slide job per slide file (dry run)" \
    test "$(grep -cE '^rule slide:|^localrule slide:' "$TMP/slides.log")" -eq 2
finish
