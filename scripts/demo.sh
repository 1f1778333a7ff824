#!/usr/bin/env bash
# Sets up vgen and generates a video. With no argument it uses the tiny random-weight
# Wan2.1 model shipped in tests/fixtures (the output is noise-like by design: the weights
# are random); give a real checkpoint folder to get a real video:
#   scripts/demo.sh                                   # tiny model -> output.mp4
#   scripts/demo.sh /models/Wan2.1-T2V-1.3B-Diffusers "a cat surfing a wave"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
MODEL="${1:-tests/fixtures/wan21_t2v_tiny}"
PROMPT="${2:-A cat walks on the grass, realistic}"
if [ $# -eq 0 ]; then
  # Small enough to run in seconds on a laptop CPU.
  exec ./build/vgen generate --model "$MODEL" --prompt "$PROMPT" --height 64 --width 96 --num-frames 17 \
    --steps 10 --seed 42 --output output.mp4
fi
exec ./build/vgen generate --model "$MODEL" --prompt "$PROMPT" --output output.mp4
