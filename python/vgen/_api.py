"""VisualGen, VisualGenArgs, VisualGenParams: vgen's C++ API with TensorRT-LLM VisualGen's names."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _vgen
from ._media import as_rgb_array

Error = _vgen.Error
Cancelled = _vgen.Cancelled

# The engine YAML's sections (`vgen serve --config`, src/config/engine_config.h). VisualGenArgs
# takes each as a dict, e.g. attention={"backend": "cudnn"}; the C++ parser checks the keys and
# values, so a section or key added to the YAML config works here unchanged (any keyword that is
# not a field of VisualGenArgs is passed on as a section).
ENGINE_SECTIONS_DOC = "quant_config, cache_config, parallel_config, attention, cuda_graph, conv, offload"


def _lora_list(name: str, value: Any) -> List[Tuple[str, float]]:
    """LoRA adapters as (path, scale): "FILE", "FILE:SCALE", (FILE, SCALE) or a list of those."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)) or (isinstance(value, tuple) and len(value) == 2
                                                  and not isinstance(value[1], (str, os.PathLike, tuple))):
        value = [value]
    out = []
    for i, item in enumerate(value):
        if isinstance(item, tuple):
            if len(item) != 2:
                raise Error(f"{name}[{i}]: expected (path, scale), got {item!r}")
            path, scale = item
        else:
            text = os.fspath(item)
            path, scale = text, 1.0
            head, sep, tail = text.rpartition(":")
            if sep and head:
                try:
                    path, scale = head, float(tail)
                except ValueError:
                    path, scale = text, 1.0
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise Error(f"{name}[{i}]: the scale must be a number, got {scale!r}") from None
        out.append((os.fspath(path), scale))
    return out


class VisualGenArgs:
    """Engine options: where and how the model runs (not what a request generates).

    Keywords:
      device: "auto" (a GPU when one is usable, else the CPU), "cpu", "cuda", "cuda:N".
      dtype: compute dtype of the transformer and text encoder, "bf16" | "fp16" | "fp32"
        (None: bf16 on a GPU, fp32 on the CPU). vae_dtype: the VAE's (None: the model family's default,
        fp32 for Wan and the compute dtype for FLUX, as diffusers' examples run them).
      lora, lora_2: LoRA adapters fused at load (transformer, and transformer_2 of a two-expert
        model): "FILE", "FILE:SCALE", (FILE, SCALE) or a list of those.
      lora_ignore_unmatched, lora_cached_variants: as `vgen generate` / `vgen serve`.
      scheduler, flow_shift: override the checkpoint's scheduler (as `--scheduler`, `--flow-shift`).
      quant_config, cache_config, parallel_config, attention, cuda_graph, conv, gemm, offload, vae: the engine
        YAML's sections as dicts (same keys, defaults and validation as `vgen serve --config`), e.g.
        attention={"backend": "cudnn"}, cuda_graph={"enabled": False},
        offload={"text_encoder": True}, vae={"chunk_frames": 2}. Any other keyword is passed on as a section, so the
        YAML parser accepts or rejects it (naming it).
    Shortcuts: attention_backend="cudnn", cuda_graphs=False, conv_autotune=True,
      gemm_autotune=False, offload_text_encoder=True, offload_idle_expert=True set the same keys.
    """

    _SHORTCUTS = {
        "attention_backend": ("attention", "backend"),
        "cuda_graphs": ("cuda_graph", "enabled"),
        "conv_autotune": ("conv", "autotune"),
        "gemm_autotune": ("gemm", "autotune"),
        "offload_text_encoder": ("offload", "text_encoder"),
        "offload_idle_expert": ("offload", "idle_expert"),
    }

    def __init__(self, device: str = "auto", dtype: Optional[str] = None, vae_dtype: Optional[str] = None,
                 lora: Any = None, lora_2: Any = None, lora_ignore_unmatched: bool = False,
                 lora_cached_variants: int = 1, scheduler: Optional[str] = None,
                 flow_shift: Optional[float] = None, **engine: Any):
        self.device = device
        self.dtype = dtype
        self.vae_dtype = vae_dtype
        self.lora = _lora_list("lora", lora)
        self.lora_2 = _lora_list("lora_2", lora_2)
        self.lora_ignore_unmatched = bool(lora_ignore_unmatched)
        self.lora_cached_variants = lora_cached_variants
        self.scheduler = scheduler
        self.flow_shift = flow_shift
        sections: Dict[str, Any] = {}
        for key, value in engine.items():
            if key in self._SHORTCUTS:
                section, name = self._SHORTCUTS[key]
                sections.setdefault(section, {})
                if not isinstance(sections[section], dict):
                    raise Error(f"VisualGenArgs: {key} and {section}= both given")
                sections[section][name] = value
            elif isinstance(value, Mapping) and isinstance(sections.get(key), dict):
                sections[key].update(value)
            else:
                sections[key] = dict(value) if isinstance(value, Mapping) else value
        self.engine_config = sections

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike], **kwargs: Any) -> "VisualGenArgs":
        """The engine sections from a `vgen serve --config` YAML file (needs PyYAML), plus kwargs."""
        import yaml  # only for this constructor

        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise Error(f"{os.fspath(path)}: the top level must be a mapping of sections")
        return cls(**{**doc, **kwargs})

    def to_dict(self) -> Dict[str, Any]:
        """The engine sections as the YAML config spells them."""
        return json.loads(json.dumps(self.engine_config))

    def _options(self):
        try:
            engine_json = json.dumps(self.engine_config, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise Error(f"VisualGenArgs: a value is not a YAML scalar, list or mapping: {e}") from None
        return _vgen.make_options(self.device, self.dtype, self.vae_dtype, engine_json, self.lora, self.lora_2,
                                  self.lora_ignore_unmatched, int(self.lora_cached_variants), self.scheduler,
                                  None if self.flow_shift is None else float(self.flow_shift))

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if k != "engine_config"}
        fields.update(self.engine_config)
        return "VisualGenArgs(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


@dataclass
class VisualGenParams:
    """What a request generates, named as diffusers names it. None: the model family's default
    (VisualGen.capabilities lists them; the same defaults as `vgen generate`)."""

    height: Optional[int] = None
    width: Optional[int] = None
    num_frames: Optional[int] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    guidance_scale_2: Optional[float] = None  # two-expert models: the low-noise expert's
    negative_prompt: Optional[str] = None     # None: the model's default; "" is the empty prompt
    seed: Optional[int] = 0                   # 0 .. 2**64-1; None or -1 draws one (output.seed)
    guidance_rescale: float = 0.0
    max_sequence_length: Optional[int] = None
    timesteps: Optional[Sequence[float]] = None
    sigmas: Optional[Sequence[float]] = None
    boundary_step: Optional[int] = None
    num_videos_per_prompt: int = 1            # videos k = 0.. of a prompt use seed + k
    batch_size: int = 1                       # videos through the transformer together
    latents: Any = None                       # float32 array, diffusers' latents=

    def replace(self, **changes: Any) -> "VisualGenParams":
        return dataclasses.replace(self, **changes)


@dataclass
class VisualGenOutput:
    """One generated video (or image: num_frames 1)."""

    video: Any                       # numpy uint8 [F, H, W, 3], sharing the engine's memory
    fps: float                       # the model's frame rate
    seed: int
    params: Dict[str, Any]           # what ran: every parameter after defaults
    timings: Dict[str, float]        # seconds per phase (encode_prompt, denoise, decode, ...)
    metadata: List[Tuple[str, str]] = field(repr=False, default_factory=list)  # written by save()

    @property
    def frames(self):
        return self.video

    @property
    def image(self):
        """The first frame, uint8 [H, W, 3] (the image of a num_frames=1 generation)."""
        return self.video[0]

    def save(self, path: Union[str, os.PathLike], fps: Optional[float] = None, **kwargs: Any) -> str:
        """Writes the video (.mp4) or, for one frame, the image (.png/.jpg/.webp), with the
        generation metadata that `vgen info FILE` shows."""
        from ._media import save_image, save_video

        path = os.fspath(path)
        metadata = self.metadata
        if fps is not None:
            metadata = [(k, f"{fps:g}" if k == "fps" else v) for k, v in metadata]
        if os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg", ".webp"):
            if self.video.shape[0] != 1:
                raise Error(f"{path}: an image output needs num_frames 1 (got {self.video.shape[0]})")
            return save_image(self.image, path, metadata=metadata, **kwargs)
        return save_video(self.video, path, fps or self.fps, metadata=metadata, **kwargs)


Inputs = Union[str, Mapping[str, Any], Sequence[Union[str, Mapping[str, Any]]]]
ProgressCallback = Callable[[int, int], Optional[bool]]


class VisualGen:
    """A loaded model: `VisualGen(model_path, args=VisualGenArgs(...))`.

    model_path: a diffusers checkpoint folder (with model_index.json) or a Hugging Face repo id
    found in the Hugging Face cache. Loading and generation release the GIL.
    """

    def __init__(self, model_path: Union[str, os.PathLike], args: Optional[VisualGenArgs] = None):
        self.args = args if args is not None else VisualGenArgs()
        if not isinstance(self.args, VisualGenArgs):
            raise Error(f"args: expected VisualGenArgs, got {type(self.args).__name__}")
        self.model = os.fspath(model_path)
        self.options = self.args._options()
        t0 = time.perf_counter()
        self._gen = _vgen.VisualGen(self.model, self.options)
        self.load_seconds = time.perf_counter() - t0

    @property
    def capabilities(self) -> Dict[str, Any]:
        """Tasks, accepted inputs, the frame grid, size multiple and every default."""
        return self._gen.capabilities

    def describe(self) -> Dict[str, str]:
        """What was loaded (components, sizes, dtypes, device), as `vgen info` prints it."""
        return dict(self._gen.describe)

    def prompt_token_count(self, prompt: str) -> Optional[int]:
        return self._gen.prompt_token_count(prompt)

    def cancel(self) -> None:
        """Cancels the running generate() (from another thread) at the next denoising step."""
        self._gen.cancel()

    def _requests(self, inputs: Inputs, params: VisualGenParams):
        if isinstance(inputs, (str, Mapping)):
            items = [inputs]
        elif isinstance(inputs, Sequence) and len(inputs) > 0:
            items = list(inputs)
        else:
            raise Error("inputs: expected a prompt, a list of prompts or a dict with 'prompt' "
                        f"(and 'image', 'last_image'), got {inputs!r}")
        seed = params.seed
        if seed is None or seed == -1:
            seed = _vgen.random_seed()
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise Error(f"seed: must be an integer 0 to 2^64-1 (or -1 / None for a random one), got {seed!r}")
        per_prompt = params.num_videos_per_prompt
        if not isinstance(per_prompt, int) or not 1 <= per_prompt <= 1000:
            raise Error(f"num_videos_per_prompt: must be 1 to 1000, got {per_prompt!r}")
        requests = []
        k = 0
        for i, item in enumerate(items):
            where = "inputs" if len(items) == 1 else f"inputs[{i}]"
            if isinstance(item, str):
                item = {"prompt": item}
            if not isinstance(item, Mapping):
                raise Error(f"{where}: expected a prompt or a dict with 'prompt', got {type(item).__name__}")
            unknown = set(item) - {"prompt", "negative_prompt", "image", "last_image"}
            if unknown:
                raise Error(f"{where}: unknown key(s) {sorted(unknown)} (accepted: prompt, negative_prompt, "
                            "image, last_image)")
            prompt = item.get("prompt")
            if not isinstance(prompt, str):
                raise Error(f"{where}.prompt: expected a string, got {prompt!r}")
            for _ in range(per_prompt):
                p = _vgen.GenerationParams()
                p.prompt = prompt
                negative = item.get("negative_prompt", params.negative_prompt)
                p.negative_prompt = negative
                for name in ("height", "width", "num_frames", "num_inference_steps", "guidance_scale",
                             "guidance_scale_2", "max_sequence_length", "boundary_step"):
                    value = getattr(params, name)
                    if value is not None:
                        try:
                            setattr(p, name, value)
                        except TypeError:
                            kind = "a number" if name.startswith("guidance") else "an integer"
                            raise Error(f"{name}: expected {kind}, got {value!r}") from None
                p.guidance_rescale = float(params.guidance_rescale)
                if params.timesteps is not None:
                    p.timesteps = [float(t) for t in params.timesteps]
                if params.sigmas is not None:
                    p.sigmas = [float(s) for s in params.sigmas]
                p.seed = (seed + k) % 2**64
                for key, setter in (("image", p.set_image), ("last_image", p.set_last_image)):
                    if item.get(key) is not None:
                        setter(as_rgb_array(item[key], f"{where}.{key}"))
                if item.get("last_image") is not None and item.get("image") is None:
                    raise Error(f"{where}.last_image needs image (the first frame) too")
                if params.latents is not None:
                    import numpy as np

                    p.set_latents(np.ascontiguousarray(params.latents, dtype=np.float32))
                requests.append(self._gen.resolve(p))
                k += 1
        return requests

    def resolve(self, inputs: Inputs, params: Optional[VisualGenParams] = None) -> List[Dict[str, Any]]:
        """The parameters each request would run with (defaults applied, everything validated)."""
        return [r.as_dict() for r in self._requests(inputs, params or VisualGenParams())]

    def generate(self, inputs: Inputs, params: Optional[VisualGenParams] = None,
                 callback: Optional[ProgressCallback] = None
                 ) -> Union[VisualGenOutput, List[VisualGenOutput]]:
        """Generates from a prompt, a dict {"prompt", "image", "last_image", "negative_prompt"}
        (images as NumPy uint8 [H, W, 3] arrays, PIL images or file paths) or a list of them.

        Returns one VisualGenOutput for a single input and num_videos_per_prompt 1, else a list
        (prompt-major). callback(step, total) is called after each denoising step; returning
        False (or raising) cancels: vgen.Cancelled (or the callback's exception) is raised.
        """
        params = params or VisualGenParams()
        if not isinstance(params, VisualGenParams):
            raise Error(f"params: expected VisualGenParams, got {type(params).__name__}")
        if not isinstance(params.batch_size, int) or not 1 <= params.batch_size <= 64:
            raise Error(f"batch_size: must be 1 to 64, got {params.batch_size!r}")
        if callback is not None and not callable(callback):
            raise Error(f"callback: expected a callable (step, total), got {type(callback).__name__}")
        requests = self._requests(inputs, params)
        outs = self._gen.generate(requests, params.batch_size, callback)
        results = []
        for r, o in zip(requests, outs):
            results.append(VisualGenOutput(video=o.frames(), fps=o.fps, seed=r.seed, params=r.as_dict(),
                                           timings=dict(o.timings), metadata=self._gen.metadata(r, o.fps)))
        single = isinstance(inputs, (str, Mapping)) and params.num_videos_per_prompt == 1
        return results[0] if single else results

    __call__ = generate
