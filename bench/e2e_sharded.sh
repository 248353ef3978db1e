#!/usr/bin/env bash
# Sharded aggregation of federated rounds (cluster.shard_servers = S): what
# the coordinator receives and how long a round takes, for S = 0, 1, 2, in
# `fedrec sim` (every role a thread; channels on, as users run it).
#   bench/e2e_sharded.sh bytes [build dir]
#     100 sites, ML-100K-sized synthetic data (943 users, 1,682 items, 100,000
#     ratings), k = 32, 3 rounds, aggregation none and secagg: the
#     coordinator's bytes received per round and each shard server's.
#   bench/e2e_sharded.sh round [build dir]
#     100 sites, 30,000 items at k = 32, so a site's input is d ~ 1 M ring
#     words (the secure round at n = 100, d = 1M), 2 rounds, evaluation
#     after the last only: each round's seconds, the coordinator's secure
#     steps (secure_s) and bytes received.
#   bench/e2e_sharded.sh paillier [build dir]
#     Threshold Paillier-2048 (8 sites, 300 users, 400 items, 20,000 ratings,
#     k = 4, 2 rounds): the coordinator's bytes received per round with the
#     ciphertexts through the shard servers.
# SHARDS="0 1 2" picks the shard counts; AGG="none secagg" the schemes.
set -euo pipefail
mode=${1:?usage: $0 bytes|round|paillier [build dir]}
build=${2:-build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

report() {  # run directory
  python3 - "$1" <<'PY'
import json, sys
d = sys.argv[1]
for l in open(d + "/metrics.jsonl"):
    m = json.loads(l)
    print(f"  round {m['round']}: {m['seconds']:.2f} s (secure {m.get('secure_seconds', 0):.2f} s), "
          f"coordinator received {m['bytes_received'] / 1e6:.2f} MB, "
          f"{m['sites_reported']}/{m['sites_selected']} sites")
s = json.load(open(d + "/summary.json"))
shards = s.get("shard_servers", [])
for i, t in enumerate(shards):
    print(f"  shard server {i}: received {t['bytes_received'] / 1e6:.2f} MB in all rounds")
print(f"  coordinator: received {s['bytes_received'] / 1e6:.2f} MB in all rounds; "
      f"model_sha256 {s['model_sha256'][:16]}; test RMSE {s.get('test_rmse', float('nan')):.4f}")
PY
}

case "$mode" in
  bytes)
    data=(--set data.synthetic.users=943 --set data.synthetic.items=1682
          --set data.synthetic.ratings=100000 --set federation.rounds=3)
    ;;
  round)
    data=(--set data.synthetic.users=10000 --set data.synthetic.items=30000
          --set data.synthetic.ratings=300000 --set federation.rounds=2 --set eval.every=100
          --set eval.ranking=false)
    ;;
  paillier)
    data=(--set data.synthetic.users=300 --set data.synthetic.items=400
          --set data.synthetic.ratings=20000 --set federation.rounds=2)
    sites=8 factors=4 AGG=${AGG:-paillier}
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
for agg in ${AGG:-none secagg}; do
  for s in ${SHARDS:-0 1 2}; do
    echo "$agg, cluster.shard_servers = $s:"
    "$build/fedrec" sim "${data[@]}" --set federation.sites="${sites:-100}" \
      --set model.factors="${factors:-32}" --set security.aggregation="$agg" --set cluster.shard_servers="$s" \
      --set sim.compare_centralized=false --force --set output.dir="$out/$agg-$s" >/dev/null 2>&1
    report "$out/$agg-$s"
  done
done
