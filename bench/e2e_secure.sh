#!/usr/bin/env bash
# Encrypted aggregation end to end, each figure a same-run ratio.
#   bench/e2e_secure.sh accuracy <ml-100k dir> [build dir]
#     fedrec sim on ML-100K u1, 10 sites by user, 50 rounds, with
#     security.aggregation = none, secagg, secagg+ (and paillier with
#     PAILLIER=1): test RMSE, ratio to none, and the secure-aggregation bytes and
#     seconds per round from metrics.jsonl.
#   bench/e2e_secure.sh rounds [build dir]
#     Round time of secagg+ (without and with configured identity keys) and
#     secagg against none in the simulator: n = 100 sites, a d = 1.05 M-element
#     update (30,000 items, k = 32), synthetic data, two workloads (sparse: 1 M
#     ratings; dense: 10 M). Each run's time is the median over rounds
#     2..R-1 (R = ROUNDS, default 8; round 1 sets up the channels, the last
#     one also evaluates), so one round slowed by the VM's neighbours does
#     not move it; the schemes run interleaved REPS times (default 3) and
#     each ratio is taken within a repetition, then the median reported.
#     WORKLOADS=dense:10000000 runs one workload only.
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
      --set security.aggregation="$a" --force --set output.dir="$out/$a" -q)
    rmse=$(echo "$r" | field test_rmse)
    [ -z "$base" ] && base=$rmse
    printf '%-9s test_rmse %.4f  ratio_to_none %.4f  seconds %6.2f  secure_bytes/round %10.0f  secure_seconds/round %.4f  round_seconds %.4f\n' \
      "$a" "$rmse" "$(python3 -c "print($rmse/$base)")" "$(echo "$r" | field seconds)" \
      "$(mean "$out/$a/metrics.jsonl" secure_bytes)" "$(mean "$out/$a/metrics.jsonl" secure_seconds)" \
      "$(mean "$out/$a/metrics.jsonl" seconds)"
  done
elif [ "$mode" = rounds ]; then
  build=${2:-build}
  reps=${REPS:-3}
  rounds=${ROUNDS:-8}
  "$build/fedrec" keygen --dir "$out/keys" --sites 100 > /dev/null 2>&1
  keys=(--set security.coordinator_identity="$out/keys/coordinator.key"
        --set security.coordinator_public_key="$out/keys/coordinator.pub"
        --set security.site_identity="$out/keys/site{site}.key"
        --set security.site_public_keys="$out/keys/site{site}.pub")
  # sparse: 10 K ratings a site touch ~5 K of the 30 K item rows; dense: 100 K
  # ratings a site touch ~3/4 of them, so `none` ships most of d as well.
  for workload in ${WORKLOADS:-sparse:1000000 dense:10000000}; do
    name=${workload%%:*}
    ratings=${workload#*:}
    : > "$out/times"
    for rep in $(seq "$reps"); do
      for a in none secagg+ secagg+keys secagg; do
        extra=()
        [ "$a" = secagg+keys ] && extra=("${keys[@]}")
        "$build/fedrec" sim --set data.synthetic.users=20000 --set data.synthetic.items=30000 \
          --set data.synthetic.ratings="$ratings" --set model.factors=32 --set federation.sites=100 \
          --set federation.rounds="$rounds" --set federation.local_epochs=1 --set eval.ranking=false \
          --set eval.every=1000 --set sim.compare_centralized=false \
          --set security.aggregation="${a%keys}" "${extra[@]}" --force --set output.dir="$out/run" -q > /dev/null
        python3 - "$out/run/metrics.jsonl" "$a" "$rep" >> "$out/times" <<'PY'
import json, sys
import statistics
rows = [json.loads(l) for l in open(sys.argv[1])][1:-1]  # not the set-up round nor the evaluating one
# the median round: one round slowed by the VM's neighbours does not move it
med = lambda k: statistics.median(r.get(k, 0) for r in rows)
print(sys.argv[2], sys.argv[3], med("seconds"), med("secure_seconds"), med("secure_bytes"), med("bytes_received"))
PY
      done
    done
    python3 - "$out/times" "$name" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for a, rep, sec, ssec, sbytes, recv in rows:
    by.setdefault(a, {})[rep] = (float(sec), float(ssec), float(sbytes), float(recv))
for a in by:
    ratios = [by[a][r][0] / by["none"][r][0] for r in by[a]]
    vals = list(by[a].values())
    print("%-6s %-12s n=100 d=1.05M  round_seconds %.3f  ratio_to_none median %.2f (runs %s)  "
          "received_MB %.0f  secure_seconds %.3f" % (
              sys.argv[2], a, statistics.median(v[0] for v in vals), statistics.median(ratios),
              " ".join("%.2f" % r for r in ratios), statistics.median(v[3] for v in vals) / 1e6,
              statistics.median(v[1] for v in vals)))
PY
  done
else
  echo "unknown mode $mode" >&2
  exit 2
fi
