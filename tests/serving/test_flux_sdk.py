"""The official `openai` SDK's images.generate and images.edit against `vgen serve` with the
tiny FLUX.1 fixtures: FLUX.1-dev (text-to-image) and FLUX.1 Kontext (image editing).

Run by ctest as `python3 test_flux_sdk.py VGEN_BINARY FIXTURES_DIR` (the tests/fixtures folder).
The pixels are held to diffusers' images for the same request: tests/fixtures/flux_serving_ref,
written by tools/fixtures/make_flux_serving_fixtures.py (diffusers' FluxPipeline and
FluxKontextPipeline given vgen's seeded noise as latents=), within one uint8 level."""

import base64
import io
import json
import os
import struct
import sys
import tempfile
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Checks, Server, parse_args, request, require_tools  # noqa: E402


def read_uint8_safetensors(path):
    """{name: (shape, bytes)} of a safetensors file of U8/I64 tensors (no torch needed)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = data[begin:end]
        if t["dtype"] == "I64":
            raw = list(struct.unpack(f"<{len(raw) // 8}q", raw))
        out[name] = (t["shape"], raw)
    return out


def max_level_diff(image, ref, stride=1):
    """Largest |difference| in uint8 levels between a PIL RGB image (every `stride`-th row and
    column) and reference bytes [H, W, 3], with the count of differing values."""
    shape, want = ref
    w = image.width
    got = image.tobytes()
    worst, differing = 0, 0
    for y in range(shape[0]):
        for x in range(shape[1]):
            src = ((y * stride) * w + x * stride) * 3
            dst = (y * shape[1] + x) * 3
            for c in range(3):
                d = abs(got[src + c] - want[dst + c])
                worst = max(worst, d)
                differing += d != 0
    return worst, differing


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def api_error(call):
    """(status, error object) of a call expected to fail; (None, None) when it succeeds."""
    import openai

    try:
        call()
    except openai.APIStatusError as e:
        return e.status_code, e.body if isinstance(e.body, dict) else {}
    return None, None


def tasks_of(client):
    return [m.to_dict().get("capabilities", {}).get("tasks") for m in client.models.list().data]


def main():
    binary, fixtures = parse_args()
    require_tools("openai", "PIL")
    from openai import OpenAI
    from PIL import Image

    spec = json.load(open(os.path.join(fixtures, "flux_serving_ref", "serving.json")))
    gen_ref = read_uint8_safetensors(os.path.join(fixtures, "flux_serving_ref", "generate.safetensors"))
    edit_ref = read_uint8_safetensors(os.path.join(fixtures, "flux_serving_ref", "edit.safetensors"))
    g, e = spec["generate"], spec["edit"]

    root = tempfile.mkdtemp(prefix="vgen_flux_sdk_")
    t = Checks()

    # FLUX.1-dev: text-to-image only.
    media = os.path.join(root, "media-dev")
    # On the CPU (float32) everywhere, a GPU machine included: the references are float32's.
    cpu = ["--device", "cpu"]
    server = Server(binary, os.path.join(fixtures, g["model"]), media, api_key="k", extra_args=cpu).start()
    try:
        c = OpenAI(base_url=server.base_url + "/v1", api_key="k", max_retries=0)
        models = c.models.list()
        t.check([m.id for m in models.data] == [g["model"]], "models.list names the FLUX.1-dev model")
        t.check(tasks_of(c) == [["text-to-image"]], f"/v1/models: its tasks are text-to-image: {tasks_of(c)}")

        s0, s1 = g["seeds"]
        steps = {"num_inference_steps": g["num_inference_steps"]}
        img = c.images.generate(prompt=g["prompt"], size=g["size"], n=2, response_format="b64_json",
                                extra_body={**steps, "seed": s0})
        t.check(len(img.data) == 2 and img.size == g["size"], f"generate n=2: 2 images, size {img.size}")
        for i, seed in enumerate((s0, s1)):
            pil = Image.open(io.BytesIO(base64.b64decode(img.data[i].b64_json)))
            t.check((pil.format, pil.mode, pil.size) == ("PNG", "RGB", (g["width"], g["height"])),
                    f"image {i}: {pil.format} {pil.mode} {pil.size} (PNG RGB {g['size']})")
            worst, n = max_level_diff(pil.convert("RGB"), gen_ref[f"seed{seed}_uint8"])
            t.check(worst <= 1, f"image {i} (seed {seed}) equals diffusers' within one level: max {worst}, "
                                f"{n} of {g['width'] * g['height'] * 3} values differ")

        # response_format url: saved in the media directory, served by GET /v1/images/{name}.
        u = c.images.generate(prompt=g["prompt"], size=g["size"], response_format="url",
                              extra_body={**steps, "seed": s1})
        url = u.data[0].url or ""
        t.check(url.startswith(server.base_url + "/v1/images/img_") and url.endswith(".png") and
                u.data[0].b64_json is None, f"response_format url: {url}")
        name = url.rsplit("/", 1)[-1]
        t.check(os.path.exists(os.path.join(media, "images", name)), "the URL's image is in MEDIA_DIR/images")
        got = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer k"}), timeout=30)
        body = got.read()
        t.check(got.headers.get("Content-Type") == "image/png", f"GET url: {got.headers.get('Content-Type')}")
        worst, _ = max_level_diff(Image.open(io.BytesIO(body)).convert("RGB"), gen_ref[f"seed{s1}_uint8"])
        t.check(worst <= 1, f"the URL's image (seed {s1}) equals diffusers' within one level: max {worst}")
        status, _, _ = request(server, "GET", f"/v1/images/{name}", headers={"Authorization": "Bearer wrong"})
        t.check(status == 401, f"GET url with a wrong API key: {status}")
        for bad in ("img_../../vgen.db", "video_" + "a" * 32 + ".png", "img_" + "A" * 32 + ".png"):
            status, _, raw = request(server, "GET", "/v1/images/" + urllib.request.quote(bad, safe=""))
            t.check(status == 404 and json.loads(raw)["error"]["code"] == "not_found",
                    f"GET /v1/images/{bad}: {status}")

        # output_format jpeg / webp: lossy, so held loosely (mean difference) to the reference.
        for fmt, pil_format in (("jpeg", "JPEG"), ("webp", "WEBP")):
            status, err = None, None
            try:
                r = c.images.generate(prompt=g["prompt"], size=g["size"], output_format=fmt,
                                      extra_body={**steps, "seed": s0})
            except Exception as ex:  # a build without FFmpeg's libraries refuses jpeg and webp up front
                import openai
                if not isinstance(ex, openai.BadRequestError):
                    raise
                status, err = ex.status_code, ex.body
            if err is not None:
                t.check(status == 400 and err.get("param") == "output_format" and "FFmpeg" in err.get("message", ""),
                        f"output_format {fmt} refused: {status} {err}")
                continue
            pil = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))
            t.check((pil.format, pil.mode, pil.size, r.output_format) ==
                    (pil_format, "RGB", (g["width"], g["height"]), fmt),
                    f"output_format {fmt}: {pil.format} {pil.mode} {pil.size}, response says {r.output_format}")
            shape, want = gen_ref[f"seed{s0}_uint8"]
            have = pil.convert("RGB").tobytes()
            mean = sum(abs(a - b) for a, b in zip(have, want)) / len(want)
            t.check(mean < 6, f"output_format {fmt}: mean difference {mean:.2f} levels from diffusers' PNG")

        # An edit on a text-to-image model: 400 naming `image` and the model's tasks.
        src = Image.open(os.path.join(fixtures, e["image"])).convert("RGB")
        status, err = api_error(lambda: c.images.edit(image=("in.png", png_bytes(src), "image/png"), prompt="x",
                                                      size="32x48", extra_body=steps))
        t.check(status == 400 and err.get("param") == "image" and "text-to-image" in err.get("message", "") and
                err.get("type") == "invalid_request_error" and "code" in err,
                f"edit on FLUX.1-dev: {status} {err}")
    finally:
        code = server.stop()
        t.check(code == 0, f"SIGTERM stops the FLUX.1-dev server cleanly (exit {code})")

    # FLUX.1 Kontext: text-to-image and image-to-image; images.edit as the SDK sends it.
    server = Server(binary, os.path.join(fixtures, e["model"]), os.path.join(root, "media-kontext"),
                    extra_args=cpu).start()
    try:
        c = OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
        tasks = tasks_of(c)
        t.check(tasks == [["text-to-image", "image-to-image"]], f"/v1/models: Kontext's tasks: {tasks}")

        # diffusers' FluxKontextPipeline scales the requested size to max_area 1024^2 at its aspect
        # ratio (32x48 -> 832x1248) and resizes the 24x40 input to the preferred resolution nearest
        # its aspect ratio: no small-size shortcut exists, so one edit at the real size.
        want_h, want_w = edit_ref["shape"][1][:2]
        r = c.images.edit(image=("in.png", png_bytes(src), "image/png"), prompt=e["prompt"], size=e["size"],
                          extra_body={"num_inference_steps": e["num_inference_steps"], "seed": e["seed"]})
        t.check(len(r.data) == 1 and r.size == f"{want_w}x{want_h}",
                f"images.edit: 1 image, size {r.size} ({e['size']} adjusted as diffusers does)")
        pil = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))
        t.check((pil.format, pil.mode, pil.size) == ("PNG", "RGB", (want_w, want_h)),
                f"edited image: {pil.format} {pil.mode} {pil.size}")
        worst, n = max_level_diff(pil.convert("RGB"), edit_ref[f"seed{e['seed']}_uint8_every8"], stride=8)
        t.check(worst <= 1, f"edited image equals diffusers' FluxKontextPipeline within one level (every 8th row "
                            f"and column): max {worst}, {n} values differ")

        # Uploads that are not images to edit: 400 naming `image`.
        for what, upload in (("not an image", ("x.png", b"this is not a PNG", "image/png")),
                             ("an 8x8 image", ("s.png", png_bytes(src.resize((8, 8))), "image/png"))):
            status, err = api_error(lambda: c.images.edit(image=upload, prompt="x", extra_body={"num_inference_steps": 1}))
            t.check(status == 400 and err.get("param") == "image", f"edit with {what}: {status} {err}")
        status, err = api_error(lambda: c.images.edit(image=("in.png", png_bytes(src), "image/png"), prompt="x",
                                                      response_format="base64"))
        t.check(status == 400 and err.get("param") == "response_format", f"edit response_format base64: {status} {err}")
    finally:
        code = server.stop()
        t.check(code == 0, f"SIGTERM stops the Kontext server cleanly (exit {code})")
    t.finish(root)


if __name__ == "__main__":
    main()
