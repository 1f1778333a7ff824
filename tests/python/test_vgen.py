"""The vgen Python package on the tiny fixtures: parity with `vgen generate` (byte-identical
frames for the same seed and parameters), bad inputs (the CLI's messages), cancellation from the
progress callback, image-to-video from a PIL image, the writers, and the GIL released.

Run by CTest (test `python`, tests/python/tests.cmake) with PYTHONPATH at the build's package
and VGEN_BINARY / VGEN_FIXTURES_DIR set; `pytest tests/python` works the same with those set
(or after `pip install .`, with VGEN_BINARY pointing at a `vgen` program).
"""

import os
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest

import vgen

FIXTURES = pathlib.Path(os.environ.get("VGEN_FIXTURES_DIR", pathlib.Path(__file__).parents[1] / "fixtures"))
T2V = str(FIXTURES / "wan21_t2v_tiny")
I2V = str(FIXTURES / "wan21_i2v_tiny")
IMAGE = FIXTURES / "wan21_i2v_tiny_ref" / "image_a.png"
BINARY = os.environ.get("VGEN_BINARY", "vgen")

# The CLI tests' quick run (tests/cli/cli_test.cpp): 2 steps on a 48x80, 9-frame video.
PROMPT = "a red fox in the snow"
QUICK = vgen.VisualGenParams(height=48, width=80, num_frames=9, num_inference_steps=2, seed=7)
CLI_QUICK = ["--prompt", PROMPT, "--steps", "2", "--seed", "7", "--height", "48", "--width", "80",
             "--num-frames", "9", "--quiet", "--device", "cpu"]


def cli(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=600)


def cli_frames(tmp_path, *args):
    """Runs `vgen generate ... --output DIR/` (lossless PNG frames) and reads them back."""
    out = tmp_path / "frames"
    r = cli("generate", *args, "--output", str(out) + "/")
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.png"))
    assert files, r.stderr
    return np.stack([vgen.read_image(f) for f in files])


@pytest.fixture(scope="module")
def t2v():
    return vgen.VisualGen(T2V, args=vgen.VisualGenArgs(device="cpu"))


def test_package_names():
    assert vgen.__version__
    for name in ("VisualGen", "VisualGenArgs", "VisualGenParams", "save_video", "save_image", "Error", "Cancelled"):
        assert hasattr(vgen, name), name
    assert issubclass(vgen.Cancelled, vgen.Error) and issubclass(vgen.Error, RuntimeError)


def test_frames_are_byte_identical_to_the_cli(t2v, tmp_path):
    out = t2v.generate(inputs=PROMPT, params=QUICK)
    expected = cli_frames(tmp_path, "--model", T2V, *CLI_QUICK)
    assert out.video.dtype == np.uint8 and out.video.shape == (9, 48, 80, 3)
    assert out.video.shape == expected.shape
    assert np.array_equal(out.video, expected), "frames differ from `vgen generate`"
    assert out.seed == 7 and out.fps == 16.0
    assert out.params["num_inference_steps"] == 2 and out.params["negative_prompt"]  # the family's default
    assert set(out.timings) >= {"encode_prompt", "denoise", "decode"}
    # The frames are the engine's memory, not a copy: the array does not own its data.
    assert not out.video.flags.owndata


def test_defaults_are_the_models(t2v):
    caps = t2v.capabilities
    r = t2v.resolve("x", vgen.VisualGenParams())[0]
    assert (r["height"], r["width"], r["num_frames"]) == (caps["default_height"], caps["default_width"],
                                                           caps["default_num_frames"])
    assert r["num_inference_steps"] == caps["default_num_inference_steps"]
    assert r["guidance_scale"] == caps["default_guidance_scale"]


def test_list_of_prompts_and_videos_per_prompt(t2v):
    params = QUICK.replace(num_frames=1, height=32, width=48, num_videos_per_prompt=2)
    outs = t2v.generate(["a cat", {"prompt": "a dog"}], params=params)
    assert [o.seed for o in outs] == [7, 8, 9, 10]
    assert [o.params["prompt"] for o in outs] == ["a cat", "a cat", "a dog", "a dog"]
    # Video k is what it would be alone with seed + k.
    alone = t2v.generate("a dog", params=params.replace(seed=9, num_videos_per_prompt=1))
    assert np.array_equal(outs[2].video, alone.video)
    batched = t2v.generate(["a cat", {"prompt": "a dog"}], params=params.replace(batch_size=2))
    assert all(np.abs(a.video.astype(int) - b.video.astype(int)).max() <= 1 for a, b in zip(outs, batched))


def test_callback_sees_every_step_and_cancels(t2v):
    seen = []
    t2v.generate(PROMPT, params=QUICK.replace(num_frames=1, height=32, width=48),
                 callback=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 2), (2, 2)]

    calls = []

    def stop_after_first(step, total):
        calls.append(step)
        return False

    with pytest.raises(vgen.Cancelled, match="generation cancelled"):
        t2v.generate(PROMPT, params=QUICK, callback=stop_after_first)
    assert calls == [1]

    class Stop(Exception):
        pass

    def raise_it(step, total):
        raise Stop("from the callback")

    with pytest.raises(Stop, match="from the callback"):
        t2v.generate(PROMPT, params=QUICK, callback=raise_it)
    # The model is still usable after a cancellation.
    assert t2v.generate(PROMPT, params=QUICK.replace(num_frames=1, height=32, width=48)).video.shape == (1, 32, 48, 3)


def test_gil_is_released_during_generation(t2v):
    ticks = []
    done = threading.Event()

    def run():
        t2v.generate(PROMPT, params=QUICK.replace(num_inference_steps=3))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.005)
    thread.join()
    # The main thread kept running while the other generated (with the GIL held it would stall).
    assert len(ticks) >= 5, len(ticks)


def test_cancel_from_another_thread(t2v):
    started = threading.Event()
    t = threading.Timer(0.0, lambda: (started.wait(), t2v.cancel()))
    t.start()
    with pytest.raises(vgen.Cancelled):
        t2v.generate(PROMPT, params=QUICK.replace(num_inference_steps=50),
                     callback=lambda step, total: started.set())
    t.join()


def cli_error(*args):
    r = cli("generate", *args)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert lines, r.stderr
    return lines[-1][len("error: "):]


def test_bad_parameters_raise_the_clis_message(t2v):
    with pytest.raises(vgen.Error) as e:
        t2v.generate(PROMPT, params=QUICK.replace(height=40, width=48, num_frames=5))
    assert str(e.value) == cli_error("--model", T2V, "--prompt", PROMPT, "--steps", "2", "--height", "40", "--width",
                                     "48", "--num-frames", "5", "--device", "cpu")
    with pytest.raises(vgen.Error) as e:
        t2v.generate(PROMPT, params=QUICK.replace(num_frames=80))
    assert str(e.value) == cli_error("--model", T2V, "--prompt", PROMPT, "--height", "48", "--width", "80",
                                     "--num-frames", "80", "--device", "cpu")
    with pytest.raises(vgen.Error, match="image: this model \\(WanPipeline\\) takes no image"):
        t2v.generate({"prompt": PROMPT, "image": np.zeros((29, 37, 3), np.uint8)}, params=QUICK)


def test_bad_inputs_name_the_culprit(t2v, tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(vgen.Error) as e:
        vgen.VisualGen(missing, args=vgen.VisualGenArgs(device="cpu"))
    assert str(e.value) == cli_error("--model", missing, "--prompt", "x", "--device", "cpu")
    cases = [
        (dict(inputs=PROMPT, params=QUICK.replace(seed=2**64)), "seed: must be an integer 0 to 2\\^64-1"),
        (dict(inputs=PROMPT, params=QUICK.replace(height="tall")), "height: expected an integer"),
        (dict(inputs=42, params=QUICK), "inputs: expected a prompt"),
        (dict(inputs={"prompt": PROMPT, "imgae": None}, params=QUICK), "unknown key\\(s\\) \\['imgae'\\]"),
        (dict(inputs={"prompt": PROMPT, "image": np.zeros((8, 8), np.uint8)}, params=QUICK),
         "inputs.image: expected shape \\[H, W, 3\\]"),
        (dict(inputs={"prompt": PROMPT, "image": np.zeros((8, 8, 3), np.float32)}, params=QUICK),
         "inputs.image: expected dtype uint8"),
        (dict(inputs=PROMPT, params=QUICK, callback="not callable"), "callback: expected a callable"),
        (dict(inputs=PROMPT, params=QUICK.replace(batch_size=0)), "batch_size: must be 1 to 64"),
    ]
    for kwargs, message in cases:
        with pytest.raises(vgen.Error, match=message):
            t2v.generate(**kwargs)


def test_engine_args_are_validated_as_the_yaml_config(tmp_path):
    # The same keys, defaults and messages as `vgen serve --config`: the same parser.
    with pytest.raises(vgen.Error, match="VisualGenArgs:.*attention.backend.*bogus"):
        vgen.VisualGenArgs(device="cpu", attention={"backend": "bogus"})._options()
    with pytest.raises(vgen.Error, match="VisualGenArgs:.*bogus_section"):
        vgen.VisualGenArgs(device="cpu", bogus_section={"x": 1})._options()
    with pytest.raises(vgen.Error, match="VisualGenArgs:.*cuda_graph.enabld"):
        vgen.VisualGenArgs(device="cpu", cuda_graph={"enabld": False})._options()
    with pytest.raises(vgen.Error, match="parallel_config.cfg_size"):
        vgen.VisualGenArgs(device="cpu", parallel_config={"cfg_size": 3})._options()
    with pytest.raises(vgen.Error, match="quant_config.quant_algo"):
        vgen.VisualGenArgs(device="cpu", quant_config={"quant_algo": "int4"})._options()
    with pytest.raises(vgen.Error, match="cache_config.mag_ratios"):
        vgen.VisualGenArgs(device="cpu", cache_config={"cache_backend": "magcache"})._options()
    with pytest.raises(vgen.Error, match="unknown dtype|dtype"):
        vgen.VisualGenArgs(device="cpu", dtype="fp12")._options()
    with pytest.raises(vgen.Error, match="lora .*nope.safetensors: no such file"):
        vgen.VisualGenArgs(device="cpu", lora=str(tmp_path / "nope.safetensors"))._options()
    o = vgen.VisualGenArgs(device="cpu", cuda_graphs=False, attention_backend="reference",
                           offload={"text_encoder": True})._options()
    assert (o.device, o.dtype, o.cuda_graphs, o.attention_backend, o.offload_text_encoder) == (
        "cpu", "F32", False, "reference", True)
    assert not vgen.VisualGenArgs(device="cpu", gemm_autotune=False)._options().gemm_autotune
    with pytest.raises(vgen.Error, match="quant_config.fast_accum"):
        vgen.VisualGenArgs(device="cpu", quant_config={"quant_algo": "NVFP4", "fast_accum": True})._options()
    # Same config through a YAML file as vgen serve reads it.
    yaml_file = tmp_path / "engine.yaml"
    yaml_file.write_text("cuda_graph:\n  enabled: false\nconv: {autotune: false}\ngemm: {autotune: false}\n")
    pytest.importorskip("yaml")
    o = vgen.VisualGenArgs.from_yaml(yaml_file, device="cpu")._options()
    assert (o.cuda_graphs, o.conv_autotune, o.gemm_autotune) == (False, False, False)


def test_image_to_video_from_a_pil_image(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    gen = vgen.VisualGen(I2V, args=vgen.VisualGenArgs(device="cpu"))
    params = vgen.VisualGenParams(height=32, width=48, num_frames=5, num_inference_steps=2, seed=7)
    out = gen.generate(inputs={"prompt": PROMPT, "image": Image.open(IMAGE)}, params=params)
    expected = cli_frames(tmp_path, "--model", I2V, "--prompt", PROMPT, "--steps", "2", "--seed", "7", "--height",
                          "32", "--width", "48", "--num-frames", "5", "--quiet", "--device", "cpu", "--image",
                          str(IMAGE))
    assert np.array_equal(out.video, expected)
    # A NumPy array and a path give the same.
    as_array = gen.generate({"prompt": PROMPT, "image": np.asarray(Image.open(IMAGE).convert("RGB"))}, params)
    assert np.array_equal(as_array.video, expected)
    assert dict(out.metadata)["image"] == "given (37x29)"
    with pytest.raises(vgen.Error, match="generates from an image"):
        gen.generate(PROMPT, params)


def test_writers_round_trip(t2v, tmp_path):
    out = t2v.generate(PROMPT, params=QUICK)
    png = vgen.save_image(out.video[3], tmp_path / "f.png")
    assert np.array_equal(vgen.read_image(png), out.video[3])
    Image = pytest.importorskip("PIL.Image")
    pil_png = vgen.save_image(Image.fromarray(out.video[0]), tmp_path / "p.png")
    assert np.array_equal(np.asarray(Image.open(pil_png)), out.video[0])
    assert len(vgen.to_pil(out)) == 9
    mp4 = out.save(tmp_path / "v.mp4")
    info = cli("info", mp4)
    assert info.returncode == 0 and PROMPT in info.stdout and "seed" in info.stdout, info.stdout + info.stderr
    plain = vgen.save_video(out.video, tmp_path / "plain.mp4", fps=8, crf=0)
    assert os.path.getsize(plain) > 0
    still = t2v.generate(PROMPT, params=QUICK.replace(num_frames=1, height=32, width=48)).save(tmp_path / "s.png")
    assert PROMPT in cli("info", still).stdout
    with pytest.raises(vgen.Error, match="fps: must be a positive number"):
        vgen.save_video(out.video, tmp_path / "x.mp4", fps=0)
    with pytest.raises(vgen.Error, match="frames: expected dtype uint8"):
        vgen.save_video(out.video.astype(np.float32), tmp_path / "x.mp4", fps=8)
    with pytest.raises(vgen.Error, match="needs num_frames 1"):
        out.save(tmp_path / "x.png")
