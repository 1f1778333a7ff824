"""Generate a video (or, with --num-frames 1, an image) from Python with vgen.

    pip install .                                   # from the repository root
    python examples/python/generate.py tests/fixtures/wan21_t2v_tiny out.mp4
    python examples/python/generate.py Wan-AI/Wan2.1-T2V-1.3B-Diffusers cat.mp4 \\
        --prompt "A cat walks on the grass, realistic" --num-frames 33 --seed 42
    python examples/python/generate.py Wan-AI/Wan2.1-I2V-14B-480P-Diffusers cat.mp4 --image cat.png

MODEL is a diffusers checkpoint folder or a Hugging Face repo id in the Hugging Face cache.
Ctrl-C cancels between denoising steps (the callback raises KeyboardInterrupt).
"""

import argparse
import sys

import vgen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("output", help=".mp4, or .png/.jpg/.webp with --num-frames 1")
    ap.add_argument("--prompt", default="a red fox in the snow")
    ap.add_argument("--image", help="first frame (image-to-video models): PNG, JPEG or WebP")
    ap.add_argument("--height", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--num-frames", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int, default=0, help="-1 draws one (printed)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    gen = vgen.VisualGen(a.model, args=vgen.VisualGenArgs(device=a.device))
    print(f"loaded {a.model} in {gen.load_seconds:.1f}s on {gen.options.device} ({gen.options.dtype})", file=sys.stderr)
    params = vgen.VisualGenParams(height=a.height, width=a.width, num_frames=a.num_frames,
                                  num_inference_steps=a.steps, seed=a.seed)
    inputs = {"prompt": a.prompt}
    if a.image:
        from PIL import Image  # NumPy arrays and file paths work too

        inputs["image"] = Image.open(a.image)

    def progress(step: int, total: int) -> bool:
        print(f"\rstep {step}/{total}", end="" if step < total else "\n", file=sys.stderr)
        return True  # False cancels (vgen.Cancelled)

    try:
        out = gen.generate(inputs=inputs, params=params, callback=progress)
    except vgen.Error as e:  # the same messages as `vgen generate`
        print(f"error: {e}", file=sys.stderr)
        return 1
    f, h, w, _ = out.video.shape  # numpy uint8 [F, H, W, 3]
    print(f"{f} frames of {w}x{h}, seed {out.seed}, timings {out.timings}", file=sys.stderr)
    print(out.save(a.output))  # with the generation metadata (`vgen info FILE` shows it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
