#!/usr/bin/env bash
# Installs the Debian packages vgen builds against (Debian 12). Safe to re-run:
# does nothing when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  nlohmann-json3-dev libyaml-cpp-dev libfmt-dev libspdlog-dev libcli11-dev
  libsentencepiece-dev libopenblas-dev libpng-dev libjpeg62-turbo-dev libwebp-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev ffmpeg
  libgtest-dev libsqlite3-dev
  libboost1.81-dev  # the server's HTTP layer: Boost.Beast and Asio (header-only)
  python3-dev
)

# The CUDA backend (built when nvcc is found) needs the header-only cuDNN frontend, from PyPI.
# VGEN_CUDA=OFF (scripts/demo.sh without a GPU): not needed.
if [ "${VGEN_CUDA:-AUTO}" != OFF ] && { command -v nvcc > /dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  if ! python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['purelib'], 'include', 'cudnn_frontend.h')))" 2>/dev/null; then
    echo "installing: nvidia-cudnn-frontend (pip)"
    python3 -m pip install -q nvidia-cudnn-frontend
  fi
  # CUTLASS/CuTe headers for vgen's Hopper kernels: the headers only (--no-deps: the wheel's
  # Python tools need cuda-python, scipy... which the build does not use).
  if ! python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('cutlass_library') is None)" 2>/dev/null; then
    echo "installing: nvidia-cutlass headers (pip)"
    python3 -m pip install -q --no-deps nvidia-cutlass==4.2.0.0
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
