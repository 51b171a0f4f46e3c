#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, started by this test: a munge key
# and slurm.conf generated in a temporary folder, munged, slurmctld and
# slurmd run in the foreground as children of the test (ports chosen at
# random), then workflow/slurm/submit.sh submits the fit array (3 parts) and
# the merge after it, and the Snakemake workflow runs through the Slurm
# profile (workflow/profiles/slurm). Checks the outputs and that the merged
# model scores like a plain fit (no held-out images, whole bank: exactly
# the plain fit's training set; 1e-4). When the daemons cannot start here
# (not installed, no root, ports taken, a container without the needed
# privileges) it skips (77) saying why. Debian packages slurm-wlm, munge
# (.ci/run installs them). Env (set by CTest): DS_CLI, DS_FIXTURES, DS_SRC, DS_TMP.
skip() { echo "SKIP: $*"; exit 77; }
for b in munged slurmctld slurmd sbatch squeue sinfo; do
    command -v $b >/dev/null || skip "$b is not installed (Debian packages slurm-wlm, munge)"
done
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start jobs (this test runs as $(id -un))"
. "$(dirname "$0")/shell_lib.sh" cli_slurm demo
SRC=${DS_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
mkdir -p "$TMP"/{munge,state,spool,log,run} || exit 1
chmod 700 "$TMP/munge"
"$MAKE_DATA" "$TMP/data" >/dev/null || exit 1

pids=()
cleanup() { # only the daemons this test started, by their ids
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

# munge: a fresh key, its own socket
dd if=/dev/urandom of="$TMP/munge/munge.key" bs=1024 count=1 2>/dev/null && chmod 600 "$TMP/munge/munge.key"
SOCK=$TMP/munge/munge.sock
munged -f -F -S "$SOCK" --key-file="$TMP/munge/munge.key" --log-file="$TMP/log/munged.log" \
    --pid-file="$TMP/munge/munged.pid" --seed-file="$TMP/munge/seed" >"$TMP/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || skip "munged did not start: $(tail -2 "$TMP/log/munged.out" | tr '\n' ' ')"

H=$(hostname -s)
PORT=$((20000 + RANDOM % 20000))
cat >"$TMP/slurm.conf" <<CONF
ClusterName=dstest
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/run/slurmctld.pid
SlurmdPidFile=$TMP/run/slurmd.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$TMP/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$TMP/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$TMP/log/slurmd.out" 2>&1 &
pids+=($!)
up=0
for _ in $(seq 60); do
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix)' && { up=1; break; }
    sleep 0.5
done
[ $up -eq 1 ] || skip "the Slurm daemons did not come up: $(tail -n 3 "$TMP"/log/slurm*.out "$TMP"/log/slurm*.log 2>/dev/null | tr '\n' ' ' | cut -c1-400)"
echo "slurm: controller on port $PORT, node $H up"

wait_jobs() { # wait_jobs SECONDS: until the queue is empty
    for _ in $(seq $(($1 * 2))); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && return 0; sleep 0.5; done
    squeue; return 1
}
ARGS="--size 112 --scorer all --gaussian-per-patch --val-split 0 --coreset 1"
"$CLI" fit --backbone "$VIT" $ARGS --out "$TMP/plain.dsm" "$TMP/data/labels.csv" 2>/dev/null
"$CLI" score --model "$TMP/plain.dsm" --out "$TMP/plain.csv" "$TMP/data/labels.csv" 2>/dev/null

# 1. the plain sbatch array + merge
cd "$TMP" || exit 1
ids=$(DINOSCOPE=$CLI FIT_ARGS="$ARGS" bash "$SRC/workflow/slurm/submit.sh" 3 "$TMP/data/labels.csv" "$VIT" "$TMP/out" \
      --mem=300M --cpus-per-task=1 --time=10 2>&1)
check "submit.sh submits the fit array and the merge ($ids)" bash -c "echo '$ids' | grep -q 'fit array: [0-9]'"
check "the jobs finish" wait_jobs 300
for i in 0 1 2; do check "array task $i wrote its part" test -s "$TMP/out/parts/part$i.dsm"; done
check "the merge job wrote the model" test -s "$TMP/out/model.dsm"
[ -s "$TMP/out/model.dsm" ] || tail -n 5 "$TMP"/ds-*.out
"$CLI" score --model "$TMP/out/model.dsm" --out "$TMP/array.csv" "$TMP/data/labels.csv" 2>/dev/null
check "the merged model scores like the plain fit (1e-4)" same_scores "$TMP/plain.csv" "$TMP/array.csv" 1e-4

# 2. Snakemake through the Slurm profile (resources scaled down to this node)
if command -v snakemake >/dev/null; then
    RULES="fit_shard merge score_shard merge_scores eval"
    set_res=() set_thr=()
    for r in $RULES; do set_res+=("$r:mem_mb=300" "$r:runtime=10"); set_thr+=("$r=1"); done
    snakemake -s "$SRC/workflow/Snakefile" --profile "$SRC/workflow/profiles/slurm" --directory "$TMP/snk" \
        --set-resources "${set_res[@]}" --set-threads "${set_thr[@]}" --latency-wait 10 \
        --config labels="$TMP/data/labels.csv" backbone="$VIT" dinoscope="$CLI" out="$TMP/snk/out" fit_shards=2 \
        score_shards=2 "fit_args=$ARGS" >"$TMP/snakemake.log" 2>&1
    rc=$?
    check "the Snakemake workflow runs through Slurm with the profile" test $rc -eq 0
    [ $rc -eq 0 ] || tail -n 20 "$TMP/snakemake.log"
    check "...and its jobs went through sbatch" bash -c "ls '$TMP/snk/slurm-logs/' | grep -q fit_shard"
    check "...its scores equal the plain fit's (1e-4)" same_scores "$TMP/plain.csv" "$TMP/snk/out/scores.csv" 1e-4
else
    echo "skip the Snakemake part: snakemake is not installed"
fi
finish
