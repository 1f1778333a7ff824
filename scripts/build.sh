#!/usr/bin/env bash
# Configures and builds vgen into build/ (Release): everything, the test suite included, with
# the CUDA backend when nvcc is found. Extra arguments go to cmake (they override these);
# VGEN_TARGETS names the targets to build (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Explicit defaults: build/ may hold a cache configured by scripts/demo.sh (no tests, CPU only).
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVGEN_BUILD_TESTS=ON -DVGEN_CUDA=AUTO "$@" \
  > build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
rm -f build-configure.log
# shellcheck disable=SC2086
ninja -C build -j "$(nproc)" ${VGEN_TARGETS:-}
