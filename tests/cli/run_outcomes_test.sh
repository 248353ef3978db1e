#!/usr/bin/env bash
# The outcomes fedrec once left silent, each with its exit status and message.
#   run_outcomes_test.sh FEDREC WORK CASE
set -uo pipefail
fedrec=$1 work=$2 case=$3
script_dir=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work/$case" && mkdir -p "$work/$case" && cd "$work/$case" || exit 1
tiny=(--set data.synthetic.users=120 --set data.synthetic.items=150 --set data.synthetic.ratings=3000
      --set federation.sites=3 --set federation.rounds=2 --set model.factors=4
      --set sim.compare_centralized=false --set eval.ranking=false)
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE REGEX command...: the exit status is CODE and stderr matches REGEX.
expect() {
  local code=$1 regex=$2
  shift 2
  "$@" >out.txt 2>err.txt
  local got=$?
  [ "$got" -eq "$code" ] || fail "$* exited $got, expected $code; stderr: $(tail -n 3 err.txt)"
  grep -Eq -- "$regex" err.txt || fail "$*: stderr does not match /$regex/: $(tail -n 3 err.txt)"
}
case "$case" in
  all_rounds_aborted)
    expect 3 "no round trained: all 2 rounds aborted" \
      "$fedrec" sim "${tiny[@]}" --set federation.min_sites=20 --set output.dir=run
    grep -q '"rounds_aborted": 2' run/summary.json || fail "summary does not count the aborted rounds"
    grep -q '"status": "failed"' run/summary.json || fail "summary status is not failed"
    ;;
  never_evaluated)
    expect 3 "no round trained|never evaluated" \
      "$fedrec" sim "${tiny[@]}" --set federation.round_timeout=0.001 --set output.dir=run
    ;;
  refused_identity)
    "$fedrec" keygen --dir keys --sites 3 >/dev/null 2>&1 || fail "keygen failed"
    "$fedrec" keygen --out other >/dev/null 2>&1 || fail "keygen --out failed"
    # Every site checks the coordinator's key against one it does not present.
    expect 3 "no round trained|never evaluated" \
      "$fedrec" sim "${tiny[@]}" --set security.coordinator_identity=keys/coordinator.key \
      --set security.coordinator_public_key=other.pub --set security.site_identity='keys/site{site}.key' \
      --set security.site_public_keys='keys/site{site}.pub' --set federation.round_timeout=5 \
      --set output.dir=run
    ;;
  evaluation_coverage)
    "$fedrec" sim "${tiny[@]}" --set output.dir=run >out.txt 2>err.txt || fail "sim failed: $(tail -n 3 err.txt)"
    grep -q '"sites_evaluated":3' run/metrics.jsonl || fail "metrics.jsonl lacks sites_evaluated"
    grep -q '"test_ratings":[1-9]' run/metrics.jsonl || fail "metrics.jsonl lacks test_ratings"
    grep -q '"sites": 3' run/summary.json || fail "summary lacks the evaluation's sites"
    ;;
  run_dirs_never_collide)
    "$fedrec" train "${tiny[@]}" --set train.epochs=1 >a.txt 2>&1 || fail "first train failed"
    "$fedrec" train "${tiny[@]}" --set train.epochs=1 >b.txt 2>&1 || fail "second train failed"
    [ "$(ls runs | wc -l)" -eq 2 ] || fail "two runs share a directory: $(ls runs)"
    ;;
  non_empty_output_dir)
    mkdir -p run && touch run/notes.txt
    expect 1 "is not empty.*--force" "$fedrec" train "${tiny[@]}" --set output.dir=run
    "$fedrec" train "${tiny[@]}" --force --set output.dir=run >out.txt 2>&1 || fail "--force failed"
    [ -f run/notes.txt ] || fail "--force removed a file fedrec did not write"
    [ -f run/summary.json ] || fail "--force wrote no summary"
    ;;
  info_logs_without_terminal)
    "$fedrec" train "${tiny[@]}" --set train.epochs=2 --set output.dir=run >out.txt 2>err.txt || fail "train failed"
    grep -q "\[info\].*data:" err.txt || fail "no info line about the data when stderr is a file"
    grep -q "\[info\].*epoch 2/2" err.txt || fail "no progress line when stderr is a file"
    "$fedrec" train -q "${tiny[@]}" --set train.epochs=2 --force --set output.dir=run >out.txt 2>err.txt || fail "train -q failed"
    [ ! -s err.txt ] || fail "--quiet still logs: $(head -n 2 err.txt)"
    ;;
  generate_checks)
    "$fedrec" generate --out g --set federation.sites=2 >out.txt 2>err.txt ||
      fail "generate with 2 sites failed: $(tail -n 2 err.txt)"
    expect 1 "data.synthetic.ratings: expected at most 50" \
      "$fedrec" generate --out g2 --set data.synthetic.users=10 --set data.synthetic.items=10 \
      --set data.synthetic.ratings=1000
    ;;
  keygen_checks)
    expect 1 "expected --sites N with N >= 1.*found --sites -3" "$fedrec" keygen --dir k --sites -3
    expect 1 "expected --sites N with N >= 1.*found no --sites" "$fedrec" keygen --dir k
    ;;
  model_files_python)
    command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
    "$fedrec" train "${tiny[@]}" --set output.dir=run >out.txt 2>&1 || fail "train failed"
    python3 "$script_dir/../../scripts/read_model.py" run --holder central >py.txt 2>&1 ||
      fail "read_model.py: $(cat py.txt)"
    grep -q "matches" py.txt || fail "python's digest of model.global differs from model_sha256"
    head -n 1 run/model.tsv | grep -q "^# fedrec-model-tsv v1" || fail "model.tsv has no header"
    ;;
  *) fail "unknown case $case" ;;
esac
echo "ok: $case"
