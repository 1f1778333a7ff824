"""Images and videos in and out: NumPy uint8 arrays or PIL images; MP4/PNG/JPEG/WebP writers."""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _vgen

Metadata = Optional[Sequence[Tuple[str, str]]]


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def as_rgb_array(image: Any, what: str = "image") -> np.ndarray:
    """An image as uint8 [H, W, 3]: a NumPy array of that shape, a PIL image (converted with
    .convert("RGB"), as diffusers does) or a PNG/JPEG/WebP path (decoded as PIL decodes it)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if _is_pil(image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise _vgen.Error(f"{what}: expected a NumPy uint8 array [H, W, 3], a PIL image or a file path, "
                          f"got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise _vgen.Error(f"{what}: expected dtype uint8, got {image.dtype} (scale to 0..255 and use .astype(np.uint8))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise _vgen.Error(f"{what}: expected shape [H, W, 3] (RGB), got {list(image.shape)}")
    return np.ascontiguousarray(image)


def as_frames(frames: Any, what: str = "frames") -> np.ndarray:
    """Frames as uint8 [F, H, W, 3]: such an array, a VisualGenOutput, or a list of images."""
    if hasattr(frames, "video") and hasattr(frames, "fps"):
        frames = frames.video
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise _vgen.Error(f"{what}: expected dtype uint8, got {frames.dtype}")
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise _vgen.Error(f"{what}: expected shape [F, H, W, 3] (RGB), got {list(frames.shape)}")
        return np.ascontiguousarray(frames)
    if isinstance(frames, Iterable):
        images = [as_rgb_array(f, f"{what}[{i}]") for i, f in enumerate(frames)]
        if not images:
            raise _vgen.Error(f"{what}: no frames")
        if any(im.shape != images[0].shape for im in images):
            raise _vgen.Error(f"{what}: the frames differ in size")
        return np.stack(images)
    raise _vgen.Error(f"{what}: expected a uint8 array [F, H, W, 3] or a list of images, got {type(frames).__name__}")


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decodes PNG, JPEG or WebP as PIL's Image.open(path).convert("RGB") does: uint8 [H, W, 3]."""
    return _vgen.read_image(os.fspath(path))


def save_video(frames: Any, path: Union[str, os.PathLike], fps: float, crf: int = 18, preset: str = "medium",
               metadata: Metadata = None) -> str:
    """Writes frames (uint8 [F, H, W, 3], a list of images, or a VisualGenOutput) as an H.264 MP4
    (yuv420p, libx264 `crf` and `preset` as `vgen generate --crf --preset`). Returns the path."""
    path = os.fspath(path)
    _vgen.write_mp4(path, as_frames(frames), float(fps), int(crf), preset, list(metadata or []))
    return path


def save_image(image: Any, path: Union[str, os.PathLike], quality: int = 90, metadata: Metadata = None) -> str:
    """Writes an image (uint8 [H, W, 3] or a PIL image) as PNG (lossless, metadata as text
    chunks), JPEG or WebP (`quality` 1..100) by the extension. Returns the path."""
    path = os.fspath(path)
    _vgen.write_image(path, as_rgb_array(image), int(quality), list(metadata or []))
    return path


def to_pil(frames: Any) -> List[Any]:
    """Frames (or one image) as a list of PIL images (needs Pillow)."""
    from PIL import Image

    return [Image.fromarray(f) for f in as_frames(frames)]
