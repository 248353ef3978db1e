#!/usr/bin/env bash
# Encrypted aggregation end to end, each figure a same-run ratio.
#   bench/e2e_secure.sh accuracy <ml-100k dir> [build dir]
#     fedrec sim on ML-100K u1, 10 sites by user, 50 rounds, with
#     security.aggregation = none, secagg, secagg+ (and paillier with
#     PAILLIER=1): test RMSE, ratio to none, and the secure-aggregation bytes and
#     seconds per round from metrics.jsonl.
#   bench/e2e_secure.sh rounds [build dir]
#     Round time of secagg+ and secagg against none in the simulator: n = 100
#     sites, a d = 1.05 M-element update (30,000 items, k = 32), synthetic data;
#     the mean over rounds 1..R-1 (the last one also evaluates).
set -euo pipefail
mode=${1:?usage: $0 accuracy <ml-100k dir> [build dir] | rounds [build dir]}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
# mean of a metrics.jsonl field over rounds that did not evaluate (or all, if none)
mean() {
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
plain = [r for r in rows if "test_rmse" not in r] or rows
print(sum(r.get(sys.argv[2], 0) for r in plain) / len(plain))
PY
}

if [ "$mode" = accuracy ]; then
  ml=${2:?ml-100k dir}
  build=${3:-build}
  schemes="none secagg secagg+"
  [ "${PAILLIER:-0}" = 1 ] && schemes="$schemes paillier"
  base=""
  for a in $schemes; do
    r=$("$build/fedrec" sim --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
      --set federation.rounds=50 --set sim.compare_centralized=false \
      --set security.aggregation="$a" --set output.dir="$out/$a" -q)
    rmse=$(echo "$r" | field test_rmse)
    [ -z "$base" ] && base=$rmse
    printf '%-9s test_rmse %.4f  ratio_to_none %.4f  seconds %6.2f  secure_bytes/round %10.0f  secure_seconds/round %.4f  round_seconds %.4f\n' \
      "$a" "$rmse" "$(python3 -c "print($rmse/$base)")" "$(echo "$r" | field seconds)" \
      "$(mean "$out/$a/metrics.jsonl" secure_bytes)" "$(mean "$out/$a/metrics.jsonl" secure_seconds)" \
      "$(mean "$out/$a/metrics.jsonl" seconds)"
  done
elif [ "$mode" = rounds ]; then
  build=${2:-build}
  base=""
  for a in none secagg+ secagg; do
    "$build/fedrec" sim --set data.synthetic.users=20000 --set data.synthetic.items=30000 \
      --set data.synthetic.ratings=1000000 --set model.factors=32 --set federation.sites=100 \
      --set federation.rounds=4 --set federation.local_epochs=1 --set eval.ranking=false --set eval.every=1000 \
      --set sim.compare_centralized=false --set security.aggregation="$a" \
      --set output.dir="$out/$a" -q > /dev/null
    t=$(mean "$out/$a/metrics.jsonl" seconds)
    [ -z "$base" ] && base=$t
    printf '%-8s n=100 d=1.05M  round_seconds %.3f  ratio_to_none %.2f  secure_seconds %.3f  secure_MB %.1f\n' \
      "$a" "$t" "$(python3 -c "print($t/$base)")" "$(mean "$out/$a/metrics.jsonl" secure_seconds)" \
      "$(python3 -c "print($(mean "$out/$a/metrics.jsonl" secure_bytes)/1e6)")"
  done
else
  echo "unknown mode $mode" >&2
  exit 2
fi
