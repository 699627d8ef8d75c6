#!/usr/bin/env bash
# callrec developer entry point: the two commands of the README.
#
#   tools/dev.sh run    install what is missing, build, start callrecd with working defaults
#   tools/dev.sh test   install what is missing, build (normal + ASan/UBSan + fuzz), run every test
#   tools/dev.sh deps   only install the Debian packages
#   tools/dev.sh build  only build (build/)
#
# Environment: BUILD_DIR (default build), JOBS (default nproc), CALLREC_SKIP_DEPS=1 to skip apt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

PACKAGES=(build-essential cmake ninja-build pkg-config git
  libdpdk-dev dpdk dpdk-dev libpcap-dev libtbb-dev libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev sox sip-tester iproute2 iputils-ping ethtool procps liburing-dev
  libspandsp-dev tshark tcpdump tcpreplay sngrep python3-scapy
  libpugixml-dev libsrtp2-dev libssl-dev openssl)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

deps() {
  [ "${CALLREC_SKIP_DEPS:-0}" = 1 ] && return 0
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

configure_build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

build() { configure_build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLREC_WERROR=ON; }

run_tests() {
  local dir=$1
  echo "== tests in $dir"
  (cd "$dir" && ctest --output-on-failure --no-tests=error -j "$JOBS" --timeout 300)
}

fuzz() {
  local dir=${BUILD_DIR}-fuzz
  echo "== fuzz build ($dir)"
  # Only the fuzz targets (and the libraries they link): the test suites already ran twice.
  local targets=()
  for src in tests/fuzz/*_fuzz.cpp; do targets+=("$(basename "$src" .cpp)"); done
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLREC_FUZZ=ON \
    -DCALLREC_BENCH=OFF -DCALLREC_TESTS=ON -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
  cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  local secs=${FUZZ_SECONDS:-30} ran=0
  for f in "$dir"/tests/*_fuzz; do
    [ -x "$f" ] || continue
    ran=$((ran + 1))
    local name corpus
    name=$(basename "$f")
    corpus=$(mktemp -d)
    [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$corpus/"
    # Real RTP streams from the shared captures (third-party data: seeds made here, never committed).
    if [ "$name" = rtp_path_fuzz ] && [ -d ../shared/testdata/captures ] && command -v python3 >/dev/null; then
      python3 tests/fuzz/rtp_seeds_from_captures.py ../shared/testdata/captures "$corpus" || true
    fi
    echo "== fuzzing $name for ${secs}s"
    "$f" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
    rm -rf "$corpus"
  done
  if [ "$ran" -eq 0 ]; then echo "== no fuzz target was built in $dir" >&2; return 1; fi
}

cmd=${1:-help}
case "$cmd" in
  deps) deps ;;
  build) deps; build ;;
  run)
    deps; build
    shift || true
    if [ -x "$BUILD_DIR/tools/callrecd" ]; then
      mkdir -p "${CALLREC_HOME:-$ROOT/var}"
      exec "$BUILD_DIR/tools/callrecd" --storage "${CALLREC_HOME:-$ROOT/var}/recordings" \
        --catalog "${CALLREC_HOME:-$ROOT/var}/catalog.db" \
        --siprec-listen "${CALLREC_SIPREC_LISTEN:-0.0.0.0:5090}" "$@"
    else
      exec "$BUILD_DIR/tools/callrec" --help
    fi ;;
  test)
    deps
    build
    run_tests "$BUILD_DIR"
    echo "== sanitizer build (ASan+UBSan)"
    configure_build "${BUILD_DIR}-asan" -DCMAKE_BUILD_TYPE=Debug -DCALLREC_SANITIZE=ON -DCALLREC_BENCH=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_tests "${BUILD_DIR}-asan"
    fuzz
    echo "== all tests passed" ;;
  *) sed -n '2,12p' "$0"; [ "$cmd" = help ] || exit 2 ;;
esac
