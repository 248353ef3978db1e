#!/usr/bin/env bash
# Cost of checkpointing (checkpoint.every) in fedrec sim on ML-100K u1.
#   bench/checkpoint_overhead.sh <ml-100k dir> [build dir]
# The same job (10 sites partitioned by user, 20 rounds, the default secure
# aggregation, evaluation every 5 rounds) with checkpoint.every = 0 (off),
# 5 and 1, interleaved REPS times (default 3); prints each setting's median
# wall seconds and its ratio to off, the checkpoint folder's size, and checks
# the three end with one model_sha256. ROUNDS and SITES change the job.
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir]}
build=${2:-build}
reps=${REPS:-3}
rounds=${ROUNDS:-20}
sites=${SITES:-10}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
job=(--set data.train="$ml/u1.base" --set data.test="$ml/u1.test" --set eval.ranking=false
     --set federation.sites="$sites" --set federation.rounds="$rounds" --set eval.every=5
     --set sim.compare_centralized=false)

declare -A seconds sha size
for rep in $(seq "$reps"); do
  for every in 0 5 1; do
    dir="$out/e$every-r$rep"
    start=$(date +%s.%N)
    line=$("$build/fedrec" sim "${job[@]}" --set checkpoint.every="$every" \
             --force --set output.dir="$dir" -q | tail -n 1)
    end=$(date +%s.%N)
    seconds[$every]+="$(python3 -c "print($end - $start)") "
    sha[$every]=$(sed -n 's/.*"model_sha256":"\([0-9a-f]*\)".*/\1/p' <<<"$line")
    [ -d "$dir/checkpoint" ] && size[$every]=$(du -sk "$dir/checkpoint" | cut -f1)
    rm -rf "$dir"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(median <<<"${seconds[0]}")
echo "| checkpoint.every | wall s (median of $reps) | / off | checkpoint folder |"
echo "|---|---|---|---|"
for every in 0 5 1; do
  m=$(median <<<"${seconds[$every]}")
  ratio=$(python3 -c "print(f'{$m / $base:.2f}')")
  echo "| $every | $(printf %.2f "$m") | ${ratio}x | ${size[$every]:-0} KiB |"
done
[ "${sha[0]}" = "${sha[5]}" ] && [ "${sha[0]}" = "${sha[1]}" ] ||
  { echo "model_sha256 differs: ${sha[0]} ${sha[5]} ${sha[1]}" >&2; exit 1; }
echo "model_sha256 ${sha[0]} for all three"
