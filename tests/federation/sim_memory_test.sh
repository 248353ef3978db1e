#!/usr/bin/env bash
# The simulator's memory grows linearly with the number of sites: `fedrec sim`
# on a small synthetic model, one round, channels on (the default), no secure
# aggregation, at 250, 1,000 and 4,000 sites; the summary's peak_rss_mb gives
# the memory of each run. Registered with CTest in CMakeLists.txt, which sets
# FEDREC. The bounds are generous; the measured figures are in BENCHMARKS.md.
#
#   (a) the per-site increment from 1,000 to 4,000 sites is at most 2x the one
#       from 250 to 1,000 sites (linear, not quadratic);
#   (b) the per-site increment from 1,000 to 4,000 sites is below
#       MAX_KB_PER_SITE (about 3x what was measured).
set -uo pipefail

MAX_KB_PER_SITE=${MAX_KB_PER_SITE:-90}

work=$(mktemp -d "${TMPDIR:-/tmp}/fedrec-simmem.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

small=(--set data.synthetic.users=8000 --set data.synthetic.items=200
       --set data.synthetic.ratings=80000 --set model.factors=8 --set federation.rounds=1
       --set security.aggregation=none --set sim.compare_centralized=false
       --set eval.ranking=false --set sim.threads=2)

rss_mb() {  # <sites>: peak_rss_mb of a run's summary (its last stdout line)
  local out
  out=$("$FEDREC" sim "${small[@]}" --set federation.sites="$1" \
        --force --set output.dir="$work/sites$1" 2>"$work/stderr$1") ||
    fail "fedrec sim with $1 sites exited non-zero: $(tail -n 5 "$work/stderr$1")"
  tail -n 1 <<<"$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["peak_rss_mb"])' ||
    fail "fedrec sim with $1 sites printed no summary with peak_rss_mb: $(tail -n 1 <<<"$out")"
}

r250=$(rss_mb 250) || exit 1
r1000=$(rss_mb 1000) || exit 1
r4000=$(rss_mb 4000) || exit 1

python3 - "$r250" "$r1000" "$r4000" "$MAX_KB_PER_SITE" <<'EOF'
import sys
r250, r1000, r4000, max_kb = map(float, sys.argv[1:])
low = (r1000 - r250) / 750 * 1000    # KB per site, 250 -> 1,000 sites
high = (r4000 - r1000) / 3000 * 1000  # KB per site, 1,000 -> 4,000 sites
print(f"peak RSS: {r250:.1f} MB at 250 sites, {r1000:.1f} MB at 1,000, {r4000:.1f} MB at 4,000")
print(f"per site: {low:.1f} KB (250 -> 1,000), {high:.1f} KB (1,000 -> 4,000)")
ok = True
# A floor of 1 KB keeps (a) meaningful if the small step is lost in the noise.
if high > 2 * max(low, 1.0):
    print(f"FAIL: {high:.1f} KB/site from 1,000 to 4,000 sites is more than 2x the "
          f"{low:.1f} KB/site from 250 to 1,000 sites: memory grows faster than linearly")
    ok = False
if high > max_kb:
    print(f"FAIL: {high:.1f} KB/site from 1,000 to 4,000 sites is over the bound of {max_kb:.0f} KB/site")
    ok = False
sys.exit(0 if ok else 1)
EOF
