#!/usr/bin/env bash
# Builds vgen and runs the whole test suite (CPU; GPU tests skip where no GPU is found). This
# is what CI runs (.ci/run): it installs what the tests need itself, the Python packages of
# scripts/test-requirements.txt included (the OpenAI SDK; nanobind, pytest, NumPy, Pillow for the
# Python package), so that no test skips for a missing package. VGEN_NO_PIP=1 skips that step
# (offline machines; those tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python packages first: the build needs nanobind for the Python extension (VGEN_PYTHON).
if [ "${VGEN_NO_PIP:-0}" != 1 ]; then
  if ! python3 -m pip --version > /dev/null 2>&1; then
    echo "installing: python3-pip (apt)"
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  fi
  # Debian's own python3 refuses system-wide installs (PEP 668): install for this user then.
  python3 -m pip install -q -r scripts/test-requirements.txt 2> /dev/null \
    || python3 -m pip install -q --user --break-system-packages -r scripts/test-requirements.txt
  python3 -c "import openai, nanobind, pytest" || { echo "error: scripts/test-requirements.txt is still not importable"; exit 1; }
fi
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
# The server without FFmpeg's libraries (MP4s through the ffmpeg program, PNG thumbnails): its
# end-to-end tests again on such a build. In CI, or with VGEN_TEST_NO_LIBAV=1 (a second build).
if [ "${CI:-}" = true ] || [ "${VGEN_TEST_NO_LIBAV:-0}" = 1 ]; then
  cmake -S . -B build-nolibav -G Ninja -DCMAKE_BUILD_TYPE=Release -DVGEN_BUILD_TESTS=ON -DVGEN_CUDA=OFF \
    -DVGEN_LIBAV=OFF > build-nolibav.configure.log 2>&1 || { cat build-nolibav.configure.log; exit 1; }
  ninja -C build-nolibav -j "$(nproc)" vgen
  echo "serving tests on a build without FFmpeg's libraries (the load test once is enough):"
  ctest --test-dir build-nolibav --output-on-failure -L serving -E serving_load -j 1
fi
