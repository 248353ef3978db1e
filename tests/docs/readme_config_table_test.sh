#!/usr/bin/env bash
# The README's configuration table (between <!-- config-table --> and
# <!-- /config-table -->) is what `fedrec config --docs` prints. Registered with
# CTest in CMakeLists.txt, which sets FEDREC and README. To refresh the table:
#   tests/docs/readme_config_table_test.sh --update   (with FEDREC and README set)
set -uo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
docs=$("$FEDREC" config --docs) || fail "fedrec config --docs exited non-zero"
table=$(sed -n '/^<!-- config-table -->$/,/^<!-- \/config-table -->$/p' "$README" | sed '1d;$d')
[ -n "$table" ] || fail "$README has no <!-- config-table --> ... <!-- /config-table --> block"

if [ "${1:-}" = "--update" ]; then
  python3 - "$README" "$docs" <<'PY'
import re, sys
path, docs = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"(<!-- config-table -->\n).*?(\n<!-- /config-table -->)",
              lambda m: m.group(1) + docs + m.group(2), text, flags=re.S)
open(path, "w").write(text)
PY
  echo "updated the configuration table of $README"
  exit 0
fi

if [ "$table" != "$docs" ]; then
  diff <(echo "$table") <(echo "$docs") | head -n 40 >&2
  fail "the configuration table of $README differs from \`fedrec config --docs\` (< README, > fedrec); refresh it with FEDREC=$FEDREC README=$README $0 --update"
fi
echo "README configuration table: $(wc -l <<<"$docs") lines, as fedrec config --docs prints them"
