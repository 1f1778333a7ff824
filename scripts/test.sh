#!/usr/bin/env bash
# Builds vgen and runs the whole test suite (CPU; GPU tests skip where no GPU is found). This
# is what CI runs (.ci/run): it installs what the tests need itself, the Python packages of
# scripts/test-requirements.txt included (the OpenAI SDK), so that no test skips for a
# missing package. VGEN_NO_PIP=1 skips that step (offline machines; those tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [ "${VGEN_NO_PIP:-0}" != 1 ]; then
  if ! python3 -m pip --version > /dev/null 2>&1; then
    echo "installing: python3-pip (apt)"
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  fi
  # Debian's own python3 refuses system-wide installs (PEP 668): install for this user then.
  python3 -m pip install -q -r scripts/test-requirements.txt 2> /dev/null \
    || python3 -m pip install -q --user --break-system-packages -r scripts/test-requirements.txt
  python3 -c "import openai" || { echo "error: the OpenAI SDK is still not importable"; exit 1; }
fi
ctest --test-dir build --output-on-failure -j "$(nproc)"
