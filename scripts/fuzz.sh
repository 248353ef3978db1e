#!/usr/bin/env bash
# Long fuzzing runs with libFuzzer (clang; README "Hardening").
#   scripts/fuzz.sh [target|all] [seconds]
# Builds the fuzz targets with clang, ASan and UBSan into build-fuzz/ (or
# $BUILD_DIR), then runs each chosen target for `seconds` (default 60) from
# its checked-in corpus (fuzz/corpus/<target>) plus what earlier runs found
# (build-fuzz/corpus/<target>), with -rss_limit_mb=2048. A crash, leak,
# out-of-memory or broken property stops the run and leaves the input in
# build-fuzz/artifacts/<target>/; fix the bug, then add the input to
# fuzz/corpus/<target> so CTest's Fuzz.<target>.Replay replays it.
# Prints each target's executions and the total at the end.
# Environment: CXX (default clang++), FUZZ_FLAGS (extra libFuzzer flags).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$here/build-fuzz}
targets_all=(frame messages ps_messages channel prg ratings features config)
target=${1:-all}
seconds=${2:-60}
if [ "$target" = all ]; then
  targets=("${targets_all[@]}")
elif [[ " ${targets_all[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  echo "fuzz.sh: unknown target '$target'; targets: all ${targets_all[*]}" >&2
  exit 2
fi

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="${CXX:-clang++}" -DFEDREC_FUZZ=ON \
  -DFEDREC_BUILD_TESTS=OFF -DFEDREC_BUILD_BENCHMARKS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
declare -A runs
total=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  log="$build/fuzz-$t.log"
  echo "fuzz.sh: $t for ${seconds}s (log: $log)" >&2
  status=0
  "$build/fuzz/fuzz_$t" "$build/corpus/$t" "$here/fuzz/corpus/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=30 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" ${FUZZ_FLAGS:-} \
    >"$log" 2>&1 || status=$?
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  runs[$t]=${n:-0}
  total=$((total + ${n:-0}))
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $t failed after ${n:-?} executions; inputs in $build/artifacts/$t/" >&2
    exit 1
  fi
done
for t in "${targets[@]}"; do printf '%-12s %12s executions\n' "$t" "${runs[$t]}"; done
printf '%-12s %12s executions\n' total "$total"
