#!/usr/bin/env bash
# Submits the fit array and the merge after it:
#   workflow/slurm/submit.sh N LABELS BACKBONE OUT [sbatch options...]
# e.g. workflow/slurm/submit.sh 8 data/labels.csv vitb14.safetensors out --partition=cpu
# Prints the two job ids. FIT_ARGS and DINOSCOPE pass through the environment.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 N LABELS BACKBONE OUT [sbatch options...]" >&2; exit 2; }
N=$1 LABELS=$2 BACKBONE=$3 OUT=$4; shift 4
here=$(cd "$(dirname "$0")" && pwd)
export LABELS BACKBONE OUT SHARDS=$N
fit=$(sbatch --parsable --array="0-$((N - 1))" --export=ALL "$@" "$here/fit_array.sbatch")
merge=$(sbatch --parsable --dependency="afterok:${fit%%;*}" --export=ALL "$@" "$here/merge.sbatch")
echo "fit array: $fit, merge: $merge"
