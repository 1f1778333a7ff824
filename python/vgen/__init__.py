"""vgen: diffusion-transformer video and image generation (diffusers checkpoints) from Python.

    import vgen
    gen = vgen.VisualGen("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", args=vgen.VisualGenArgs(device="auto"))
    out = gen.generate("A cat walks on the grass", params=vgen.VisualGenParams(num_frames=33, seed=42))
    vgen.save_video(out.video, "cat.mp4", fps=out.fps)    # out.video: numpy uint8 [F, H, W, 3]
"""

from . import _vgen
from ._api import (Cancelled, Error, VisualGen, VisualGenArgs, VisualGenOutput, VisualGenParams)
from ._media import read_image, save_image, save_video, to_pil

__version__ = _vgen.__version__
resolve_model_path = _vgen.resolve_model_path
random_seed = _vgen.random_seed

__all__ = [
    "VisualGen", "VisualGenArgs", "VisualGenParams", "VisualGenOutput", "Error", "Cancelled",
    "save_video", "save_image", "read_image", "to_pil", "resolve_model_path", "random_seed",
]
