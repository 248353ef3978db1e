#!/usr/bin/env bash
# Training under injected dropouts (sim.faults.*), each figure a same-run ratio.
#   bench/e2e_faults.sh <ml-100k dir> [build dir]
#     fedrec sim on ML-100K u1, 10 sites by user, ROUNDS rounds (default 50),
#     security.aggregation = none and secagg, with sim.faults.dropout = 0, 0.1,
#     0.2, 0.4 (a site drops out of a round with that chance, at a step drawn
#     among the round's steps; seeded). secagg runs size their threat model
#     for the dropouts: security.dropout_rate = max(0.05, dropout). Prints per
#     run: test RMSE, its ratio to
#     the fault-free run of the same aggregation, rounds aborted, and the sites
#     that failed per step summed over rounds (metrics.jsonl failed_steps).
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir]}
build=${2:-build}
rounds=${ROUNDS:-50}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
summary() {  # <metrics.jsonl>: aborted rounds, failed sites per step
  python3 - "$1" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = collections.Counter()
for r in rows:
    for step, sites in r.get("failed_steps", {}).items():
        steps[step] += len(sites)
aborted = sum(1 for r in rows if r.get("aborted"))
print(aborted, " ".join(f"{k}={v}" for k, v in sorted(steps.items())) or "-")
PY
}
printf '| aggregation | dropout | test RMSE | ratio to no faults | rounds aborted | failed sites per step |\n'
printf '|---|---|---|---|---|---|\n'
for a in none secagg; do
  base=""
  for p in 0 0.1 0.2 0.4; do
    rate=$(python3 -c "print(max(0.05, $p))")
    r=$("$build/fedrec" sim --set federation.min_round_success=0 --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
      --set federation.rounds="$rounds" --set federation.round_timeout=30 \
      --set sim.compare_centralized=false --set security.aggregation="$a" \
      --set security.dropout_rate="$rate" --set sim.faults.dropout="$p" \
      --force --set output.dir="$out/$a-$p" -q)
    rmse=$(echo "$r" | field test_rmse)
    [ -z "$base" ] && base=$rmse
    read -r aborted steps < <(summary "$out/$a-$p/metrics.jsonl")
    printf '| %s | %s | %.4f | %.4f | %s | %s |\n' "$a" "$p" "$rmse" \
      "$(python3 -c "print($rmse/$base)")" "$aborted" "$steps"
  done
done
