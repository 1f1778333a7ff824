"""vgen against diffusers, in one run on one GPU, on the same random weights and shapes.

Each part builds a random-weight model at the real Wan2.1 shapes, saves it as a diffusers
checkpoint, times diffusers (PyTorch eager, bf16, as ../shared/bench/peer_diffusers.py does),
frees the GPU, then times `vgen bench` on the saved checkpoint, and prints both with the ratio
vgen / diffusers. Peak memory: torch.cuda.max_memory_allocated for diffusers, vgen's allocator
high-water mark for vgen (both count tensors only, not the CUDA context or library workspaces).

    PYTHONPATH=<diffusers> python3 tools/bench/bench_wan.py --vgen build/vgen [parts...]

parts: attn, wan13 (1.3B forward 480x832x81 + accuracy against a float32 reference), vae,
e2e (1.3B text-to-MP4, 50 steps), wan14 (14B forward 720x1280x81), acc13 (the accuracy check
alone: fails when vgen's bf16 error against float32 exceeds diffusers' bf16 run's; no timing).
Image-to-video and Wan2.2: ti2v5b (TI2V-5B forward 704x1280x121 + accuracy), vae22 (Wan2.2
VAE decode 704x1280x121 + accuracy), vae_encode (Wan2.1 VAE encode of one 720p frame), clip
(CLIP ViT-H/14 image encode), i2v14 (A14B-shaped image-to-video, two experts, a few steps,
480x832x81 end to end; --i2v-layers sets the layers per expert, 40 in the real model).
LoRA: lora14 (Wan2.1 T2V 14B shape, a random rank-64 LoRA fused at load, the 4-step no-CFG
recipe end to end at 480x832x81; vgen's speedup over its own 50-step CFG run; LoRA load + merge).
Step caching: cache (1.3B-shaped text-to-video 480x832x81 with CFG, --cache-steps steps: each
cache at two thresholds (TaylorSeer: two cache_intervals) and a fixed skip schedule; calls
skipped, time against diffusers uncached and with the same cache, final-latent relative L2 and
frame PSNR against vgen uncached).
quant: the quantized linear layers (FP8, FP8_BLOCK_SCALES, NVFP4, quantized while loading) on the
1.3B (480x832x81, all 30 layers) and 14B (720x1280x81, --quant-layers14 layers of 40, default 4:
the 14B width at its real token count, fewer layers so the whole part stays within a few
minutes): forward time, peak memory and weights memory of each format against diffusers bf16 on
the same random weights, and each one's error against the float32 forward beside diffusers bf16's;
the FP8 formats once more with --no-quant-fast-accum (rows *_no_fast_accum; fast accumulation is
their default).
Several GPUs: multigpu (seconds per step on 1, 2 and 4 GPUs through `vgen launch`: 14B width
at 720x1280x81 with CFG parallel / Ulysses, 1.3B width at 480x832x81 with Ulysses / ring; vgen
only, the ratio is the speed-up over one GPU; --par-layers, --par-steps).
FLUX.1: flux (FLUX.1-dev-shaped transformer forward at 1024x1024 with the accuracy of each
against a float32 reference, and the FLUX VAE decode, bf16), flux_e2e (the 28-step text-to-PNG
run end to end with CLIP-L and T5-XXL-shaped encoders); --flux-layers D,S shrinks the transformer.
Quantized attention (--attention-backend sage): attn times it and reports each kernel's error
against float32 on the first 256 query rows; --sage adds a sage run to wan13 / wan14 / ti2v5b
(time; for the 1.3B and 5B also the forward's error against float32 beside the exact run's);
sage_e2e (the 1.3B pipeline, --steps steps, the same noise, exact vs sage: time, final-latent
relative L2, PSNR of the decoded frames).
Default: attn wan13 vae.
--tiny shrinks every shape (a smoke test of this script, CPU or GPU).
"""
import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

RESULTS = []


def gpu_facts():
    """Which physical GPU ran, and its clock and power limits (nvidia-smi; {} without it): lent
    machines of one kind differ by a few percent under the power cap, and the quantized attention
    kernel moves with the machine more than cuDNN does, so figures from two runs compare only when
    they say whether the GPU was the same."""
    fields = ["uuid", "clocks.max.sm", "power.limit"]
    # nvidia-smi numbers the GPUs as the machine does, torch as CUDA_VISIBLE_DEVICES does: ask by
    # torch's UUID of the device (by index only where torch cannot say and nothing is remapped).
    uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", "") or "")
    if uuid:
        gpu = uuid if uuid.startswith("GPU-") else "GPU-" + uuid
    elif not os.environ.get("CUDA_VISIBLE_DEVICES"):
        gpu = str(torch.cuda.current_device())
    else:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits",
                              f"--id={gpu}"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.stdout.strip().split(",")]
    if out.returncode != 0 or len(values) != len(fields):
        return {}
    return {"gpu_" + f.replace(".", "_"): v for f, v in zip(fields, values)}


def log(**kw):
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def free_gpu():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def vgen(args, *cmd):
    """Runs `vgen bench ...` and returns its JSON line."""
    full = [args.vgen, "bench", *map(str, cmd), "--device", args.device]
    t = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr, file=sys.stderr)
        raise SystemExit(f"vgen failed: {' '.join(full)}")
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    out = json.loads(line)
    out["process_s"] = time.perf_counter() - t
    return out


def compare(what, theirs, ours, **extra):
    log(what=what, diffusers_s=theirs["s"], vgen_s=ours["s"], ratio=ours["s"] / theirs["s"],
        diffusers_peak_gib=theirs.get("peak_gib"), vgen_peak_gib=ours.get("peak_gib"), **extra)


def transformer_config(size, tiny):
    if size == "5b":  # Wan2.2 TI2V-5B
        if tiny:
            return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=48,
                        out_channels=48, text_dim=64, freq_dim=32, ffn_dim=96, num_layers=2, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
        return dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
                    out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    if tiny:
        return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
                    text_dim=64, freq_dim=32, ffn_dim=96, num_layers=2, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    heads, layers, ffn = (12, 30, 8960) if size == "1.3b" else (40, 40, 13824)
    return dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=ffn, num_layers=layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def rel_l2(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm())


def part_attn(args):
    """TFLOP/s of torch's cuDNN and flash SDPA and of each vgen kernel, on the Wan shapes:
    self-attention of the 1.3B (S 32760, 12 heads) and the 14B at 720p (S 75600, 40 heads),
    cross-attention to 512 text tokens and to 512 + 257 (I2V)."""
    import torch.nn.functional as F
    shapes = ([(512, 512, 2, 64)] if args.tiny else
              [(32760, 32760, 12, 128), (75600, 75600, 40, 128), (32760, 512, 12, 128), (32760, 769, 40, 128)])
    dev = args.device
    for S, Skv, H, D in shapes:
        q = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(1, H, Skv, D, device=dev, dtype=torch.bfloat16) for _ in range(2))
        flops = 4 * H * S * Skv * D
        theirs = {}
        if dev == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                with sdpa_kernel(be):
                    s = median_time(lambda: F.scaled_dot_product_attention(q, k, v), 3, 20)
                theirs[name] = flops / s / 1e12
        else:
            s = median_time(lambda: F.scaled_dot_product_attention(q, k, v), 1, 3)
            theirs["math"] = flops / s / 1e12
        del q, k, v
        free_gpu()
        ours, errors = {}, {}
        for kernel in (["cudnn", "flash", "sage"] if dev == "cuda" else ["auto"]):
            r = vgen(args, "attention", "--seq", S, "--kv-seq", Skv, "--heads", H, "--head-dim", D, "--iters", 20,
                     "--warmup", 3, "--attention-backend", kernel)
            ours[f"{kernel}->{r['backend']}"] = r["tflops"]
            errors[f"{kernel}->{r['backend']}"] = r["rel_l2_vs_f32"]
        best = max(theirs.values())
        cudnn = next((v for k, v in ours.items() if k.startswith("cudnn")), None)
        log(what="attention_tflops", S=S, S_kv=Skv, H=H, D=D, torch=theirs, vgen=ours,
            ratio_vs_best_torch={k: v / best for k, v in ours.items()},
            ratio_vs_vgen_cudnn={k: v / cudnn for k, v in ours.items()} if cudnn else {},
            rel_l2_vs_f32_first_256_rows=errors)


def part_transformer(args, size, timing=True):
    from diffusers import WanTransformer3DModel
    tiny = args.tiny
    shapes = {"1.3b": (480, 832, 81), "14b": (720, 1280, 81), "5b": (704, 1280, 121)}
    h, w, f = (64, 96, 9) if tiny else shapes[size]
    sp = 16 if size == "5b" else 8  # the Wan2.2 VAE compresses 16x in space
    text_len, dev = (16 if tiny else 512), args.device
    cfg = transformer_config(size, tiny)
    d = os.path.join(args.work, f"wan_{size}")
    torch.manual_seed(0)
    with torch.device(dev):
        m = WanTransformer3DModel(**cfg)
    m = m.to(torch.bfloat16)  # weights rounded to bf16: every run below sees the same values
    m.save_pretrained(d)
    lt = (f - 1) // 4 + 1
    g = torch.Generator(dev).manual_seed(1)
    x = torch.randn(1, cfg["in_channels"], lt, h // sp, w // sp, device=dev, generator=g).to(torch.bfloat16)
    ctx = torch.randn(1, text_len, cfg["text_dim"], device=dev, generator=g).to(torch.bfloat16)
    t = torch.tensor([999.0], device=dev)
    # TI2V (expand_timesteps): diffusers' pipeline passes one timestep per token; vgen's passes
    # one per video when they are all equal (text-to-video), the same numbers.
    t_theirs = t.expand(1, lt * (h // sp // 2) * (w // sp // 2)) if size == "5b" else t
    accuracy = size in ("1.3b", "5b")
    if accuracy:
        from safetensors.torch import save_file
        inputs = os.path.join(args.work, "inputs.safetensors")
        save_file({"hidden_states": x.float().cpu(), "timestep": t.cpu(), "encoder_hidden_states": ctx.float().cpu()}, inputs)
        # float32 reference: the same (bf16-valued) weights and inputs in float32, no TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        m32 = m.float().eval()
        with torch.no_grad():
            ref = m32(x.float(), t_theirs, ctx.float(), return_dict=False)[0].float().cpu()
        del m32
    del m
    free_gpu()
    # diffusers as its users load it: torch_dtype=bf16 keeps its float32 modules in float32.
    m = WanTransformer3DModel.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev).eval()
    with torch.no_grad():
        if accuracy:
            theirs_out = m(x, t_theirs, ctx, return_dict=False)[0].float().cpu()
        free_gpu()
        big = size in ("14b", "5b")
        s = (median_time(lambda: m(x, t_theirs, ctx, return_dict=False), 1 if big else 2, 2 if big else 5)
             if timing else 0.0)
        theirs = {"s": s, "peak_gib": peak_gib()}
        compiled = {}
        if timing and args.compile:
            # The peer as it is deployed: torch.compile'd (default mode), the compile timed apart.
            mc = torch.compile(m)
            t0 = time.perf_counter()
            mc(x, t_theirs, ctx, return_dict=False)
            sync()
            compile_s = time.perf_counter() - t0
            compiled = {"diffusers_compiled_s": median_time(lambda: mc(x, t_theirs, ctx, return_dict=False),
                                                            1 if big else 2, 2 if big else 5),
                        "diffusers_compile_s": compile_s}
            del mc
    del m, x, ctx
    free_gpu()
    iters = ["--iters", 2, "--warmup", 1] if size in ("14b", "5b") else ["--iters", 5, "--warmup", 2]
    common = ["--model", d, "--height", h, "--width", w, "--num-frames", f, "--text-len", text_len,
              "--vae-scale-factor-spatial", sp]
    extra = dict(compiled)
    if timing:
        ours = vgen(args, "transformer", *common, *iters)
        if compiled:
            extra["ratio_vs_compiled"] = ours["s"] / compiled["diffusers_compiled_s"]
        extra.update(tokens=ours["tokens"], attention=ours["attention"],
                     cuda_graph_replays=ours["cuda_graph_replays"])
    if timing and args.sage:  # the quantized attention kernel (opt-in), same weights and inputs
        q = vgen(args, "transformer", *common, *iters, "--attention-backend", "sage")
        extra.update(sage_s=q["s"], sage_ratio=q["s"] / theirs["s"], sage_peak_gib=q["peak_gib"])
        if compiled:
            extra["sage_ratio_vs_compiled"] = q["s"] / compiled["diffusers_compiled_s"]
    if timing and size == "1.3b":  # what the CUDA graph of the step is worth
        eager = vgen(args, "transformer", *common, "--no-cuda-graphs", *iters)
        extra.update(vgen_eager_s=eager["s"])
    if accuracy:
        out_path = os.path.join(args.work, "vgen_out.f32")
        vgen(args, "transformer", *common, "--inputs", inputs, "--save-output", out_path, "--iters", 1, "--warmup", 0)
        import numpy as np
        ours_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(ref.shape)
        extra.update(rel_l2_vs_f32_vgen=rel_l2(ours_out, ref), rel_l2_vs_f32_diffusers_bf16=rel_l2(theirs_out, ref),
                     rel_l2_vgen_vs_diffusers_bf16=rel_l2(ours_out, theirs_out))
        if args.sage:
            vgen(args, "transformer", *common, "--inputs", inputs, "--save-output", out_path, "--iters", 1, "--warmup", 0,
                 "--attention-backend", "sage")
            sage_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(ref.shape)
            extra.update(rel_l2_vs_f32_vgen_sage=rel_l2(sage_out, ref),
                         sage_error_vs_bf16_error=rel_l2(sage_out, ref) / rel_l2(ours_out, ref))
    if timing:
        compare(f"transformer_{size}_forward_{h}x{w}x{f}", theirs, ours, **extra)
    else:
        log(what=f"transformer_{size}_accuracy_{h}x{w}x{f}", **extra)
    if accuracy:
        check_accuracy(f"transformer {size}", extra, strict=not timing)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def part_quant(args):
    """vgen's quantized linear layers against diffusers bf16 (see the module docstring: quant)."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file
    import numpy as np
    tiny, dev = args.tiny, args.device
    for size in args.quant_sizes.split(","):
        if size not in ("1.3b", "14b"):
            raise SystemExit(f"--quant-sizes: unknown size {size!r} (1.3b, 14b)")
        h, w, f = (64, 96, 9) if tiny else {"1.3b": (480, 832, 81), "14b": (720, 1280, 81)}[size]
        text_len = 16 if tiny else 512
        cfg = transformer_config(size, tiny)
        full_layers = cfg["num_layers"]
        if size == "14b" and not tiny:
            cfg["num_layers"] = args.quant_layers14
        d = os.path.join(args.work, f"wan_quant_{size}")
        torch.manual_seed(0)
        with torch.device(dev):
            m = WanTransformer3DModel(**cfg)
        m = m.to(torch.bfloat16)
        m.save_pretrained(d)
        lt = (f - 1) // 4 + 1
        g = torch.Generator(dev).manual_seed(1)
        x = torch.randn(1, cfg["in_channels"], lt, h // 8, w // 8, device=dev, generator=g).to(torch.bfloat16)
        ctx = torch.randn(1, text_len, cfg["text_dim"], device=dev, generator=g).to(torch.bfloat16)
        t = torch.tensor([999.0], device=dev)
        inputs = os.path.join(args.work, "quant_inputs.safetensors")
        save_file({"hidden_states": x.float().cpu(), "timestep": t.cpu(), "encoder_hidden_states": ctx.float().cpu()},
                  inputs)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        m32 = m.float().eval()
        with torch.no_grad():
            ref = m32(x.float(), t, ctx.float(), return_dict=False)[0].float().cpu()
        del m32, m
        free_gpu()
        before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
        m = WanTransformer3DModel.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev).eval()
        weights_gib = ((torch.cuda.memory_allocated() - before) / 2**30 if torch.cuda.is_available()
                       else sum(p.numel() * p.element_size() for p in m.parameters()) / 2**30)
        with torch.no_grad():
            theirs_out = m(x, t, ctx, return_dict=False)[0].float().cpu()
            free_gpu()
            s = median_time(lambda: m(x, t, ctx, return_dict=False), 1, 2 if size == "14b" else 3)
        theirs = {"s": s, "peak_gib": peak_gib(), "weights_gib": weights_gib}
        err_theirs = rel_l2(theirs_out, ref)
        del m, x, ctx
        free_gpu()
        common = ["--model", d, "--height", h, "--width", w, "--num-frames", f, "--text-len", text_len,
                  "--inputs", inputs]
        iters = ["--iters", 2, "--warmup", 1] if size == "14b" else ["--iters", 3, "--warmup", 1]
        # Each FP8 format once more with --no-quant-fast-accum (vgen only: the same diffusers bf16
        # figures, ratio and error columns as the other rows).
        runs = []
        for algo in [None] + [a for a in args.quant_algos.split(",") if a]:
            runs.append((algo, False))
            if algo in ("FP8", "FP8_BLOCK_SCALES"):
                runs.append((algo, True))
        for algo, fast in runs:
            out_path = os.path.join(args.work, "vgen_quant_out.f32")
            quant = (["--quant-algo", algo] if algo else []) + (["--no-quant-fast-accum"] if fast else [])
            ours = vgen(args, "transformer", *common, *quant, "--save-output", out_path, *iters)
            ours_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(ref.shape)
            name = (algo or "bf16") + ("_no_fast_accum" if fast else "")
            compare(f"quant_{size}_{name}_{h}x{w}x{f}", theirs, ours,
                    layers=f"{cfg['num_layers']} of {full_layers}", tokens=ours["tokens"],
                    diffusers_weights_gib=weights_gib, vgen_weights_gib=ours["weights_gib"],
                    weights_ratio=ours["weights_gib"] / weights_gib,
                    rel_l2_vs_f32_vgen=rel_l2(ours_out, ref), rel_l2_vs_f32_diffusers_bf16=err_theirs)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def check_accuracy(what, extra, strict):
    """vgen's bf16 error against the float32 reference may not exceed diffusers' own bf16 run's
    (5% slack for the noise of random data). strict: fail the run (scripts/gpu-test.sh's check)."""
    ok = extra["rel_l2_vs_f32_vgen"] <= 1.05 * extra["rel_l2_vs_f32_diffusers_bf16"]
    print("accuracy %s: vgen rel L2 %.5f vs diffusers bf16 %.5f against float32: %s" % (
        what, extra["rel_l2_vs_f32_vgen"], extra["rel_l2_vs_f32_diffusers_bf16"], "OK" if ok else "WORSE"))
    if strict and not ok:
        raise SystemExit(f"FAILED: vgen's bf16 {what} is less accurate than diffusers' bf16 run")


def random_wan21_vae(args, name, dtype):
    """A random-weight Wan2.1 VAE (real widths unless --tiny) in `dtype`, saved in work/name."""
    from diffusers import AutoencoderKLWan
    d = os.path.join(args.work, name)
    torch.manual_seed(0)
    kw = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if args.tiny else {}
    with torch.device(args.device):
        vae = AutoencoderKLWan(**kw)
    vae = vae.to(dtype).eval()
    vae.save_pretrained(d)
    return vae, d


def part_vae(args):
    h, w, f = (64, 96, 9) if args.tiny else (480, 832, 81)
    dev = args.device
    vae, d = random_wan21_vae(args, "vae", torch.bfloat16)
    lt = (f - 1) // 4 + 1
    z = torch.randn(1, 16, lt, h // 8, w // 8, device=dev, dtype=torch.bfloat16)
    free_gpu()
    with torch.no_grad():
        s = median_time(lambda: vae.decode(z, return_dict=False), 1, 2)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del vae, z
    free_gpu()
    ours = vgen(args, "vae", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--vae-dtype", "bf16",
                "--iters", 2, "--warmup", 1)
    compare(f"vae_decode_{h}x{w}x{f}_bf16", theirs, ours, vgen_first_s=ours.get("first_s"))
    # As vgen serve runs it: convolution engines timed on first use (the first decode pays that).
    tuned = vgen(args, "vae", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--vae-dtype", "bf16",
                 "--iters", 2, "--warmup", 1, "--conv-autotune")
    compare(f"vae_decode_{h}x{w}x{f}_bf16_autotuned", theirs, tuned, vgen_first_s=tuned.get("first_s"))


def part_vae22(args):
    """Wan2.2 VAE (TI2V-5B's) decode at 704x1280x121 in bf16, with the accuracy of both bf16 runs
    against a float32 decode of the same (bf16-valued) weights and latents."""
    from diffusers import AutoencoderKLWan
    import numpy as np
    from safetensors.torch import save_file
    h, w, f = (64, 96, 9) if args.tiny else (704, 1280, 121)
    dev = args.device
    d = os.path.join(args.work, "vae22")
    torch.manual_seed(0)
    kw = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
              temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
              patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
              latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    if args.tiny:
        kw.update(base_dim=16, decoder_base_dim=24, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    with torch.device(dev):
        vae = AutoencoderKLWan(**kw)
    vae = vae.to(torch.bfloat16).eval()
    vae.save_pretrained(d)
    lt = (f - 1) // 4 + 1
    z = torch.randn(1, 48, lt, h // 16, w // 16, device=dev, generator=torch.Generator(dev).manual_seed(1))
    z = z.to(torch.bfloat16)
    inputs = os.path.join(args.work, "vae22_inputs.safetensors")
    save_file({"z": z.float().cpu()}, inputs)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        ref = vae.float().decode(z.float(), return_dict=False)[0].cpu()
        vae = vae.to(torch.bfloat16)
        theirs_out = vae.decode(z, return_dict=False)[0].float().cpu()
        free_gpu()
        s = median_time(lambda: vae.decode(z, return_dict=False), 1, 2)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del vae, z
    free_gpu()
    common = ["--model", d, "--height", h, "--width", w, "--num-frames", f, "--vae-dtype", "bf16"]
    ours = vgen(args, "vae", *common, "--iters", 2, "--warmup", 1)
    out_path = os.path.join(args.work, "vae22_out.f32")
    vgen(args, "vae", *common, "--inputs", inputs, "--save-output", out_path, "--iters", 1, "--warmup", 0)
    ours_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(ref.shape)
    extra = dict(rel_l2_vs_f32_vgen=rel_l2(ours_out, ref), rel_l2_vs_f32_diffusers_bf16=rel_l2(theirs_out, ref),
                 rel_l2_vgen_vs_diffusers_bf16=rel_l2(ours_out, theirs_out))
    compare(f"vae22_decode_{h}x{w}x{f}_bf16", theirs, ours, vgen_first_s=ours.get("first_s"), **extra)
    check_accuracy("Wan2.2 VAE decode", extra, strict=False)
    # As vgen serve runs it: convolution engines timed on first use (the first decode pays that).
    tuned = vgen(args, "vae", *common, "--iters", 2, "--warmup", 1, "--conv-autotune")
    compare(f"vae22_decode_{h}x{w}x{f}_bf16_autotuned", theirs, tuned, vgen_first_s=tuned.get("first_s"))
    # Two latent frames per decoder call after the first (--vae-chunk-frames): the same video,
    # fewer and larger convolutions, more peak memory.
    chunked = vgen(args, "vae", *common, "--iters", 2, "--warmup", 1, "--vae-chunk-frames", 2)
    compare(f"vae22_decode_{h}x{w}x{f}_bf16_chunk2", theirs, chunked, vgen_first_s=chunked.get("first_s"))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def part_vae_encode(args):
    """Wan2.1 VAE encode of one 720p frame (what image-to-video encodes for TI2V; Wan2.1 I2V
    encodes the image followed by num_frames - 1 zero frames), float32 as the Wan examples run it."""
    h, w = (64, 96) if args.tiny else (720, 1280)
    dev = args.device
    vae, d = random_wan21_vae(args, "vae21", torch.float32)
    x = torch.rand(1, 3, 1, h, w, device=dev) * 2 - 1
    free_gpu()
    with torch.no_grad():
        s = median_time(lambda: vae.encode(x).latent_dist.mode(), 2, 5)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del vae, x
    free_gpu()
    ours = vgen(args, "vae", "--model", d, "--encode", "--height", h, "--width", w, "--num-frames", 1,
                "--vae-dtype", "fp32", "--iters", 5, "--warmup", 2)
    compare(f"vae21_encode_1x{h}x{w}_fp32", theirs, ours, vgen_first_s=ours.get("first_s"))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def clip_config(tiny):
    from transformers import CLIPVisionConfig
    if tiny:
        return CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                image_size=32, patch_size=8, hidden_act="gelu", projection_dim=32)
    # ViT-H/14 as in Wan2.1-I2V's image_encoder/config.json
    return CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, hidden_act="gelu", projection_dim=1024,
                            layer_norm_eps=1e-5)


def part_clip(args):
    from transformers import CLIPVisionModel
    dev = args.device
    d = os.path.join(args.work, "clip")
    torch.manual_seed(0)
    cfg = clip_config(args.tiny)
    m = CLIPVisionModel(cfg).to(torch.bfloat16)
    m.save_pretrained(d)
    m = CLIPVisionModel.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev).eval()
    px = torch.randn(1, 3, cfg.image_size, cfg.image_size, device=dev, dtype=torch.bfloat16)
    free_gpu()
    with torch.no_grad():
        s = median_time(lambda: m(pixel_values=px, output_hidden_states=True).hidden_states[-2], 3, 20)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del m, px
    free_gpu()
    ours = vgen(args, "image_encoder", "--model", d, "--iters", 20, "--warmup", 3)
    compare(f"clip_vision_encode_{cfg.image_size}", theirs, ours)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def tiny_tokenizer(tmp):
    import sentencepiece as spm
    from transformers import T5Tokenizer
    corpus = os.path.join(tmp, "corpus.txt")
    words = ("a cat dog plays piano in the night on a motorcycle cool red fox snow light water city bright tones "
             "overexposed static blurred details subtitles style works paintings").split()
    with open(corpus, "w") as fh:
        for i in range(2000):
            fh.write(" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + "\n")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(tmp, "spiece"), vocab_size=64,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    return T5Tokenizer(vocab_file=os.path.join(tmp, "spiece.model"))


def text_encoder(tiny, dev):
    from transformers import UMT5Config, UMT5EncoderModel
    te_cfg = (dict(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4) if tiny else
              dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64))
    with torch.device(dev):
        return UMT5EncoderModel(UMT5Config(feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                           relative_attention_max_distance=128, **te_cfg))


def test_image(path, h, w):
    """A structured RGB picture (gradients and a disc), not noise, of h x w, saved as PNG."""
    import numpy as np
    from PIL import Image
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    np.where((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2, 220, 40)], -1)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return Image.open(path).convert("RGB")


def part_i2v14(args):
    """Wan2.2 I2V-A14B-shaped image-to-video end to end (two experts with boundary_ratio 0.9,
    guidance 4.0 / 3.0, the image VAE-encoded with 80 zero frames), a few steps at 480x832x81:
    diffusers' WanImageToVideoPipeline against `vgen bench pipeline --image`. Both experts at the
    14B width (40 heads x 128, ffn 13824) with --i2v-layers layers each (40 in the real model)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    tiny, dev = args.tiny, args.device
    h, w, f, steps = (64, 96, 9, 4) if tiny else (480, 832, 81, args.i2v_steps)
    d = os.path.join(args.work, "i2v14")
    tmp = tempfile.mkdtemp()
    tok = tiny_tokenizer(tmp)
    torch.manual_seed(0)
    te = text_encoder(tiny, dev).to(torch.bfloat16)
    cfg = transformer_config("14b", tiny)
    cfg.update(in_channels=36, out_channels=16)
    if tiny:
        cfg["text_dim"] = 64
    else:
        cfg["num_layers"] = args.i2v_layers
    experts = []
    for _ in range(2):
        with torch.device(dev):
            experts.append(WanTransformer3DModel(**cfg).to(torch.bfloat16))
    with torch.device(dev):
        vae = AutoencoderKLWan(**(dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}))
    vae = vae.to(torch.float32)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                    num_train_timesteps=1000)
    pipe = WanImageToVideoPipeline(tokenizer=tok, text_encoder=te, transformer=experts[0], transformer_2=experts[1],
                                   vae=vae, scheduler=sched, image_encoder=None, image_processor=None,
                                   boundary_ratio=0.9)
    pipe.save_pretrained(d)
    image_path = os.path.join(args.work, "first_frame.png")
    image = test_image(image_path, 360, 640)
    kw = dict(image=image, prompt="A cat plays piano in the night", height=h, width=w, num_frames=f,
              guidance_scale=4.0, guidance_scale_2=3.0, output_type="np")  # vgen's A14B defaults
    pipe(num_inference_steps=2, **kw)  # warm-up
    free_gpu()
    sched.set_timesteps(steps)
    used = sorted({"transformer" if t >= 900 else "transformer_2" for t in sched.timesteps.tolist()})
    t0 = time.perf_counter()
    pipe(num_inference_steps=steps, generator=torch.Generator(dev).manual_seed(42), **kw)
    sync()
    theirs = {"s": time.perf_counter() - t0, "peak_gib": peak_gib()}
    del pipe, te, experts, vae
    free_gpu()
    ours = vgen(args, "pipeline", "--model", d, "--image", image_path, "--height", h, "--width", w, "--num-frames", f,
                "--steps", steps, "--warmup", 2)
    name = f"e2e_i2v_a14b{'' if tiny else '_%dlayers' % args.i2v_layers}_{h}x{w}x{f}_{steps}steps"
    compare(name, theirs, ours, experts_used=used, vgen_phases=ours["phases"], vgen_load_s=ours["load_s"])
    # The idle expert in host memory: one upload at the switch (the next run's first expert is
    # prefetched during the decode); its cost is this run's time over the resident one's.
    off = vgen(args, "pipeline", "--model", d, "--image", image_path, "--height", h, "--width", w, "--num-frames", f,
               "--steps", steps, "--warmup", 2, "--offload-idle-expert")
    compare(name + "_offload_idle_expert", theirs, off, vgen_phases=off["phases"],
            offload_cost_s=off["s"] - ours["s"])
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def wan13_pipeline(args, name):
    """The 1.3B text-to-video pipeline with random weights (bf16 transformer and text encoder,
    float32 VAE; tiny widths with --tiny), saved in work/name; returns (diffusers pipeline, dir)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    tiny, dev = args.tiny, args.device
    d = os.path.join(args.work, name)
    tok = tiny_tokenizer(tempfile.mkdtemp())
    torch.manual_seed(0)
    te = text_encoder(tiny, dev)
    with torch.device(dev):
        cfg = transformer_config("1.3b", tiny)
        if tiny:
            cfg["text_dim"] = 64
        tr = WanTransformer3DModel(**cfg)
        vae = AutoencoderKLWan(**(dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}))
    te, tr, vae = te.to(torch.bfloat16), tr.to(torch.bfloat16), vae.to(torch.float32)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                    num_train_timesteps=1000)
    pipe = WanPipeline(tokenizer=tok, text_encoder=te, transformer=tr, vae=vae, scheduler=sched)
    pipe.save_pretrained(d)
    return pipe, d


def part_sage_e2e(args):
    """The quantized attention kernel over a whole run: the 1.3B pipeline (random weights) at
    480x832x81, --steps steps, CFG 5, the same initial noise, vgen with the exact kernels
    (auto) and with --attention-backend sage: time of each, final latents relative L2 and the
    PSNR of the decoded uint8 frames of the sage run against the exact one."""
    from safetensors.torch import load_file, save_file
    tiny = args.tiny
    h, w, f, steps = (64, 96, 9, 3) if tiny else (480, 832, 81, args.steps)
    pipe, d = wan13_pipeline(args, "sage_e2e")
    del pipe
    free_gpu()
    latents = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    latents_path = os.path.join(args.work, "sage_latents.safetensors")
    save_file({"latents": latents}, latents_path)
    runs = {}
    for kernel in ("auto", "sage"):
        out = os.path.join(args.work, f"sage_e2e_{kernel}.safetensors")
        r = vgen(args, "pipeline", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--steps", steps,
                 "--warmup", 2, "--latents", latents_path, "--save-latents", out, "--attention-backend", kernel)
        runs[kernel] = (r, load_file(out))
    exact, quant = runs["auto"][1], runs["sage"][1]
    log(what=f"sage_e2e_1.3b_{h}x{w}x{f}_{steps}steps", exact_s=runs["auto"][0]["pipeline_s"],
        sage_s=runs["sage"][0]["pipeline_s"], sage_vs_exact=runs["sage"][0]["pipeline_s"] / runs["auto"][0]["pipeline_s"],
        latent_rel_l2=rel_l2(quant["denoised_latents"], exact["denoised_latents"]),
        frame_psnr_db=psnr(quant["frames"], exact["frames"]))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def part_e2e(args):
    tiny, dev = args.tiny, args.device
    h, w, f, steps = (64, 96, 9, 3) if tiny else (480, 832, 81, args.steps)
    pipe, d = wan13_pipeline(args, "e2e")
    kw = dict(prompt="A cat plays piano in the night", height=h, width=w, num_frames=f, guidance_scale=5.0,
              output_type="np")
    pipe(num_inference_steps=2, **kw)  # warm-up
    free_gpu()
    t0 = time.perf_counter()
    frames = pipe(num_inference_steps=steps, generator=torch.Generator(dev).manual_seed(42), **kw).frames[0]
    sync()
    t_pipe = time.perf_counter() - t0
    peak = peak_gib()
    import numpy as np
    t1 = time.perf_counter()
    try:  # what export_to_video does without imageio-ffmpeg (the peer's measured setup)
        import cv2
        out = cv2.VideoWriter(os.path.join(args.work, "diffusers.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 16, (w, h))
        for fr in frames:
            out.write(cv2.cvtColor((fr * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
        out.release()
    except ImportError:
        print("opencv missing: diffusers' MP4 export is not timed", file=sys.stderr)
    t_write = time.perf_counter() - t1
    theirs = {"s": t_pipe + t_write, "peak_gib": peak}
    del pipe
    free_gpu()
    # As `vgen generate` runs (the text encoder freed once the prompts are encoded), then with
    # the text encoder kept resident, as `vgen serve` does by default.
    for name, flags in (("", ["--offload-text-encoder"]), ("_resident_text_encoder", [])):
        ours = vgen(args, "pipeline", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--steps", steps,
                    "--warmup", 2, "-o", os.path.join(args.work, "vgen.mp4"), *flags)
        compare(f"e2e_1.3b_{h}x{w}x{f}_{steps}steps{name}", theirs, ours, diffusers_pipeline_s=t_pipe,
                diffusers_write_s=t_write, vgen_phases=ours["phases"], vgen_write_s=ours["write_s"],
                vgen_load_s=ours["load_s"], vgen_text_encoder_reload_s=ours["text_encoder_reload_s"])
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def random_wan_lora(path, num_layers, dim, ffn, rank, dev):
    """A LightX2V-like step-distillation LoRA in the original Wan / ComfyUI keys: every attention
    projection and both FFN layers of every block, rank `rank`, alpha = rank (scaling 1), bf16."""
    from safetensors.torch import save_file
    g = torch.Generator(dev).manual_seed(7)
    sd = {}
    mods = [(f"{a}.{o}", dim, dim) for a in ("self_attn", "cross_attn") for o in "qkvo"]
    mods += [("ffn.0", ffn, dim), ("ffn.2", dim, ffn)]
    for i in range(num_layers):
        for name, out_f, in_f in mods:
            key = f"diffusion_model.blocks.{i}.{name}"
            sd[f"{key}.lora_down.weight"] = (torch.randn(rank, in_f, generator=g, device=dev) / in_f ** 0.5).to(torch.bfloat16).cpu()
            sd[f"{key}.lora_up.weight"] = (torch.randn(out_f, rank, generator=g, device=dev) * 0.02).to(torch.bfloat16).cpu()
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(sd, path)


def part_lora14(args):
    """The 4-step distilled recipe at Wan2.1 T2V 14B shape, 480x832x81, with a random rank-64 LoRA
    (LightX2V-style keys) fused at load: diffusers (load_lora_weights + fuse_lora, guidance 1, 4
    steps of FlowMatchEuler shift 5) against `vgen bench pipeline --lora ... --guidance-scale 1
    --steps 4`, end to end from the prompt to the frames. Then vgen's speedup over its own
    50-step CFG run, computed from a measured CFG run's per-call time (2 steps x 2 calls), and the
    LoRA load + merge time of both (vgen: its load time with the LoRA minus without)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    tiny, dev = args.tiny, args.device
    h, w, f = (64, 96, 9) if tiny else (480, 832, 81)
    d = os.path.join(args.work, "lora14")
    tmp = tempfile.mkdtemp()
    tok = tiny_tokenizer(tmp)
    torch.manual_seed(0)
    te = text_encoder(tiny, dev).to(torch.bfloat16)
    cfg = transformer_config("14b", tiny)
    if tiny:
        cfg["text_dim"] = 64
    with torch.device(dev):
        tr = WanTransformer3DModel(**cfg).to(torch.bfloat16)
        vae = AutoencoderKLWan(**(dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}))
    vae = vae.to(torch.float32)
    sched = FlowMatchEulerDiscreteScheduler(shift=5.0, num_train_timesteps=1000)
    pipe = WanPipeline(tokenizer=tok, text_encoder=te, transformer=tr, vae=vae, scheduler=sched)
    pipe.save_pretrained(d)
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    lora = os.path.join(args.work, "distill_lora_r64.safetensors")
    random_wan_lora(lora, cfg["num_layers"], dim, cfg["ffn_dim"], 8 if tiny else 64, dev)
    sync()
    t0 = time.perf_counter()
    pipe.load_lora_weights(lora)
    pipe.fuse_lora(lora_scale=1.0)
    sync()
    theirs_lora_s = time.perf_counter() - t0
    kw = dict(prompt="A cat plays piano in the night", height=h, width=w, num_frames=f, guidance_scale=1.0,
              output_type="np")
    pipe(num_inference_steps=2, **kw)  # warm-up
    free_gpu()
    t0 = time.perf_counter()
    pipe(num_inference_steps=4, generator=torch.Generator(dev).manual_seed(42), **kw)
    sync()
    theirs = {"s": time.perf_counter() - t0, "peak_gib": peak_gib()}
    del pipe, te, tr, vae
    free_gpu()
    common = ["--model", d, "--height", h, "--width", w, "--num-frames", f]
    # vgen's CFG run first (its load, without the LoRA, reads the files diffusers read: both
    # loads below then come from the page cache), then the recipe with the LoRA.
    cfg_run = vgen(args, "pipeline", *common, "--steps", 2, "--guidance-scale", 5, "--warmup", 1)
    ours = vgen(args, "pipeline", *common, "--steps", 4, "--guidance-scale", 1, "--lora", lora, "--warmup", 2)
    compare(f"e2e_14b_lora_r64_4steps_nocfg_{h}x{w}x{f}", theirs, ours, vgen_phases=ours["phases"],
            vgen_load_s=ours["load_s"], diffusers_lora_load_fuse_s=theirs_lora_s)
    # vgen's own 50-step CFG run: the same phases outside the loop, and 50 steps at the CFG
    # run's measured time per step (two transformer calls).
    per_step = cfg_run["phases"]["denoise"] / 2
    outside = ours["s"] - ours["phases"]["denoise"]
    t50 = outside + 50 * per_step
    log(what="lora14_recipe_speedup", vgen_4step_nocfg_s=ours["s"], vgen_cfg_step_s=per_step,
        vgen_50step_cfg_estimated_s=t50, speedup=t50 / ours["s"],
        vgen_lora_load_merge_s=ours["load_s"] - cfg_run["load_s"], vgen_load_with_lora_s=ours["load_s"],
        vgen_load_without_lora_s=cfg_run["load_s"], diffusers_lora_load_fuse_s=theirs_lora_s)
def psnr(a, b):
    """PSNR in dB of uint8 frames a against b."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * __import__("math").log10(255.0 ** 2 / mse)


def part_cache(args):
    """Step caching on the 1.3B text-to-video shapes (random weights), 480x832x81, CFG 5.0,
    --cache-steps steps, the same initial noise for every run. vgen runs every configuration in
    one process (`vgen bench pipeline` with one --cache-config per run, after one load and
    warm-up); diffusers runs uncached and with its own MagCache / First-Block-Cache / TaylorSeer
    hooks (it has no TeaCache). TaylorSeer runs use_lite_mode (proj_out predicted: the only
    setting that skips work on Wan, diffusers' default identifiers hook no Wan module) at two
    cache_intervals: a fixed schedule, the same calls predicted in vgen and diffusers. Accuracy is vgen cached against vgen uncached (final latents relative L2,
    PSNR of the uint8 frames). Random weights do not reproduce real skip rates: the skip counts
    of teacache / fbcache here say nothing about a real checkpoint's; the MagCache runs and the
    fixed schedule (MagCache with all ratios 1: compute, skip max_skip_steps, compute, ...,
    the same calls skipped in vgen and diffusers) make the speed figures comparable."""
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS
    from safetensors.torch import load_file, save_file
    tiny, dev = args.tiny, args.device
    h, w, f, steps = (64, 96, 9, 6) if tiny else (480, 832, 81, args.cache_steps)
    pipe, d = wan13_pipeline(args, "cache13")
    latents = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    latents_path = os.path.join(args.work, "cache_latents.safetensors")
    save_file({"latents": latents}, latents_path)

    # The published Wan2.1 1.3B TeaCache coefficients are vgen's default for this shape; the
    # tiny smoke test has no published ones, so it passes the 1.3B table itself.
    tea13 = [-5.21862437e4, 9.23041404e3, -5.28275948e2, 1.36987616e1, -4.99875664e-2]
    mag = [float(x) for x in FLUX_MAG_RATIOS]  # Flux's table: diffusers ships no Wan one (the pattern is the point)
    configs = [("uncached", {"cache_backend": "none"}, None)]
    for t in args.cache_thresholds.get("teacache", []):
        c = {"cache_backend": "teacache", "teacache_thresh": t}
        if tiny:
            c["coefficients"] = tea13
        configs.append((f"teacache_{t}", c, None))
    for t in args.cache_thresholds.get("magcache", []):
        configs.append((f"magcache_{t}", {"cache_backend": "magcache", "threshold": t, "mag_ratios": mag},
                        MagCacheConfig(threshold=t, num_inference_steps=steps, mag_ratios=mag)))
    for t in args.cache_thresholds.get("fbcache", []):
        configs.append((f"fbcache_{t}", {"cache_backend": "fbcache", "threshold": t}, FirstBlockCacheConfig(threshold=t)))
    for t in args.cache_thresholds.get("taylorseer", []):
        n = int(t)
        configs.append((f"taylorseer_{n}", {"cache_backend": "taylorseer", "use_lite_mode": True, "cache_interval": n},
                        TaylorSeerCacheConfig(use_lite_mode=True, cache_interval=n)))
    fixed = {"cache_backend": "magcache", "threshold": 0.5, "max_skip_steps": 2, "retention_ratio": 0.2,
             "mag_ratios": [1.0, 1.0]}
    configs.append(("fixed_schedule", fixed, MagCacheConfig(threshold=0.5, max_skip_steps=2, retention_ratio=0.2,
                                                            num_inference_steps=steps, mag_ratios=[1.0] * steps)))

    kw = dict(prompt="A cat plays piano in the night", height=h, width=w, num_frames=f, guidance_scale=5.0,
              output_type="np")
    pipe(num_inference_steps=2, **kw)  # warm-up
    diffusers_s = {}
    for name, _, hook in configs:
        if name != "uncached" and hook is None:
            continue
        if hook is not None:
            pipe.transformer.enable_cache(hook)
        free_gpu()
        t0 = time.perf_counter()
        pipe(num_inference_steps=steps, latents=latents.to(dev), **kw)
        sync()
        diffusers_s[name] = time.perf_counter() - t0
        if hook is not None:
            pipe.transformer.disable_cache()
    del pipe
    free_gpu()

    files = []
    for i, (name, c, _) in enumerate(configs):
        path = os.path.join(args.work, f"cache_{i}.json")
        with open(path, "w") as fh:
            json.dump(c, fh)
        files.append(path)
    out_prefix = os.path.join(args.work, "cache_out.safetensors")
    cmd = ["pipeline", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--steps", steps, "--warmup", 2,
           "--latents", latents_path, "--save-latents", out_prefix]
    for path in files:
        cmd += ["--cache-config", path]
    ours = vgen(args, *cmd)
    runs = [{"pipeline_s": ours["pipeline_s"], "cache": ours.get("cache")}] + ours.get("runs", [])
    ref = load_file(os.path.join(args.work, "cache_out.0.safetensors"))
    calls = 2 * steps
    for i, (name, c, hook) in enumerate(configs):
        got = load_file(os.path.join(args.work, f"cache_out.{i}.safetensors"))
        run = runs[i]
        cache = run.get("cache") or {"skipped": 0, "computed": calls}
        row = dict(what=f"cache_{name}_{h}x{w}x{f}_{steps}steps", vgen_s=run["pipeline_s"],
                   skipped=f"{cache['skipped']}/{cache['skipped'] + cache['computed']}",
                   vs_diffusers_uncached=run["pipeline_s"] / diffusers_s["uncached"],
                   diffusers_uncached_s=diffusers_s["uncached"])
        if name in diffusers_s and name != "uncached":
            row.update(diffusers_cached_s=diffusers_s[name], vs_diffusers_same_cache=run["pipeline_s"] / diffusers_s[name])
        if name != "uncached":
            row.update(latent_rel_l2=rel_l2(got["denoised_latents"], ref["denoised_latents"]),
                       frame_psnr_db=psnr(got["frames"], ref["frames"]))
        if name.startswith(("teacache", "fbcache")):
            row["note"] = "random weights: this skip rate says nothing about a real checkpoint's"
        log(**row)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def part_multigpu(args):
    """Several GPUs (issue 19): seconds per denoising step of `vgen generate` on 1, 2 and 4
    GPUs (as many as there are), one process per GPU through `vgen launch`, on random-weight
    pipelines: the 14B width (40 heads) at 720x1280x81 with CFG parallel and Ulysses, and the
    1.3B width (12 heads) at 480x832x81 with Ulysses, ring and both. --par-layers sets the
    transformer layers (40 / 30 in the real models). vgen only: the ratio is the speed-up over
    one GPU. With --device cpu the ranks are threads (vgen generate without launch)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    tiny, dev = args.tiny, args.device
    gpus = torch.cuda.device_count() if dev == "cuda" else 4
    # Seconds per step = (denoise time of 2 + k steps - that of 2 steps) / k: the first steps'
    # one-time costs (the CUDA graph is recorded on the second call) cancel out.
    steps = 1 if tiny else args.par_steps
    runs = {  # name -> (cfg, ulysses, ring)
        "14b": [("1gpu", 1, 1, 1), ("cfg2", 2, 1, 1), ("ulysses2", 1, 2, 1), ("cfg2_ulysses2", 2, 2, 1),
                ("ulysses4", 1, 4, 1)],
        "1.3b": [("1gpu", 1, 1, 1), ("ring2", 1, 1, 2), ("ulysses2", 1, 2, 1), ("ulysses2_ring2", 1, 2, 2),
                 ("ring4", 1, 1, 4), ("ulysses4", 1, 4, 1)],
    }
    shapes = {"14b": (720, 1280, 81), "1.3b": (480, 832, 81)}
    for size in ("14b", "1.3b"):
        h, w, f = (64, 96, 9) if tiny else shapes[size]
        d = os.path.join(args.work, f"multigpu_{size}")
        tmp = tempfile.mkdtemp()
        tok = tiny_tokenizer(tmp)
        torch.manual_seed(0)
        cfg = transformer_config(size, tiny)
        if tiny:
            cfg["num_attention_heads"] = 4  # Ulysses 2 and 4 divide it
        else:
            cfg["num_layers"] = args.par_layers
        # A one-layer text encoder of the real width (the steps are what is timed).
        te_cfg = dict(vocab_size=256, d_model=cfg["text_dim"], d_kv=64 if not tiny else 16, d_ff=256, num_layers=1,
                      num_heads=cfg["text_dim"] // (64 if not tiny else 16))
        from transformers import UMT5EncoderModel, UMT5Config
        te = UMT5EncoderModel(UMT5Config(**te_cfg)).to(torch.bfloat16)
        tr = WanTransformer3DModel(**cfg).to(torch.bfloat16)
        vae = AutoencoderKLWan(**(dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}))
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                        num_train_timesteps=1000)
        WanPipeline(tokenizer=tok, text_encoder=te, transformer=tr, vae=vae, scheduler=sched).save_pretrained(d)
        del te, tr, vae
        gc.collect()
        base = None
        for name, c, u, r in runs[size]:
            n = c * u * r
            if n > gpus:
                continue
            phases = {}
            for total in (2, 2 + steps):
                gen = ["generate", "--model", d, "--prompt", "a cat", "--height", h, "--width", w, "--num-frames", f,
                       "--steps", total, "--guidance-scale", 5.0, "--cfg-size", c, "--ulysses-size", u,
                       "--ring-size", r, "--device", dev, "-o", os.path.join(args.work, f"mg_{size}_{name}.mp4")]
                cmd = [args.vgen] + (["launch", "-n", str(n), "--"] if dev == "cuda" and n > 1 else []) + list(map(str, gen))
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    print(p.stdout, p.stderr[-4000:], file=sys.stderr)
                    phases = None
                    break
                line = [l for l in p.stderr.splitlines() if l.startswith("timing:")][-1]
                phases[total] = dict((k.strip(), float(v.rstrip("s").split()[0])) for k, v in
                                     (x.strip().split(" ", 1) for x in line[len("timing:"):].split(","))
                                     if k.strip() != "peak")
            if phases is None:
                log(what=f"multigpu_{size}_{name}", error=p.stderr.strip().splitlines()[-1:])
                continue
            per_step = (phases[2 + steps]["denoise"] - phases[2]["denoise"]) / steps
            phases = phases[2 + steps]
            base = base or per_step
            log(what=f"multigpu_{size}_{h}x{w}x{f}_{name}", gpus=n, s_per_step=per_step, speedup=base / per_step,
                decode_s=phases.get("decode"), layers=cfg["num_layers"])
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def part_flux(args):
    """FLUX.1-dev shapes (19 double + 38 single blocks, 24 heads x 128, guidance embedding; the
    16-channel x8 AutoencoderKL) with random bf16 weights at 1024x1024 (4096 image tokens, 512
    text tokens): one transformer forward and one VAE decode, diffusers vs vgen, plus the rel L2
    between their bf16 transformer outputs. --flux-layers D,S shrinks the transformer."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from safetensors.torch import save_file
    import numpy as np
    dev, tiny = args.device, args.tiny
    h = w = 64 if tiny else 1024
    text_len = 16 if tiny else 512
    double, single = (2, 2) if tiny else map(int, args.flux_layers.split(","))
    cfg = (dict(num_layers=double, num_single_layers=single, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6), guidance_embeds=True)
           if tiny else dict(num_layers=double, num_single_layers=single, guidance_embeds=True))
    # A pipeline's layout (flux/transformer beside flux/vae): vgen reads the VAE's compression
    # from a `vae` folder beside the transformer, and work/vae may hold another part's Wan VAE.
    d = os.path.join(args.work, "flux", "transformer")
    torch.manual_seed(0)
    with torch.device(dev):
        m = FluxTransformer2DModel(**cfg)
    m = m.to(torch.bfloat16).eval()
    m.save_pretrained(d)
    c = m.config
    S = (h // 16) * (w // 16)
    g = torch.Generator(dev).manual_seed(1)
    x = torch.randn(1, S, c.in_channels, device=dev, generator=g).to(torch.bfloat16)
    ctx = torch.randn(1, text_len, c.joint_attention_dim, device=dev, generator=g).to(torch.bfloat16)
    pooled = torch.randn(1, c.pooled_projection_dim, device=dev, generator=g).to(torch.bfloat16)
    t = torch.tensor([1.0], device=dev)
    guidance = torch.tensor([3.5], device=dev)
    from diffusers import FluxPipeline
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 16, w // 16, dev, torch.bfloat16)
    txt_ids = torch.zeros(text_len, 3, device=dev, dtype=torch.bfloat16)
    inputs = os.path.join(args.work, "flux_inputs.safetensors")
    save_file({"hidden_states": x.float().cpu(), "encoder_hidden_states": ctx.float().cpu(),
               "pooled_projections": pooled.float().cpu(), "timestep": t.cpu(), "guidance": guidance.cpu()}, inputs)
    run = lambda: m(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t,
                    img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
    free_gpu()
    with torch.no_grad():
        theirs_out = run().float().cpu()
        s = median_time(run, 2, 5)
    theirs = {"s": s, "peak_gib": peak_gib()}
    # float32 reference: the same (bf16-valued) weights and inputs in float32, no TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m = m.float()
    with torch.no_grad():
        ref = m(hidden_states=x.float(), encoder_hidden_states=ctx.float(), pooled_projections=pooled.float(),
                timestep=t, img_ids=img_ids.float(), txt_ids=txt_ids.float(), guidance=guidance,
                return_dict=False)[0].float().cpu()
    del m, x, ctx, pooled
    free_gpu()
    common = ["--model", d, "--height", h, "--width", w, "--text-len", text_len]
    ours = vgen(args, "transformer", *common, "--iters", 5, "--warmup", 2)
    out_path = os.path.join(args.work, "flux_out.f32")
    vgen(args, "transformer", *common, "--inputs", inputs, "--save-output", out_path, "--iters", 1, "--warmup", 0)
    ours_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(theirs_out.shape)
    compare(f"flux_dev_transformer_{double}+{single}_forward_{h}x{w}", theirs, ours,
            rel_l2_vgen_vs_diffusers_bf16=rel_l2(ours_out, theirs_out), rel_l2_vs_f32_vgen=rel_l2(ours_out, ref),
            rel_l2_vs_f32_diffusers_bf16=rel_l2(theirs_out, ref))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)

    # The VAE: FLUX.1's AutoencoderKL config, decode of 16 x 128 x 128 latents in bf16.
    vd = os.path.join(args.work, "flux", "vae")
    vcfg = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 16, 32, 32] if tiny else
                [128, 256, 512, 512], layers_per_block=2, latent_channels=16, norm_num_groups=8 if tiny else 32,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    torch.manual_seed(0)
    with torch.device(dev):
        vae = AutoencoderKL(**vcfg)
    vae = vae.to(torch.bfloat16).eval()
    vae.save_pretrained(vd)
    z = torch.randn(1, 16, h // 8, w // 8, device=dev, dtype=torch.bfloat16)
    free_gpu()
    with torch.no_grad():
        s = median_time(lambda: vae.decode(z, return_dict=False), 1, 3)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del vae, z
    free_gpu()
    ours = vgen(args, "vae", "--model", vd, "--height", h, "--width", w, "--vae-dtype", "bf16", "--iters", 3,
                "--warmup", 1)
    compare(f"flux_vae_decode_{h}x{w}_bf16", theirs, ours)
    if not args.keep:
        shutil.rmtree(vd, ignore_errors=True)


def part_flux_e2e(args):
    """The 28-step FLUX.1-dev text-to-PNG run end to end at 1024x1024, guidance 3.5, on random
    weights of the real shapes: CLIP-L and T5 v1.1 XXL text encoders (the tiny fixture's
    tokenizers: their vocabularies only size the embeddings), the 19 + 38 block transformer
    (--flux-layers), FLUX.1's AutoencoderKL; diffusers' FluxPipeline (bf16, PNG written by PIL)
    against `vgen bench pipeline -o out.png`, each after a warm-up run."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel,
                              T5TokenizerFast)
    dev, tiny = args.device, args.tiny
    h = w = 64 if tiny else 1024
    steps = 3 if tiny else 28
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "flux_dev_tiny")
    tok = CLIPTokenizer.from_pretrained(os.path.join(fixtures, "tokenizer"))
    tok2 = T5TokenizerFast.from_pretrained(os.path.join(fixtures, "tokenizer_2"))
    double, single = (2, 2) if tiny else map(int, args.flux_layers.split(","))
    torch.manual_seed(0)
    with torch.device(dev):
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32 if tiny else 768,
                                            intermediate_size=37 if tiny else 3072, num_hidden_layers=2 if tiny else 12,
                                            num_attention_heads=4 if tiny else 12, max_position_embeddings=77,
                                            projection_dim=32 if tiny else 768, hidden_act="quick_gelu"))
        t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=32 if tiny else 4096, d_kv=8 if tiny else 64,
                                     d_ff=37 if tiny else 10240, num_layers=2 if tiny else 24,
                                     num_heads=4 if tiny else 64, feed_forward_proj="gated-gelu",
                                     relative_attention_num_buckets=32, relative_attention_max_distance=128))
        tr = FluxTransformer2DModel(**(dict(num_layers=double, num_single_layers=single, attention_head_dim=16,
                                            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                            axes_dims_rope=(4, 6, 6), guidance_embeds=True) if tiny else
                                       dict(num_layers=double, num_single_layers=single, guidance_embeds=True)))
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4,
                            block_out_channels=[16, 16, 32, 32] if tiny else [128, 256, 512, 512], layers_per_block=2,
                            latent_channels=16, norm_num_groups=8 if tiny else 32, scaling_factor=0.3611,
                            shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                            base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                            max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=sched, vae=vae.to(torch.bfloat16), text_encoder=clip.to(torch.bfloat16),
                        tokenizer=tok, text_encoder_2=t5.to(torch.bfloat16), tokenizer_2=tok2,
                        transformer=tr.to(torch.bfloat16))
    d = os.path.join(args.work, "flux_e2e")
    pipe.save_pretrained(d)
    kw = dict(prompt="A red fox in the snow, city lights", height=h, width=w, guidance_scale=3.5,
              max_sequence_length=512)
    pipe(num_inference_steps=2, **kw)  # warm-up
    free_gpu()
    t0 = time.perf_counter()
    image = pipe(num_inference_steps=steps, generator=torch.Generator(dev).manual_seed(42), **kw).images[0]
    image.save(os.path.join(args.work, "diffusers.png"))
    sync()
    theirs = {"s": time.perf_counter() - t0, "peak_gib": peak_gib()}
    del pipe, clip, t5, tr, vae
    free_gpu()
    ours = vgen(args, "pipeline", "--model", d, "--height", h, "--width", w, "--steps", steps, "--warmup", 2,
                "-o", os.path.join(args.work, "vgen.png"))
    compare(f"flux_dev_e2e_{h}x{w}_{steps}steps_png", theirs, ours, vgen_phases=ours["phases"],
            vgen_write_s=ours["write_s"], vgen_load_s=ours["load_s"])
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["attn", "wan13", "vae"])
    ap.add_argument("--vgen", default="build/vgen")
    ap.add_argument("--work", default=None, help="scratch folder for the checkpoints (default: a temp dir)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--i2v-steps", type=int, default=4, help="i2v14: denoising steps (both experts run)")
    ap.add_argument("--i2v-layers", type=int, default=8, help="i2v14: layers per expert (40 in Wan2.2 A14B)")
    ap.add_argument("--cache-steps", type=int, default=20,
                    help="cache: denoising steps (20 fits ~5 min of H200 time; the acceptance figure is 50)")
    ap.add_argument("--cache-thresholds",
                    default="teacache=0.05,0.1;magcache=0.06,0.12;fbcache=0.05,0.1;taylorseer=3,5",
                    help="cache: two thresholds per cache, 'teacache=A,B;magcache=A,B;fbcache=A,B;taylorseer=N,M' "
                         "(TaylorSeer's are cache_intervals; a cache left out is not run, the uncached run and "
                         "the fixed schedule always are)")
    ap.add_argument("--quant-layers14", type=int, default=4, help="quant: layers of the 14B model (40 in the real one)")
    ap.add_argument("--quant-sizes", default="1.3b,14b", help="quant: the model sizes to run")
    ap.add_argument("--quant-algos", default="FP8,FP8_BLOCK_SCALES,NVFP4",
                    help="quant: the formats to run beside vgen bf16 (empty: bf16 only)")
    ap.add_argument("--par-layers", type=int, default=8, help="multigpu: transformer layers (40 in 14B, 30 in 1.3B)")
    ap.add_argument("--par-steps", type=int, default=3, help="multigpu: steps timed after 2 untimed ones")
    ap.add_argument("--flux-layers", default="19,38", help="flux: double,single blocks (FLUX.1-dev: 19,38)")
    ap.add_argument("--compile", action="store_true",
                    help="wan13/wan14/ti2v5b: also time diffusers under torch.compile (the deployed peer)")
    ap.add_argument("--sage", action="store_true",
                    help="wan13/wan14/acc13/ti2v5b: also run vgen with the quantized attention kernel (time, error)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the saved checkpoints")
    args = ap.parse_args()
    args.cache_thresholds = {k: [float(x) for x in v.split(",")]
                             for k, v in (item.split("=") for item in args.cache_thresholds.split(";"))}
    args.work = args.work or tempfile.mkdtemp(prefix="vgen-bench-")
    os.makedirs(args.work, exist_ok=True)
    if torch.cuda.is_available():
        log(what="env", gpu=torch.cuda.get_device_name(), torch=torch.__version__,
            diffusers=__import__("diffusers").__version__, **gpu_facts())
    parts = {"attn": part_attn, "wan13": lambda a: part_transformer(a, "1.3b"), "vae": part_vae, "e2e": part_e2e,
             "acc13": lambda a: part_transformer(a, "1.3b", timing=False),
             "wan14": lambda a: part_transformer(a, "14b"), "ti2v5b": lambda a: part_transformer(a, "5b"),
             "vae22": part_vae22, "vae_encode": part_vae_encode, "clip": part_clip, "i2v14": part_i2v14,
             "lora14": part_lora14, "cache": part_cache, "quant": part_quant, "multigpu": part_multigpu,
             "flux": part_flux, "flux_e2e": part_flux_e2e, "sage_e2e": part_sage_e2e}
    for p in args.parts:
        if p not in parts:
            raise SystemExit(f"unknown part {p!r}: choose from {', '.join(parts)}")
        parts[p](args)
        free_gpu()
    print("\n%-44s %12s %12s %8s %10s %10s" % ("what", "diffusers", "vgen", "ratio", "peak d GiB", "peak v GiB"))
    for r in RESULTS:
        if "ratio" in r:
            print("%-44s %11.4fs %11.4fs %8.3f %10.2f %10.2f" % (r["what"], r["diffusers_s"], r["vgen_s"], r["ratio"],
                                                                r["diffusers_peak_gib"] or 0, r["vgen_peak_gib"] or 0))
            if "weights_ratio" in r:
                print("%-44s weights %.2f GiB vs diffusers bf16 %.2f GiB (%.3fx); rel L2 vs float32 %.5f (diffusers bf16 %.5f)" % (
                    "", r["vgen_weights_gib"], r["diffusers_weights_gib"], r["weights_ratio"], r["rel_l2_vs_f32_vgen"],
                    r["rel_l2_vs_f32_diffusers_bf16"]))
        elif "skipped" in r:
            print("%-44s vgen %8.3fs skipped %-7s vs diffusers uncached %.3f%s%s%s" % (
                r["what"], r["vgen_s"], r["skipped"], r["vs_diffusers_uncached"],
                ", vs diffusers same cache %.3f" % r["vs_diffusers_same_cache"] if "vs_diffusers_same_cache" in r else "",
                ", latent rel L2 %.3g, PSNR %.2f dB" % (r["latent_rel_l2"], r["frame_psnr_db"]) if "latent_rel_l2" in r else "",
                " (random weights: skip rate not representative)" if "note" in r else ""))
        elif "s_per_step" in r:
            print("%-44s %d GPU(s) %9.4fs/step  speed-up %.2fx" % (r["what"], r["gpus"], r["s_per_step"], r["speedup"]))
        elif r["what"] == "attention_tflops":
            print("attention S=%d S_kv=%d H=%d D=%d TFLOP/s: torch %s, vgen %s" % (
                r["S"], r["S_kv"], r["H"], r["D"], {k: round(v, 1) for k, v in r["torch"].items()},
                {k: round(v, 1) for k, v in r["vgen"].items()}))
            print("%-44s rel L2 vs float32 (first 256 rows): %s" % (
                "", {k: float("%.3g" % v) for k, v in r["rel_l2_vs_f32_first_256_rows"].items()}))
        elif r["what"].startswith("sage_e2e"):
            print("%-44s vgen exact %.3fs, sage %.3fs (%.3fx); latent rel L2 %.4g, frame PSNR %.2f dB" % (
                r["what"], r["exact_s"], r["sage_s"], r["sage_vs_exact"], r["latent_rel_l2"], r["frame_psnr_db"]))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench.json"), "w") as fh:
            json.dump(RESULTS, fh, indent=1)


if __name__ == "__main__":
    main()
