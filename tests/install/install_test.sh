#!/usr/bin/env bash
# The installed package, as a plug-in author uses it (registered with CTest in
# CMakeLists.txt, which sets FEDREC_BUILD_DIR, FEDREC_SOURCE_DIR, CMAKE_COMMAND,
# CMAKE_GENERATOR and CXX):
#
#   1. cmake --install of the already-built tree into a temporary prefix;
#   2. examples/plugin (a strategy plug-in) and examples/plugin_model (a
#      custom program) configured and built in their own build directories
#      against that prefix: find_package(fedrec 0.1) + fedrec::fedrec;
#   3. the installed <prefix>/bin/fedrec finds its libfedrec in the prefix and
#      runs `fedrec sim` with the plug-in named in a config file (by a path
#      relative to that file) and selected by federation.strategy: the run's
#      config, summary and metrics name it and show its 2 rounds;
#   4. the custom program loads the same plug-in beside its own model.
set -uo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/fedrec-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
prefix=$work/prefix

"$CMAKE_COMMAND" --install "$FEDREC_BUILD_DIR" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  fail "cmake --install: $(tail -n 20 "$work/install.log")"
[ -x "$prefix/bin/fedrec" ] || fail "no $prefix/bin/fedrec after cmake --install"
ls "$prefix"/lib*/cmake/fedrec/fedrecConfig.cmake "$prefix"/lib*/cmake/fedrec/fedrecConfigVersion.cmake \
  >/dev/null 2>&1 || fail "no fedrecConfig.cmake / fedrecConfigVersion.cmake under $prefix/lib*/cmake/fedrec"
[ -f "$prefix/include/fedrec/base/version.h" ] || fail "base/version.h is not installed"
[ -f "$prefix/include/fedrec/apps/plugin.h" ] || fail "apps/plugin.h is not installed"

# The installed fedrec uses the installed libfedrec, not the build tree's.
lib=$(ldd "$prefix/bin/fedrec" | awk '/libfedrec\.so/ {print $3}')
case "$lib" in
  "$prefix"/*) ;;
  *) fail "installed fedrec loads libfedrec from '$lib', expected a file under $prefix" ;;
esac

build() {  # <example> <build dir>
  "$CMAKE_COMMAND" -S "$FEDREC_SOURCE_DIR/examples/$1" -B "$2" -G "$CMAKE_GENERATOR" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$CXX" \
    >"$work/$1-configure.log" 2>&1 ||
    fail "configuring examples/$1 against $prefix: $(tail -n 20 "$work/$1-configure.log")"
  "$CMAKE_COMMAND" --build "$2" -j 1 >"$work/$1-build.log" 2>&1 ||
    fail "building examples/$1: $(tail -n 30 "$work/$1-build.log")"
}
build plugin "$work/plugin-build"
plugin=$work/plugin-build/libfedavg_decay.so
[ -f "$plugin" ] || fail "examples/plugin built no libfedavg_decay.so"

# The plug-in's path is relative to the config file.
cat >"$work/job.toml" <<TOML
plugins = ["plugin-build/libfedavg_decay.so"]

[federation]
strategy = "fedavg_decay"

[strategy.fedavg_decay]
decay = 0.5
TOML
small=(--set data.synthetic.users=60 --set data.synthetic.items=80
       --set data.synthetic.ratings=1500 --set federation.sites=3 --set federation.rounds=2
       --set sim.compare_centralized=false --set eval.ranking=false)
cd "$work" || fail "cd $work"
"$prefix/bin/fedrec" sim --config "$work/job.toml" "${small[@]}" --force --set output.dir="$work/run" \
  >"$work/sim.out" 2>"$work/sim.err" ||
  fail "installed fedrec sim with the plug-in exited non-zero: $(tail -n 5 "$work/sim.err")"
summary=$(tail -n 1 "$work/sim.out")
grep -q '"strategy":"fedavg_decay"' <<<"$summary" || fail "the summary names no fedavg_decay: $summary"
grep -q '"rounds":2' <<<"$summary" || fail "the summary shows no 2 rounds: $summary"
grep -qx 'strategy = "fedavg_decay"' "$work/run/config.toml" ||
  fail "the run's config.toml has no strategy = \"fedavg_decay\""
grep -qF "plugins = [\"$plugin\"]" "$work/run/config.toml" ||
  fail "the run's config.toml does not hold the plug-in's absolute path $plugin: $(grep plugins "$work/run/config.toml")"
grep -qx 'decay = 0.5' "$work/run/config.toml" || fail "the run's config.toml lost strategy.fedavg_decay.decay"
[ "$(wc -l <"$work/run/metrics.jsonl")" -eq 2 ] || fail "metrics.jsonl should have 2 rounds"
echo "fedrec sim ran plug-in strategy fedavg_decay from $plugin: $summary"

# The second way: a custom program linking fedrec::fedrec, loading the same plug-in.
build plugin_model "$work/model-build"
rm -rf "$work/bayes-run"
"$work/model-build/bayes_fedrec" sim "${small[@]}" --set model.name=bayes --set eval.ranking=true --set plugins="$plugin" \
  --set federation.strategy=fedavg_decay --set output.dir="$work/bayes-run" \
  >"$work/bayes.out" 2>"$work/bayes.err" ||
  fail "bayes_fedrec sim with the plug-in exited non-zero: $(tail -n 5 "$work/bayes.err")"
summary=$(tail -n 1 "$work/bayes.out")
grep -q '"model":"bayes"' <<<"$summary" || fail "bayes_fedrec's summary names no model bayes: $summary"
grep -q '"strategy":"fedavg_decay"' <<<"$summary" || fail "bayes_fedrec ran no fedavg_decay: $summary"
echo "bayes_fedrec ran model bayes with plug-in strategy fedavg_decay: $summary"
