#!/usr/bin/env bash
# Top-N accuracy and time of every built-in model on MovieLens 100K split u1,
# defaults only: centralized (`fedrec train`) and federated over 10 sites by
# user with the default secure aggregation (`fedrec sim`).
#   bench/e2e_models.sh <ml-100k dir> [build dir] [models...]
# Prints one markdown row per model: centralized P@10 / NDCG@10 and their lift
# over popularity (measured in the same run), federated P@10 / NDCG@10 and their
# ratio to centralized, seconds of training, and the mean federated round time
# (sites evaluate only after the last round, so the mean is mostly training and
# aggregation).
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir] [models...]}
build=${2:-build}
shift $(($# >= 2 ? 2 : $#))
models=("$@")
((${#models[@]})) || models=(popularity itemknn ease ials bpr mf)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
data=(--set data.train="$ml/u1.base" --set data.test="$ml/u1.test")

echo "| model | central P@10 | central NDCG@10 | lift P@10 | lift NDCG@10 | train s | federated P@10 | federated NDCG@10 | fed/central P@10 | fed/central NDCG@10 | round s (mean) | sim s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
  "$build/fedrec" train "${data[@]}" --set model.name="$m" --force --set output.dir="$out/train-$m" \
    >"$out/train-$m.out" 2>/dev/null
  "$build/fedrec" sim "${data[@]}" --set model.name="$m" --set sim.compare_centralized=false \
    --set eval.every=1000 --force --set output.dir="$out/sim-$m" >"$out/sim-$m.out" 2>/dev/null
  python3 - "$m" "$out" <<'PY'
import json, sys
m, out = sys.argv[1], sys.argv[2]
last = lambda p: json.loads(open(p).read().strip().splitlines()[-1])
t, s = last(f"{out}/train-{m}.out"), last(f"{out}/sim-{m}.out")
rounds = [json.loads(l) for l in open(f"{out}/sim-{m}/metrics.jsonl")]
mean_round = sum(r["seconds"] for r in rounds) / len(rounds)
print(f"| {m} | {t['precision@10']:.4f} | {t['ndcg@10']:.4f} | {t['lift_precision@10']:.2f}x "
      f"| {t['lift_ndcg@10']:.2f}x | {t['seconds']:.2f} | {s['precision@10']:.4f} "
      f"| {s['ndcg@10']:.4f} | {s['precision@10'] / t['precision@10']:.4f} "
      f"| {s['ndcg@10'] / t['ndcg@10']:.4f} | {mean_round:.2f} | {s['seconds']:.2f} |")
PY
done
