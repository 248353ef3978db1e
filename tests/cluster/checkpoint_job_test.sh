#!/usr/bin/env bash
# Checkpoint and resume of real jobs (registered with CTest in
# CMakeLists.txt, which sets FEDREC, MPIEXEC, MPIEXEC_NUMPROC_FLAG,
# MPIEXEC_PREFLAGS and the Open MPI root-permission variables).
#
#   checkpoint_job_test.sh mpi-kill   mpirun ... fedrec run with checkpoint.every = 1; the
#                                     coordinator (rank 0) is SIGKILLed once a checkpoint
#                                     exists; mpirun ... fedrec run --resume ends with the
#                                     model_sha256 of the run that was never interrupted
#   checkpoint_job_test.sh sim-term   fedrec sim gets SIGTERM once a checkpoint exists: it
#                                     writes its summary, model and checkpoint and exits 143;
#                                     fedrec sim --resume ends with the uninterrupted model
#   checkpoint_job_test.sh mpi-kill two-tier  the same with 2 sites of 3 ranks each (leader,
#                                     shard server, worker: a site's state is its leader's)
#   checkpoint_job_test.sh mpi-kill ps  the same for federation.mode = ps (1 driver, 2 shard
#                                     servers, 3 workers, bsp, a checkpoint every epoch): the
#                                     driver is SIGKILLed once an epoch is committed; the
#                                     resumed job ends with the uninterrupted model
#   checkpoint_job_test.sh sim-term ps  the same for federation.mode = ps: the driver stops
#                                     the job after its next checkpoint, says how to resume
#                                     and exits 143; resumed, the model of the whole run
#   checkpoint_job_test.sh mismatch   --resume with another configuration is refused naming
#                                     the configuration hash
set -uo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/fedrec-ckpt.XXXXXX")
cleanup() {
  [ -n "${job:-}" ] && kill -9 "$job" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mpirun() { "$MPIEXEC" $MPIEXEC_NUMPROC_FLAG "$1" --oversubscribe $MPIEXEC_PREFLAGS "${@:2}"; }
sha() { tail -n 1 | sed -n 's/.*"model_sha256":"\([0-9a-f]*\)".*/\1/p'; }

args=(--set data.synthetic.users=300 --set data.synthetic.items=400
      --set data.synthetic.ratings=20000 --set federation.rounds=12 --set eval.ranking=false
      --set sim.compare_centralized=false --set federation.sites=3 --set model.factors=8
      --set security.aggregation=none --set checkpoint.every=1)

# Waits (at most 60 s) until $1 exists.
wait_for() {
  for _ in $(seq 600); do
    [ -e "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

# The pid of rank 0 among the fedrec processes whose environment names $1.
rank0_of() {
  for pid in $(pgrep -x fedrec); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0" &&
       tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$1"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

case "$1" in
  mpi-kill)
    # Rounds (epochs) enough that the kill usually comes mid-run.
    np=4 steps=40 file=coordinator.ckpt unit=round
    args+=(--set federation.rounds=$steps)
    case "${2:-}" in
      two-tier)  # 2 sites of 3 ranks each (leader, shard server, worker) after the coordinator
        np=7
        args+=(--set federation.sites=2 --set cluster.site_workers=1
               --set cluster.site_shard_servers=1)
        ;;
      ps)  # 1 driver, 2 shard servers, 3 workers; a checkpoint every epoch
        np=6 file=ps-driver.ckpt unit=epoch
        args=(--set data.synthetic.users=3000 --set data.synthetic.items=2000
              --set data.synthetic.ratings=120000 --set eval.ranking=false --set model.factors=16
              --set federation.mode=ps --set cluster.shard_servers=2 --set federation.sites=3
              --set train.epochs=$steps --set checkpoint.every=1)
        ;;
    esac
    whole=$(mpirun $np "$FEDREC" run "${args[@]}" --force --set output.dir="$work/whole" | sha)
    [ -n "$whole" ] || fail "the uninterrupted run printed no model_sha256"
    mpirun $np "$FEDREC" run "${args[@]}" --force --set output.dir="$work/killed" >"$work/killed.log" 2>&1 &
    job=$!
    wait_for "$work/killed/checkpoint/$file" || fail "no checkpoint appeared"
    pid=$(rank0_of "$work/killed") || pid=""
    if [ -n "$pid" ]; then
      kill -9 "$pid"
      echo "killed rank 0 (pid $pid)"
    else
      echo "rank 0 had already finished"
    fi
    wait "$job"
    job=""
    at=$(grep -ao "^$unit [0-9]*" "$work/killed/checkpoint/$file" | head -1)
    echo "checkpoint after the kill: $at"
    resumed=$(mpirun $np "$FEDREC" run "${args[@]}" --force --set output.dir="$work/resumed" \
                --resume "$work/killed/checkpoint" | sha)
    [ -n "$resumed" ] || fail "the resumed run printed no model_sha256"
    [ "$resumed" = "$whole" ] || fail "resumed $resumed != uninterrupted $whole"
    lines=$(wc -l < "$work/resumed/metrics.jsonl")
    [ "$lines" -eq $steps ] || fail "the resumed metrics.jsonl has $lines ${unit}s, expected $steps"
    echo "mpi-kill ${2:-}: resumed from $at to $resumed"
    ;;
  sim-term)
    file=coordinator.ckpt
    args+=(--set federation.rounds=200)  # long enough to be stopped mid-run
    if [ "${2:-}" = ps ]; then  # stops after its next checkpoint; no model mid-epoch
      file=ps-driver.ckpt
      args=(--set data.synthetic.users=3000 --set data.synthetic.items=2000
            --set data.synthetic.ratings=300000 --set eval.ranking=false --set model.factors=16
            --set federation.mode=ps --set cluster.shard_servers=2 --set federation.sites=3
            --set train.epochs=60 --set checkpoint.every=2)
    fi
    whole=$("$FEDREC" sim "${args[@]}" --force --set output.dir="$work/whole" | sha)
    [ -n "$whole" ] || fail "the uninterrupted run printed no model_sha256"
    "$FEDREC" sim "${args[@]}" --force --set output.dir="$work/stopped" >"$work/stopped.out" 2>&1 &
    job=$!
    wait_for "$work/stopped/checkpoint/$file" || fail "no checkpoint appeared"
    kill -TERM "$job"
    wait "$job"
    code=$?
    job=""
    if grep -q '"stopped":true' "$work/stopped.out"; then
      [ $code -eq 143 ] || fail "a run stopped by SIGTERM should exit 143, exited $code"
      [ -s "$work/stopped/summary.json" ] || fail "the stopped run wrote no summary.json"
      if [ "${2:-}" = ps ]; then
        grep -q "stopped after the checkpoint of epoch [0-9]*; the same command with --resume" \
          "$work/stopped.out" || fail "the stopped ps run did not say how to resume: $(tail -3 "$work/stopped.out")"
      else
        [ -s "$work/stopped/model.tsv" ] || fail "the stopped run wrote no model.tsv"
      fi
    else
      # The signal came after the last round: the run is whole; its exit is 0,
      # or 143 when the signal arrived before the process ended.
      [ $code -eq 0 ] || [ $code -eq 143 ] || fail "exit $code: $(tail -3 "$work/stopped.out")"
      echo "the run had finished before the signal"
    fi
    resumed=$("$FEDREC" sim "${args[@]}" --force --set output.dir="$work/resumed" \
                --resume "$work/stopped/checkpoint" | sha)
    [ "$resumed" = "$whole" ] || fail "resumed $resumed != uninterrupted $whole"
    echo "sim-term ${2:-}: exit $code, resumed to $resumed"
    ;;
  mismatch)
    "$FEDREC" sim "${args[@]}" --set federation.rounds=2 --force --set output.dir="$work/a" >/dev/null ||
      fail "the first run failed"
    out=$("$FEDREC" sim "${args[@]}" --set federation.rounds=2 --set train.lr=0.05 \
            --force --set output.dir="$work/b" --resume "$work/a/checkpoint" 2>&1)
    code=$?
    [ $code -ne 0 ] || fail "resuming another configuration should fail"
    grep -q "was written by another run and was not loaded: configuration hash" <<<"$out" ||
      fail "unexpected message: $out"
    echo "mismatch: refused"
    ;;
  *)
    fail "unknown case $1"
    ;;
esac
