#!/usr/bin/env bash
# Federated accuracy per aggregation strategy on ML-100K u1 (issue 16).
#   bench/e2e_strategies.sh <ml-100k dir> [build dir]
# First the centralized baseline (`fedrec train`, the defaults), then for
# each strategy and site count a `fedrec sim` partitioned by user with the
# default secure aggregation, 100 rounds, evaluated every 5 rounds: rounds
# to test RMSE 0.95, final RMSE, its ratio to centralized, median round
# seconds. Then the Dirichlet non-IID partition (alpha 0.1) with 50 sites.
# STRATEGIES="..." and SITES="..." pick rows; ROUNDS changes the budget;
# EXTRA="--set key=value ..." adds settings to every federated run (e.g.
# federation.local_epochs_max=5 for heterogeneous local work); DIRICHLET=0
# skips the non-IID row.
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir]}
build=${2:-build}
strategies=${STRATEGIES:-"fedavg fedavgm fedprox fedadagrad fedadam fedyogi"}
sites_list=${SITES:-"10 50 100"}
rounds=${ROUNDS:-100}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
data=(--set data.train="$ml/u1.base" --set data.test="$ml/u1.test" --set eval.ranking=false)

"$build/fedrec" train "${data[@]}" --force --set output.dir="$out/central" > "$out/central.log" 2>&1
central=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['test_rmse'])" \
  "$out/central/summary.json")
echo "centralized test RMSE $central"
echo "| strategy | sites | partition | rounds to 0.95 | final RMSE | / centralized | round s (median) |"
echo "|---|---|---|---|---|---|---|"

row() {  # strategy, sites, partition, then extra fedrec arguments
  local strategy=$1 sites=$2 partition=$3
  shift 3
  local dir="$out/$strategy-$sites-$partition"
  if ! "$build/fedrec" sim "${data[@]}" --set federation.strategy="$strategy" \
      --set federation.sites="$sites" --set federation.partition="$partition" \
      --set federation.rounds="$rounds" --set eval.every=5 \
      --set sim.compare_centralized=false --force --set output.dir="$dir" ${EXTRA:-} "$@" \
      > "$dir.log" 2>&1; then
    echo "| $strategy | $sites | $partition | failed: $(tail -1 "$dir.log") |"
    return
  fi
  python3 - "$dir" "$strategy" "$sites" "$partition" "$central" <<'PY'
import json, statistics, sys
d, strategy, sites, partition, central = sys.argv[1:6]
rmse, secs = [], []
for line in open(d + "/metrics.jsonl"):
    m = json.loads(line)
    secs.append(m["seconds"])
    if m.get("test_rmse") is not None:
        rmse.append((m["round"], m["test_rmse"]))
first = next((r for r, x in rmse if x <= 0.95), None)
final = rmse[-1][1]
print(f"| {strategy} | {sites} | {partition} | {first if first else '-'} | {final:.4f} | "
      f"{final / float(central):.4f} | {statistics.median(secs):.3f} |")
PY
}

for sites in $sites_list; do
  for strategy in $strategies; do
    row "$strategy" "$sites" user
  done
done
if [ "${DIRICHLET:-1}" != 0 ]; then
  row fedavg 50 dirichlet --set federation.dirichlet_alpha=0.1
fi
