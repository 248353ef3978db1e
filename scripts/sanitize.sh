#!/usr/bin/env bash
# The test suite under a sanitizer (README "Hardening").
#   scripts/sanitize.sh address [ctest arguments...]   ASan + UBSan into build-asan/
#   scripts/sanitize.sh thread  [ctest arguments...]   TSan into build-tsan/
# Builds with -DFEDREC_SANITIZE=<mode> (Release flags, g++, benchmarks off) and
# runs ctest; further arguments go to ctest (e.g. -LE slow, -R Secure).
# Any ASan, LSan or UBSan report fails its test (UBSan does not recover).
# Open MPI's own leaks and races are suppressed by .ci/lsan.supp and
# .ci/tsan.supp, never fedrec's. The thread mode leaves out the tests
# labelled mpi (real mpiexec jobs): Open MPI's shared-memory transport and
# progress threads synchronise through memory TSan cannot see, so it would
# report Open MPI, not fedrec; the in-process distributed tests (every role a
# thread over the in-process transport) are where fedrec's threads meet.
# Prints the build and suite times at the end.
# Environment: BUILD_DIR (default build-asan or build-tsan), JOBS (default:
# number of cores), CTEST_TIMEOUT (default 1800 s per test).
set -euo pipefail

mode=${1:-}
shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
case "$mode" in
  address) build=${BUILD_DIR:-$here/build-asan} ;;
  thread) build=${BUILD_DIR:-$here/build-tsan} ;;
  *)
    echo "usage: $0 address|thread [ctest arguments...]" >&2
    exit 2
    ;;
esac
jobs=${JOBS:-$(nproc)}

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
start=$(date +%s)
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDREC_SANITIZE="$mode" \
  -DFEDREC_BUILD_TESTS=ON -DFEDREC_BUILD_BENCHMARKS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j "$jobs"
built=$(date +%s)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/.ci/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$here/.ci/tsan.supp:halt_on_error=1:second_deadlock_stack=1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The thread mode leaves out the mpi label; ctest takes only the first -LE,
# so one given here is merged into it.
args=("$@")
if [ "$mode" = thread ]; then
  merged=0
  for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    if [ "${args[i]}" = -LE ]; then
      args[i + 1]="mpi|${args[i + 1]}"
      merged=1
    fi
  done
  [ "$merged" = 1 ] || args=(-LE mpi "${args[@]}")
fi
status=0
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout "${CTEST_TIMEOUT:-1800}" \
  "${args[@]}") || status=$?
done_at=$(date +%s)
echo "sanitize.sh $mode: build $((built - start)) s, suite $((done_at - built)) s, exit $status" >&2
exit "$status"
