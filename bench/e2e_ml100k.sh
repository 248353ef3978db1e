#!/usr/bin/env bash
# End-to-end accuracy and time on MovieLens 100K split u1, with the defaults.
#   bench/e2e_ml100k.sh <ml-100k dir> [build dir]
# Prints one line per run: command, test RMSE, seconds, and the federated /
# centralized RMSE ratio measured in this run.
set -euo pipefail
ml=${1:?usage: $0 <ml-100k dir> [build dir]}
build=${2:-build}
out=$(mktemp -d)
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

train=$("$build/fedrec" train --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
  --force --set output.dir="$out/train")
sim=$("$build/fedrec" sim --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
  --set federation.rounds=50 --set sim.compare_centralized=false --force --set output.dir="$out/sim")
demo_start=$(date +%s.%N)
demo=$("$build/fedrec" sim --force --set output.dir="$out/demo")
demo_end=$(date +%s.%N)

t_rmse=$(echo "$train" | field test_rmse)
s_rmse=$(echo "$sim" | field test_rmse)
printf 'train  u1  test_rmse %.4f  seconds %.2f\n' "$t_rmse" "$(echo "$train" | field seconds)"
printf 'sim    u1  10 sites 50 rounds  test_rmse %.4f  seconds %.2f\n' "$s_rmse" "$(echo "$sim" | field seconds)"
printf 'ratio  federated/centralized RMSE %.4f\n' "$(python3 -c "print($s_rmse/$t_rmse)")"
printf 'demo   fedrec sim (no arguments): wall %.2f s, test_rmse %.4f, centralized %.4f\n' \
  "$(python3 -c "print($demo_end-$demo_start)")" "$(echo "$demo" | field test_rmse)" \
  "$(echo "$demo" | field centralized_test_rmse)"
rm -rf "$out"
