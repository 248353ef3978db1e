#!/usr/bin/env bash
# Differential privacy on MovieLens 100K split u1: 10 sites, 50 rounds,
# user-level DP (dp.unit = user, every user in every round), delta = 1e-5,
# adaptive clipping to the 0.2 quantile of the users' update norms, server
# step 20. Prints one line per run: mode, noise multiplier z, epsilon, test
# RMSE, and the RMSE ratio to the non-private baseline measured in this run.
#   bench/e2e_dp.sh <ml-100k dir> [build dir]
# Environment: ZS (noise multipliers, default "1 4 8 16"), MODES (default
# "central distributed"), EXTRA (more --set arguments for the private runs,
# e.g. EXTRA="--set dp.expected_units=943" for a fixed denominator).
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir]}
build=${2:-build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set data.train="$ml/u1.base" --set data.test="$ml/u1.test" --set federation.rounds=50
  --set sim.compare_centralized=false --set eval.every=50)
dp=(--set dp.unit=user --set dp.delta=1e-5 --set dp.clip=0.1 --set dp.target_quantile=0.2
  --set dp.count_stddev=47 --set federation.server_lr=20)
# field KEY [SUBKEY]: a value of the summary (the last line of output).
field() {
  python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1])
for k in sys.argv[1:]: d = d[k]
print(d)" "$@"
}

base=$("$build/fedrec" sim "${common[@]}" --force --set output.dir="$out/base" | field test_rmse)
printf '%-12s z %-5s epsilon %-9s test_rmse %.4f  ratio 1.0000\n' none - inf "$base"
read -r -a extra <<<"${EXTRA:-}"
for mode in ${MODES:-central distributed}; do
  for z in ${ZS:-1 4 8 16}; do
    line=$("$build/fedrec" sim "${common[@]}" "${dp[@]}" "${extra[@]}" --set dp.mode=$mode \
      --set dp.noise_multiplier=$z --force --set output.dir="$out/$mode$z")
    rmse=$(echo "$line" | field test_rmse)
    eps=$(echo "$line" | field dp epsilon)
    printf '%-12s z %-5s epsilon %-9.3f test_rmse %.4f  ratio %.4f\n' "$mode" "$z" "$eps" "$rmse" \
      "$(python3 -c "print($rmse/$base)")"
  done
done
