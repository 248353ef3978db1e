#!/usr/bin/env bash
# A model larger than one process's memory cap trains when spread over enough
# shard servers (issue 17, "Memory").
#   bench/e2e_ps_memory.sh <build dir> [items] [factors] [cap] [shard counts]
# A synthetic catalogue of <items> items (default 1,000,000) at k = <factors>
# (128): the item rows take items x (k + 1) x 4 bytes (516 MB by default),
# twice that at the shard servers under bsp (the summed gradients of a step).
# Every run sets cluster.memory_limit = <cap> (768MiB) and runs under mpirun
# with 1 driver, S shard servers and WORKERS workers (2), for each S of
# <shard counts> ("1 2 4"): S = 1 is refused by the shard server before it
# allocates its rows, with the reason; larger S train. Prints each run's
# outcome, wall seconds, test RMSE and every rank's peak RSS (the summary's
# "memory" list: getrusage's ru_maxrss of each process, the driver measured
# after writing the model files).
# USERS (20000), RATINGS (1000000) and EPOCHS (2) size the rest.
# ENFORCE=1 also starts every rank under `prlimit --data=<cap>` (RLIMIT_DATA),
# so the kernel refuses any allocation beyond the cap, not only fedrec's
# estimate (<cap> then must be bytes or end in KiB, MiB or GiB).
set -uo pipefail
build=${1:?usage: $0 <build dir> [items] [factors] [cap] [shard counts]}
items=${2:-1000000}
factors=${3:-128}
cap=${4:-768MiB}
shard_counts=${5:-1 2 4}
workers=${WORKERS:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/fedrec-psmem.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

args=(--set federation.mode=ps --set federation.sites="$workers"
      --set data.synthetic.users="${USERS:-20000}" --set data.synthetic.items="$items"
      --set data.synthetic.ratings="${RATINGS:-1000000}" --set data.test_fraction=0.02
      --set model.factors="$factors" --set train.epochs="${EPOCHS:-2}" --set eval.ranking=false
      --set cluster.memory_limit="$cap" --set output.progress=false)
echo "catalogue: $items items x $((factors + 1)) floats = $((items * (factors + 1) * 4 / 1000000)) MB" \
     "of item rows; cluster.memory_limit = $cap; $workers workers"
launch=("$build/fedrec")
if [ "${ENFORCE:-0}" = 1 ]; then
  bytes=$(python3 -c '
import re, sys
m = re.fullmatch(r"([0-9]+)\s*(|KiB|MiB|GiB)", sys.argv[1])
print(int(m.group(1)) * {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)])' "$cap") ||
    { echo "ENFORCE=1: the cap must be bytes or end in KiB, MiB or GiB, found $cap" >&2; exit 2; }
  launch=(prlimit --data="$bytes" "$build/fedrec")
  echo "every rank under prlimit --data=$bytes (RLIMIT_DATA)"
fi
for s in $shard_counts; do
  np=$((1 + s + workers))
  start=$(date +%s.%N)
  out=$(mpirun --oversubscribe -np "$np" "${launch[@]}" run "${args[@]}" \
        --set cluster.shard_servers="$s" --force --set output.dir="$work/s$s" 2>"$work/err$s")
  code=$?
  seconds=$(echo "$(date +%s.%N) - $start" | bc -l)
  printf '\n== %d shard server(s), -np %d: exit %d, %.1f s\n' "$s" "$np" "$code" "$seconds"
  if [ "$code" -ne 0 ]; then
    grep -m 1 "^fedrec: " "$work/err$s"
    continue
  fi
  tail -n 1 <<<"$out" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
print("test RMSE %.4f, model_sha256 %s" % (s["test_rmse"], s["model_sha256"][:16]))
print("%-5s %-13s %14s %16s" % ("rank", "role", "peak RSS (MB)", "model slice (MB)"))
for r in s["memory"]:
    role = r["role"] + ("" if r["role"] == "driver" else " %d" % r["index"])
    slice_mb = "%.1f" % r["slice_mb"] if "slice_mb" in r else "-"
    print("%-5d %-13s %14.1f %16s" % (r["rank"], role, r["peak_rss_mb"], slice_mb))
'
done
