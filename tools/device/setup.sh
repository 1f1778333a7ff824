#!/usr/bin/env bash
# Bootstraps the lent GPU machine of this workplace (Ubuntu 24.04 with CUDA, cuDNN, PyTorch,
# no network) for scripts/gpu-test.sh and tools/bench: what it lacks travels in .devdeps/
# and .whl/ (both ignored by git; see tools/device/README.md). Prints the exports to eval.
set -euo pipefail
cd "$(dirname "$0")/../.."
# -dev packages from Debian 12 (Boost's headers for the server's HTTP layer, sqlite3, libjpeg,
# libwebp): plain files, safe in /.
for f in .devdeps/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
# A static ffmpeg (with libx264) for MP4s: this machine has no FFmpeg libraries.
# Optional (see the carry budget in README.md): without it, runs that write MP4s fail.
if ls .devdeps/imageio_ffmpeg-*.whl > /dev/null 2>&1; then
  mkdir -p /tmp/vgen-ffmpeg
  python3 -c "import zipfile,glob; zipfile.ZipFile(glob.glob('.devdeps/imageio_ffmpeg-*.whl')[0]).extractall('/tmp/vgen-ffmpeg')"
  chmod +x /tmp/vgen-ffmpeg/imageio_ffmpeg/binaries/ffmpeg-*
  ln -sf /tmp/vgen-ffmpeg/imageio_ffmpeg/binaries/ffmpeg-* /usr/local/bin/ffmpeg
else
  echo "setup.sh: no .devdeps/imageio_ffmpeg-*.whl: no ffmpeg (MP4 writes will fail)" >&2
fi
# diffusers for the references and the benchmark.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# CUTLASS/CuTe headers (nvidia-cutlass's include/, packed: the carry is small).
mkdir -p .devdeps/cutlass && tar xJf .devdeps/cutlass_include.tar.xz -C .devdeps/cutlass
echo "export PYTHONPATH=/tmp/site VGEN_CMAKE_ARGS='-DVGEN_CUDNN_FRONTEND_INCLUDE=$PWD/.devdeps/cudnn_frontend/include -DVGEN_CUTLASS_INCLUDE=$PWD/.devdeps/cutlass/include'"
