"""Image-to-video through `vgen serve`: the official `openai` SDK sends the first frame as the
`input_reference` file of a multipart body (vgen's `last_image` is a second file part). Run against the tiny
Wan2.1 I2V fixture (an image is required there; a last frame is not taken). Refusals answer 400 in OpenAI's error shape
naming the field. Outputs are checked with ffprobe."""

import json
import os
import shutil
import sys
import tempfile
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Checks, Server, ffprobe, multipart, parse_args, request, require_tools  # noqa: E402


def main():
    binary, model = parse_args()
    require_tools("openai", programs=["ffprobe"])
    import openai
    from openai import OpenAI
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the video API deprecated

    ref = model.rstrip("/") + "_ref"
    first, last = os.path.join(ref, "image_a.png"), os.path.join(ref, "image_b.png")
    root = tempfile.mkdtemp(prefix="vgen_i2v_")
    # LoRA adapters requests may name (the tiny I2V fixture's, from tests/fixtures/lora_ref).
    loras = os.path.join(root, "loras")
    os.makedirs(loras)
    lora_ref = os.path.join(os.path.dirname(model.rstrip("/")), "lora_ref")
    for name in ("i2v_wan", "i2v_musubi"):
        shutil.copy(os.path.join(lora_ref, name + ".safetensors"), loras)
    server = Server(binary, model, os.path.join(root, "media"), extra_args=["--lora-dir", loras]).start()
    t = Checks()
    try:
        c = OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)

        caps = c.models.list().data[0].model_extra["capabilities"]
        t.check("image-to-video" in caps["tasks"] and caps["inputs"]["image"] == "required",
                f"/v1/models says an image is required: {caps}")

        with open(first, "rb") as f:
            v = c.videos.create_and_poll(prompt="a cat surfing", input_reference=f, seconds="0.5", size="48x32",
                                         extra_body={"num_inference_steps": 2, "seed": 5})
        t.check(v.status == "completed", f"image-to-video completed (status {v.status}, error {v.error})")
        out = os.path.join(root, "i2v.mp4")
        c.videos.download_content(v.id, variant="video").write_to_file(out)
        s = ffprobe(out)
        t.check((s["codec_name"], s["width"], s["height"], s["nb_read_frames"]) == ("h264", 48, 32, "9"),
                f"MP4 is h264 48x32, 9 frames: {s}")

        # No image: 400 naming input_reference.
        try:
            c.videos.create(prompt="a cat", size="48x32", extra_body={"num_inference_steps": 2})
            t.check(False, "a request without an image is refused")
        except openai.BadRequestError as e:
            t.check(e.body.get("param") == "input_reference", f"missing image: 400 param input_reference ({e.body})")

        # Bytes that are not an image: 400 naming input_reference, nothing queued.
        try:
            c.videos.create(prompt="a cat", size="48x32", input_reference=("x.png", b"not an image", "image/png"),
                            extra_body={"num_inference_steps": 2})
            t.check(False, "an undecodable image is refused")
        except openai.BadRequestError as e:
            t.check(e.body.get("param") == "input_reference" and "not a readable image" in e.body.get("message", ""),
                    f"undecodable image: 400 param input_reference ({e.body})")

        # A last frame to a model that takes none (this one; FLF2V checkpoints take one): 400.
        with open(first, "rb") as a, open(last, "rb") as b:
            body, ctype = multipart({"prompt": "a cat", "size": "48x32", "num_frames": "5", "num_inference_steps": "2"},
                                    [("input_reference", "a.png", "image/png", a.read()),
                                     ("last_image", "b.png", "image/png", b.read())])
        status, _, data = request(server, "POST", "/v1/videos/generations", body, {"Content-Type": ctype})
        err = json.loads(data).get("error", {}) if data.startswith(b"{") else {}
        t.check(status == 400 and err.get("param") == "last_image", f"last_image to an I2V model: {status} {err}")

        # The synchronous endpoint with an image: the MP4 in the answer.
        with open(first, "rb") as a:
            body, ctype = multipart({"prompt": "a cat", "size": "48x32", "num_frames": "5", "num_inference_steps": "2"},
                                    [("input_reference", "a.png", "image/png", a.read())])
        status, _, data = request(server, "POST", "/v1/videos/generations", body, {"Content-Type": ctype})
        t.check(status == 200 and data[4:8] == b"ftyp", f"synchronous image-to-video: {status} {data[:200]!r}")

        # LoRA adapters by name, switched between requests: the same adapter gives the same video.
        t.check(c.models.list().data[0].model_extra.get("lora_adapters") == ["i2v_musubi", "i2v_wan"],
                "/v1/models lists the adapters")

        def sync_video(lora=None):
            fields = {"prompt": "a cat", "size": "48x32", "num_frames": "5", "num_inference_steps": "2", "seed": "4"}
            if lora:
                fields["lora"] = lora
            with open(first, "rb") as a:
                body, ctype = multipart(fields, [("input_reference", "a.png", "image/png", a.read())])
            return request(server, "POST", "/v1/videos/generations", body, {"Content-Type": ctype})

        s1, _, with_lora = sync_video("i2v_wan:0.8")
        s2, _, without = sync_video()
        s3, _, again = sync_video("i2v_wan:0.8")
        s4, _, two = sync_video("i2v_musubi:0.6,i2v_wan:0.8")
        t.check((s1, s2, s3, s4) == (200, 200, 200, 200), f"videos with and without adapters: {(s1, s2, s3, s4)}")
        t.check(with_lora != without and with_lora == again and two not in (with_lora, without),
                "an adapter changes the video; switching back gives the same bytes")
        status, _, data = sync_video("no_such_adapter")
        err = json.loads(data).get("error", {}) if data.startswith(b"{") else {}
        t.check(status == 400 and err.get("param") == "lora" and "i2v_wan" in err.get("message", ""),
                f"an unknown adapter: 400 param lora listing the served ones ({status} {err})")

        # A last image without a first one.
        with open(last, "rb") as b:
            body, ctype = multipart({"prompt": "a cat", "size": "48x32"}, [("last_image", "b.png", "image/png", b.read())])
        status, _, data = request(server, "POST", "/v1/videos", body, {"Content-Type": ctype})
        err = json.loads(data).get("error", {}) if data.startswith(b"{") else {}
        t.check(status == 400 and err.get("param") == "last_image", f"last_image alone: {status} {err}")
    finally:
        server.stop()
    t.finish(root)


if __name__ == "__main__":
    main()
