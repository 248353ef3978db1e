#!/usr/bin/env bash
# fedrec quick start on Debian 12.
#   scripts/quickstart.sh demo   install what is missing, build, run the demo federation
#   scripts/quickstart.sh test   install what is missing, build, run the whole test suite
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail

mode=${1:-demo}
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$here/build}
jobs=${JOBS:-$(nproc)}

packages=(g++ cmake ninja-build pkg-config libeigen3-dev libcereal-dev libssl-dev
  libopenmpi-dev openmpi-bin libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev nlohmann-json3-dev)
# The test suite also renders `fedrec report` in headless Chromium.
if [ "$mode" = test ]; then packages+=(chromium); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "quickstart: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

case "$mode" in
  demo)
    cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DFEDREC_BUILD_TESTS=OFF -DFEDREC_BUILD_BENCHMARKS=OFF >/dev/null
    cmake --build "$build" -j "$jobs" --target fedrec
    cd "$build"
    ./fedrec sim
    ;;
  test)
    cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DFEDREC_BUILD_TESTS=ON -DFEDREC_BUILD_BENCHMARKS=ON >/dev/null
    cmake --build "$build" -j "$jobs"
    cd "$build"
    ctest --output-on-failure -j "$jobs" --timeout 900
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
