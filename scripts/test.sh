#!/usr/bin/env bash
# Builds vgen and runs the whole test suite (CPU; GPU tests skip where no GPU is found).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
