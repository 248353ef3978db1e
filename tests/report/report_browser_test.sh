#!/usr/bin/env bash
# `fedrec report` as a browser shows it: two tiny `fedrec sim` runs (one with
# secure aggregation, one without), their report, then headless Chromium's
# screenshot of the page (not blank: many colours, both runs' colours drawn)
# and its DOM (every expected chart present, with points).
# Usage: report_browser_test.sh FEDREC_BINARY WORK_DIR. Exit 77 (skipped)
# without chromium or chromium-browser on PATH.
set -euo pipefail

fedrec=$1
work=$2
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "SKIP: no chromium"
  exit 77
fi
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

rm -rf "$work"
mkdir -p "$work"
cd "$work"
tiny=(--set federation.sites=3 --set federation.rounds=3 --set data.synthetic.users=200
  --set data.synthetic.items=300 --set data.synthetic.ratings=8000 --set model.factors=4
  --set sim.compare_centralized=false)
"$fedrec" sim -q "${tiny[@]}" --force --set output.dir="$work/run-secagg" >sim-secagg.log
"$fedrec" sim -q "${tiny[@]}" --set security.aggregation=none --set model.factors=8 \
  --force --set output.dir="$work/run-plain" >sim-plain.log
"$fedrec" report "$work/run-secagg" "$work/run-plain" --out "$work/report.html" >report.log
[ -s report.html ] || fail "fedrec report wrote no report.html"
if grep -Eq 'https?://' report.html; then
  fail "report.html refers to the network: $(grep -Eo 'https?://[^"< ]*' report.html | head -1)"
fi

# Chromium's own profile under the work dir; its D-Bus warnings go to a log.
chrome=("$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars
  --user-data-dir="$work/profile" --window-size=1200,3000)
timeout 120 "${chrome[@]}" --screenshot="$work/report.png" "file://$work/report.html" \
  >chromium-screenshot.log 2>&1 || fail "chromium --screenshot failed: $(tail -3 chromium-screenshot.log)"
timeout 120 "${chrome[@]}" --dump-dom "file://$work/report.html" >dom.html \
  2>chromium-dom.log || fail "chromium --dump-dom failed: $(tail -3 chromium-dom.log)"
[ -s report.png ] || fail "chromium wrote no screenshot"

# Every chart these runs have data for, each drawn with points.
charts=(test_rmse precision@10 recall@10 ndcg@10 hr@10 map@10 coverage@10 train_loss bytes
  round_time sites secure_seconds secure_bytes)
for chart in "${charts[@]}"; do
  points=$(grep -o "<svg class=\"chart\" data-chart=\"$chart\" data-points=\"[0-9]*\"" dom.html |
    grep -o '[0-9]*"$' | tr -d '"' || true)
  [ -n "$points" ] || fail "the rendered page has no chart $chart"
  [ "$points" -gt 0 ] || fail "chart $chart has no points"
done
# Both runs overlaid where both have data.
grep -q 'data-chart="test_rmse" data-points="12" data-runs="2"' dom.html ||
  fail "test_rmse does not show 3 rounds x RMSE, MAE x 2 runs"

if ! command -v python3 >/dev/null; then
  size=$(stat -c %s report.png)
  [ "$size" -gt 20000 ] || fail "screenshot of $size bytes: blank?"
  echo "PASS (no python3: screenshot checked by size only)"
  exit 0
fi
# Decodes the PNG (8-bit RGB or RGBA) and counts its colours.
python3 - report.png <<'EOF'
import struct, sys, zlib

data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
assert depth == 8 and colour_type in (2, 6), f"unexpected PNG format {depth}/{colour_type}"
bpp = 3 if colour_type == 2 else 4
raw = zlib.decompress(idat)
stride = width * bpp
prev = bytearray(stride)
colours = set()
for y in range(height):
    start = y * (stride + 1)
    kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
    if kind == 1:
        for i in range(bpp, stride):
            row[i] = (row[i] + row[i - bpp]) & 255
    elif kind == 2:
        row = bytearray((a + b) & 255 for a, b in zip(row, prev))
    elif kind == 3:
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prev[i]) >> 1)) & 255
    elif kind == 4:
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        colours.add(bytes(row[x:x + 3]))
    prev = row
print(f"screenshot {width}x{height}: {len(colours)} colours")
assert len(colours) > 16, "the screenshot is blank"
for name, rgb in (("run-secagg", b"\x1f\x77\xb4"), ("run-plain", b"\xd6\x27\x28")):
    assert rgb in colours, f"{name}'s colour #{rgb.hex()} is not drawn"
EOF
echo PASS
