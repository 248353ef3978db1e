#!/usr/bin/env bash
# Simulating many sites on one machine: seconds per round and peak RSS of
# `fedrec sim` as a user runs it (the defaults: channels on, the default
# secure scheme), on synthetic data of 100,000 users and 2 M ratings, k = 32.
#   bench/e2e_scale.sh table [build dir]
#     The scale table of BENCHMARKS.md (issue 15): one round at 1,000, 3,000,
#     5,000 and 10,000 sites with each scheme and channels on or off; round
#     seconds (training and evaluation; the round's secure-aggregation steps
#     at the coordinator in secure_s) and the process's peak RSS.
#   bench/e2e_scale.sh sampled [build dir]
#     100,000 registered sites, 1,000 sampled per round and 1% asked to
#     evaluate: seconds of each of 3 rounds.
#   bench/e2e_scale.sh ml100k <ml-100k dir> [build dir]
#     ML-100K u1 with one user per site (943 sites), 3 rounds, evaluation on
#     its own secure sum and riding on the next round's: seconds per round
#     and test RMSE.
#   bench/e2e_scale.sh reconstruct <ml-100k dir> [build dir]
#     Sampled federations whose evaluating sites mostly never trained: the
#     synthetic 100,000-site job above, and ML-100K u1 with one user per site,
#     10% sampled and 10% evaluating, 10 rounds; each with eval.reconstruct
#     false then true (the default), twice: test RMSE per round, seconds and
#     the model's hash (the same both ways).
#   bench/e2e_scale.sh agreements <sites> [build dir]
#     One round at <sites> sites with the defaults, the simulated sites
#     computing each pairwise secret once per pair (sim.share_agreements =
#     true, the default) and each its own (false), alternated twice.
# ROWS="sites:aggregation:channels ..." picks table rows. EXTRA="--set k=v ..."
# is added to every run (e.g. EXTRA="--set sim.share_agreements=false").
set -euo pipefail
mode=${1:?usage: $0 table|sampled [build dir] | ml100k|reconstruct <ml-100k dir> [build dir] | agreements <sites> [build dir]}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
data="--set data.synthetic.users=100000 --set data.synthetic.ratings=2000000 --set sim.compare_centralized=false"

# Prints "round seconds, secure seconds, test RMSE" of each round, then the peak RSS.
report() {
  python3 - "$1" <<'PY'
import json, sys, glob
d = sys.argv[1]
for l in open(d + "/metrics.jsonl"):
    m = json.loads(l)
    print(f"  round {m['round']}: {m['seconds']:.2f} s (secure {m.get('secure_seconds', 0):.2f} s, "
          f"{m['aggregation']}, {m['sites_reported']}/{m['sites_selected']} sites), "
          f"test RMSE {m.get('test_rmse', float('nan')):.4f}")
s = json.load(open(d + "/summary.json"))
print(f"  peak RSS {s['peak_rss_mb']:.0f} MB, whole job {s['seconds']:.1f} s (start-up, rounds, the end), "
      f"model {s.get('model_sha256', '')[:12]}")
PY
}

run() {  # name, then fedrec arguments
  local name=$1
  shift
  local dir="$out/$name"
  echo "$name"
  # shellcheck disable=SC2086
  if ! "$build/fedrec" sim --force --set output.dir="$dir" "$@" ${EXTRA:-} > "$out/$name.log" 2>&1; then
    echo "  failed: $(tail -1 "$out/$name.log")"
    return
  fi
  report "$dir"
}

case "$mode" in
  table)
    build=${2:-build}
    rows=${ROWS:-"1000:none:on 1000:secagg:on 1000:secagg+:on 3000:none:on 3000:none:off \
5000:none:on 5000:secagg+:on 5000:secagg+:off 5000:secagg:off 10000:secagg:on"}
    for row in $rows; do
      IFS=: read -r sites aggregation channels <<< "$row"
      ch=true
      [ "$channels" = off ] && ch=false
      # shellcheck disable=SC2086
      run "sites=$sites aggregation=$aggregation channels=$channels" $data \
        --set federation.sites="$sites" --set federation.rounds=1 \
        --set security.aggregation="$aggregation" --set security.channels=$ch
    done
    ;;
  sampled)
    build=${2:-build}
    # shellcheck disable=SC2086
    run "100000 registered, 1000 sampled" $data --set federation.sites=100000 \
      --set federation.fraction=0.01 --set eval.fraction=0.01 --set federation.rounds=3
    ;;
  ml100k)
    ml=${2:?ml-100k dir}
    build=${3:-build}
    # Evaluation on its own secure sum after each round, then riding on the
    # next round's (the default): the same metrics and model, fewer sums.
    for ride in false true; do
      run "ML-100K u1, one user per site, eval.with_next_round=$ride" \
        --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
        --set federation.sites=943 --set federation.rounds=3 \
        --set sim.compare_centralized=false --set eval.with_next_round=$ride
    done
    ;;
  reconstruct)
    ml=${2:?ml-100k dir}
    build=${3:-build}
    for pass in 1 2; do
      for fit in false true; do
        # shellcheck disable=SC2086
        run "pass $pass: 100000 registered, 1000 sampled, eval.reconstruct=$fit" $data \
          --set federation.sites=100000 --set federation.fraction=0.01 \
          --set eval.fraction=0.01 --set federation.rounds=3 --set output.site_files=false \
          --set eval.reconstruct=$fit
        run "pass $pass: ML-100K u1, 943 sites, 10% sampled, eval.reconstruct=$fit" \
          --set data.train="$ml/u1.base" --set data.test="$ml/u1.test" \
          --set federation.sites=943 --set federation.fraction=0.1 --set eval.fraction=0.1 \
          --set federation.rounds=10 --set sim.compare_centralized=false \
          --set output.site_files=false --set eval.reconstruct=$fit
      done
    done
    ;;
  agreements)
    sites=${2:?sites}
    build=${3:-build}
    for pass in 1 2; do
      for share in true false; do
        # shellcheck disable=SC2086
        run "pass $pass: $sites sites, sim.share_agreements=$share" $data \
          --set federation.sites="$sites" --set federation.rounds=1 \
          --set sim.share_agreements=$share
      done
    done
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
