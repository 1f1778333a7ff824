#!/usr/bin/env bash
# Sets up vgen and generates a video. With no argument it uses the tiny random-weight
# Wan2.1 model shipped in tests/fixtures (the output is noise-like by design: the weights
# are random); give a real checkpoint folder to get a real video:
#   scripts/demo.sh                                   # tiny model -> output.mp4
#   scripts/demo.sh /models/Wan2.1-T2V-1.3B-Diffusers "a cat surfing a wave"
#
# It builds only what the demo needs: the vgen program (no test suite), for the CPU when no
# GPU is usable here, else with the CUDA backend for this GPU's architecture only (the full
# build compiles three GPU targets). scripts/test.sh builds the rest into the same build/.
set -euo pipefail
cd "$(dirname "$0")/.."

cuda_args=(-DVGEN_CUDA=OFF)
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU' \
   && { command -v nvcc > /dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  # "9.0" -> 90a (Hopper's wgmma kernels need the 'a' target), "8.6" -> 86, "10.0" -> 100.
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
  [ "$cap" = "90" ] && cap=90a
  echo "demo: GPU found (sm_$cap): building the CUDA backend for it only"
  cuda_args=(-DVGEN_CUDA=ON "-DVGEN_CUDA_ARCHS=$cap")
  command -v nvcc > /dev/null 2>&1 || export PATH=/usr/local/cuda/bin:$PATH
else
  echo "demo: no usable GPU (nvidia-smi -L finds none): building for the CPU"
  export VGEN_CUDA=OFF  # install-deps.sh: no cuDNN frontend needed
fi
VGEN_TARGETS=vgen bash scripts/build.sh -DVGEN_BUILD_TESTS=OFF "${cuda_args[@]}"

MODEL="${1:-tests/fixtures/wan21_t2v_tiny}"
PROMPT="${2:-A cat walks on the grass, realistic}"
if [ $# -eq 0 ]; then
  # Small enough to run in seconds on a laptop CPU.
  exec ./build/vgen generate --model "$MODEL" --prompt "$PROMPT" --height 64 --width 96 --num-frames 17 \
    --steps 10 --seed 42 --output output.mp4
fi
exec ./build/vgen generate --model "$MODEL" --prompt "$PROMPT" --output output.mp4
