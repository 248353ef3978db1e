#!/usr/bin/env bash
# Multi-threaded SGD against LibMF on MovieLens 100K u1, k = 32 (issue 17).
#   bench/e2e_parallel_sgd.sh <ml-100k dir> <build dir> <LibMF mf-train> [repetitions]
# LibMF (github.com/cjlin1/libmf) is built locally and is not part of this
# repository. Each repetition runs, one after the other: LibMF on 1 and on 2
# threads, then fedrec's BM_TrainEpoch (sequential, grid and free on 1 and 2
# threads), so every figure of a repetition comes from the same minutes of
# this shared machine. LibMF's per-iteration rate is 200 x ratings /
# (T(-t 220) - T(-t 20)), so loading the file cancels out; fedrec's rate is
# one epoch of MfTrainer::Train (shuffle included) per benchmark iteration.
# Prints every repetition, then the best and mean of each row, and the test
# RMSE each side reaches (fedrec: `fedrec train` at its defaults, 60 epochs,
# the final and the best epoch; LibMF: the best iteration of a few learning
# rates and regularizations, 2 threads).
# BLOCKS=<P> sets fedrec's grid side (train.blocks; default 16).
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> <build dir> <LibMF mf-train> [repetitions]}
build=${2:?build dir}
mftrain=${3:?LibMF mf-train}
reps=${4:-5}
blocks=(--blocks="${BLOCKS:-16}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk '{print $1, $2, $3}' "$ml/u1.base" > "$work/train.txt"
awk '{print $1, $2, $3}' "$ml/u1.test" > "$work/test.txt"
n=$(wc -l < "$work/train.txt")
rates="$work/rates.txt"

seconds() {  # command...: its wall seconds
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

for rep in $(seq "$reps"); do
  for threads in 1 2; do
    libmf=("$mftrain" -k 32 -s "$threads" -l2 0.05 -r 0.01 --quiet)
    t20=$(seconds "${libmf[@]}" -t 20 "$work/train.txt" "$work/model")
    t220=$(seconds "${libmf[@]}" -t 220 "$work/train.txt" "$work/model")
    echo "libmf/threads:$threads $(echo "$n * 200 / ($t220 - $t20) / 1000000" | bc -l)" >> "$rates"
  done
  "$build/bench/parallel_sgd_bench" --train="$ml/u1.base" "${blocks[@]}" --benchmark_min_time=1 \
    --benchmark_format=csv 2> /dev/null |
    awk -F, '/^"BM_TrainEpoch/ { gsub(/"/, "", $1); sub(/BM_TrainEpoch\//, "fedrec/", $1);
             sub(/\/real_time/, "", $1); print $1, $7 / 1e6 }' >> "$rates"
  echo "repetition $rep:"
  tail -n 7 "$rates" | awk '{ printf "  %-28s %7.1f M updates/s\n", $1, $2 }'
done

echo
echo "| run | best M/s | mean M/s |"
echo "|---|---|---|"
awk '{ n[$1]++; s[$1] += $2; if ($2 > b[$1]) b[$1] = $2; if (!($1 in o)) o[$1] = i++ }
     END { for (k in o) printf "%d | %s | %.1f | %.1f |\n", o[k], k, b[k], s[k] / n[k] }' "$rates" |
  sort -n | cut -d'|' -f2- | sed 's/^/|/'

echo
for schedule in sequential grid free; do
  "$build/fedrec" train --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
    --set train.schedule=$schedule --set train.blocks="${BLOCKS:-16}" --set eval.ranking=false \
    --set output.progress=false --force --set output.dir="$work/train-$schedule" > /dev/null 2>&1
  python3 - "$work/train-$schedule/metrics.jsonl" "$schedule" <<'PY'
import json, sys
rmse = [(json.loads(l)["test_rmse"], json.loads(l)["epoch"]) for l in open(sys.argv[1])]
print(f"fedrec train, schedule {sys.argv[2]}: test_rmse final {rmse[-1][0]:.4f}, "
      f"best iteration {min(rmse)[0]:.4f} (epoch {min(rmse)[1]})")
PY
done
for args in "-l2 0.05 -r 0.01 -t 60" "-l2 0.05 -r 0.05 -t 20" "-l2 0.1 -r 0.1 -t 10" \
            "-l2 0.1 -r 0.05 -t 20" "-l2 0.1 -r 0.05 -t 40"; do
  "$mftrain" -k 32 -s 2 $args -p "$work/test.txt" "$work/train.txt" "$work/model" |
    awk -v a="$args" 'NR > 1 && ($3 < best || best == "") { best = $3 }
                      END { printf "libmf test_rmse (best iteration) %s: %s\n", a, best }'
done
