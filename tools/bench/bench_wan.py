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
    import torch.nn.functional as F
    S, H, D = (512, 2, 64) if args.tiny else (32760, 12, 128)
    dev = args.device
    q, k, v = (torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * H * S * S * D
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
    ours = vgen(args, "attention", "--seq", S, "--heads", H, "--head-dim", D, "--iters", 20, "--warmup", 3)
    best = max(theirs.values())
    log(what="attention_tflops", S=S, H=H, D=D, torch=theirs, vgen=ours["tflops"], vgen_backend=ours["backend"],
        ratio_vs_best_torch=ours["tflops"] / best)


def part_transformer(args, size, timing=True):
    from diffusers import WanTransformer3DModel
    tiny = args.tiny
    h, w, f = (64, 96, 9) if tiny else ((480, 832, 81) if size == "1.3b" else (720, 1280, 81))
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
    x = torch.randn(1, 16, lt, h // 8, w // 8, device=dev, generator=g).to(torch.bfloat16)
    ctx = torch.randn(1, text_len, cfg["text_dim"], device=dev, generator=g).to(torch.bfloat16)
    t = torch.tensor([999.0], device=dev)
    accuracy = size == "1.3b"
    if accuracy:
        from safetensors.torch import save_file
        inputs = os.path.join(args.work, "inputs.safetensors")
        save_file({"hidden_states": x.float().cpu(), "timestep": t.cpu(), "encoder_hidden_states": ctx.float().cpu()}, inputs)
        # float32 reference: the same (bf16-valued) weights and inputs in float32, no TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        m32 = m.float().eval()
        with torch.no_grad():
            ref = m32(x.float(), t, ctx.float(), return_dict=False)[0].float().cpu()
        del m32
    del m
    free_gpu()
    # diffusers as its users load it: torch_dtype=bf16 keeps its float32 modules in float32.
    m = WanTransformer3DModel.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev).eval()
    with torch.no_grad():
        if accuracy:
            theirs_out = m(x, t, ctx, return_dict=False)[0].float().cpu()
        free_gpu()
        s = (median_time(lambda: m(x, t, ctx, return_dict=False), 1 if size == "14b" else 2, 2 if size == "14b" else 5)
             if timing else 0.0)
    theirs = {"s": s, "peak_gib": peak_gib()}
    del m, x, ctx
    free_gpu()
    iters = ["--iters", 2, "--warmup", 1] if size == "14b" else ["--iters", 5, "--warmup", 2]
    extra = {}
    if timing:
        ours = vgen(args, "transformer", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--text-len",
                    text_len, *iters)
        extra = {"tokens": ours["tokens"], "attention": ours["attention"],
                 "cuda_graph_replays": ours["cuda_graph_replays"]}
    if timing and size == "1.3b":  # what the CUDA graph of the step is worth
        eager = vgen(args, "transformer", "--model", d, "--height", h, "--width", w, "--num-frames", f, "--text-len",
                     text_len, "--no-cuda-graphs", *iters)
        extra.update(vgen_eager_s=eager["s"])
    if accuracy:
        out_path = os.path.join(args.work, "vgen_out.f32")
        vgen(args, "transformer", "--model", d, "--inputs", inputs, "--save-output", out_path, "--iters", 1,
             "--warmup", 0, "--height", h, "--width", w, "--num-frames", f, "--text-len", text_len)
        import numpy as np
        ours_out = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).reshape(ref.shape)
        extra.update(rel_l2_vs_f32_vgen=rel_l2(ours_out, ref), rel_l2_vs_f32_diffusers_bf16=rel_l2(theirs_out, ref),
                     rel_l2_vgen_vs_diffusers_bf16=rel_l2(ours_out, theirs_out))
    if timing:
        compare(f"transformer_{size}_forward_{h}x{w}x{f}", theirs, ours, **extra)
    else:
        # The accuracy check scripts/gpu-test.sh runs: vgen's bf16 error against the float32
        # reference may not exceed diffusers' own bf16 run's (5% slack for the noise of random data).
        log(what=f"transformer_{size}_accuracy_{h}x{w}x{f}", **extra)
        if extra["rel_l2_vs_f32_vgen"] > 1.05 * extra["rel_l2_vs_f32_diffusers_bf16"]:
            raise SystemExit("FAILED: vgen's bf16 transformer is less accurate than diffusers' bf16 run")
        print("accuracy: vgen rel L2 %.5f vs diffusers bf16 %.5f against float32: OK" % (
            extra["rel_l2_vs_f32_vgen"], extra["rel_l2_vs_f32_diffusers_bf16"]))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def part_vae(args):
    from diffusers import AutoencoderKLWan
    h, w, f = (64, 96, 9) if args.tiny else (480, 832, 81)
    dev = args.device
    d = os.path.join(args.work, "vae")
    torch.manual_seed(0)
    kw = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if args.tiny else {}
    with torch.device(dev):
        vae = AutoencoderKLWan(**kw)
    vae = vae.to(torch.bfloat16).eval()
    vae.save_pretrained(d)
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


def part_e2e(args):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel
    import sentencepiece as spm
    from transformers import T5Tokenizer
    tiny, dev = args.tiny, args.device
    h, w, f, steps = (64, 96, 9, 3) if tiny else (480, 832, 81, args.steps)
    d = os.path.join(args.work, "e2e")
    tmp = tempfile.mkdtemp()
    corpus = os.path.join(tmp, "corpus.txt")
    words = ("a cat dog plays piano in the night on a motorcycle cool red fox snow light water city bright tones "
             "overexposed static blurred details subtitles style works paintings").split()
    with open(corpus, "w") as fh:
        for i in range(2000):
            fh.write(" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + "\n")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(tmp, "spiece"), vocab_size=64,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tok = T5Tokenizer(vocab_file=os.path.join(tmp, "spiece.model"))
    torch.manual_seed(0)
    te_cfg = (dict(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4) if tiny else
              dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64))
    with torch.device(dev):
        te = UMT5EncoderModel(UMT5Config(feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                         relative_attention_max_distance=128, **te_cfg))
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
    del pipe, te, tr, vae
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["attn", "wan13", "vae"])
    ap.add_argument("--vgen", default="build/vgen")
    ap.add_argument("--work", default=None, help="scratch folder for the checkpoints (default: a temp dir)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the saved checkpoints")
    args = ap.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="vgen-bench-")
    os.makedirs(args.work, exist_ok=True)
    if torch.cuda.is_available():
        log(what="env", gpu=torch.cuda.get_device_name(), torch=torch.__version__,
            diffusers=__import__("diffusers").__version__)
    parts = {"attn": part_attn, "wan13": lambda a: part_transformer(a, "1.3b"), "vae": part_vae, "e2e": part_e2e,
             "acc13": lambda a: part_transformer(a, "1.3b", timing=False),
             "wan14": lambda a: part_transformer(a, "14b")}
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
        elif r["what"] == "attention_tflops":
            print("attention S=%d H=%d D=%d TFLOP/s: torch %s, vgen %.1f (%s)" % (
                r["S"], r["H"], r["D"], {k: round(v, 1) for k, v in r["torch"].items()}, r["vgen"], r["vgen_backend"]))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench.json"), "w") as fh:
            json.dump(RESULTS, fh, indent=1)


if __name__ == "__main__":
    main()
