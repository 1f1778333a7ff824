"""The official `openai` SDK against `vgen serve` (the calls of shared/spec/openai-api.md),
plus curl on the synchronous endpoint. Outputs are checked with ffprobe."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import FAST, Checks, Server, ffprobe, image_info, parse_args, require_tools  # noqa: E402


def main():
    binary, model = parse_args()
    require_tools("openai", programs=["ffprobe", "curl"])
    import openai
    from openai import OpenAI
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the video API deprecated

    root = tempfile.mkdtemp(prefix="vgen_sdk_")
    server = Server(binary, model, os.path.join(root, "media"), api_key="k").start()
    t = Checks()
    try:
        c = OpenAI(base_url=server.base_url + "/v1", api_key="k", max_retries=0)

        models = c.models.list()
        t.check([m.id for m in models.data] == [os.path.basename(model.rstrip("/"))], "models.list names the model")

        img = c.images.generate(prompt="a red fox", size="48x32", n=2, extra_body={"num_inference_steps": 2, "seed": 3})
        t.check(len(img.data) == 2, "images.generate n=2 returns 2 images")
        first = base64.b64decode(img.data[0].b64_json)
        t.check(image_info(first) == ("png", 48, 32), "image 0 is a 48x32 PNG")
        t.check(img.data[0].b64_json != img.data[1].b64_json, "seeds seed+i give different images")
        again = c.images.generate(prompt="a red fox", size="48x32", n=1, extra_body={"num_inference_steps": 2, "seed": 3})
        t.check(again.data[0].b64_json == img.data[0].b64_json, "same seed, same image")
        t.check(getattr(img, "size", None) == "48x32", "response size is WxH")
        try:
            webp = c.images.generate(prompt="x", size="48x32", output_format="webp",
                                     extra_body={"num_inference_steps": 2})
            t.check(image_info(base64.b64decode(webp.data[0].b64_json))[0] == "webp", "output_format webp")
        except openai.BadRequestError as e:  # a build without FFmpeg's libraries: refused up front
            t.check(e.body.get("param") == "output_format" and "FFmpeg" in e.body.get("message", ""),
                    f"output_format webp without FFmpeg's libraries: 400 {e.body}")

        # create_and_poll sends multipart/form-data; the extensions ride along as form fields.
        v = c.videos.create_and_poll(prompt="a cat surfing", seconds="0.5", size="48x32",
                                     extra_body={"num_inference_steps": 2, "seed": 11})
        t.check(v.status == "completed", f"create_and_poll completed (status {v.status}, error {v.error})")
        t.check(v.id.startswith("video_") and v.progress == 100, "id and progress 100")
        t.check(v.seconds == "0.5" and v.size == "48x32", f"seconds '{v.seconds}' and size '{v.size}' echoed")
        t.check(v.completed_at is not None and v.completed_at >= v.created_at, "completed_at set")

        got = c.videos.retrieve(v.id)
        t.check(got.id == v.id and got.status == "completed", "retrieve")
        raw = c.videos.with_raw_response.retrieve(v.id)
        t.check(raw.http_request is not None and raw.headers.get("content-type", "").startswith("application/json"),
                "retrieve answers JSON")

        out = os.path.join(root, "o.mp4")
        c.videos.download_content(v.id, variant="video").write_to_file(out)
        s = ffprobe(out)
        # 0.5 s at 16 fps = 8 frames -> 9 on the 4k+1 grid.
        t.check((s["codec_name"], s["width"], s["height"], s["nb_read_frames"], s["r_frame_rate"]) ==
                ("h264", 48, 32, "9", "16/1"), f"MP4 is h264 48x32, 9 frames, 16 fps: {s}")
        thumb = c.videos.download_content(v.id, variant="thumbnail").read()
        # WebP; PNG on a build without FFmpeg's libraries (an optional output never fails a job)
        t.check(image_info(thumb) in (("webp", 48, 32), ("png", 48, 32)), "thumbnail is a 48x32 WebP or PNG")

        # JSON bodies work too, with fps and num_frames extensions.
        v2 = c.videos.create(prompt="a dog", size="48x32", extra_body={"num_frames": 5, "fps": 8, "num_inference_steps": 2},
                             extra_headers={"Content-Type": "application/json"})
        v2 = c.videos.poll(v2.id)
        t.check(v2.status == "completed" and v2.seconds == "0.625", f"JSON create, 5 frames at 8 fps ({v2.seconds} s)")
        c.videos.download_content(v2.id).write_to_file(out)
        s = ffprobe(out)
        t.check((s["nb_read_frames"], s["r_frame_rate"]) == ("5", "8/1"), f"5 frames at 8 fps: {s}")

        v3 = c.videos.create_and_poll(prompt="a bird", seconds="0.25", size="48x32", extra_body={"num_inference_steps": 2})
        listed = list(c.videos.list(limit=2, order="desc"))  # pages with after=last_id
        ids = [x.id for x in listed]
        t.check(ids == [v3.id, v2.id, v.id], f"list(limit=2, order=desc) pages through all three: {ids}")
        asc = [x.id for x in c.videos.list(limit=1, order="asc")]
        t.check(asc == [v.id, v2.id, v3.id], "list order=asc, one per page")
        page = c.videos.list(limit=2)
        t.check(page.has_more is True and page.last_id == v2.id, "has_more and last_id of the first page")

        deleted = c.videos.delete(v2.id)
        t.check(deleted.id == v2.id and deleted.deleted is True and deleted.object == "video.deleted", "delete")
        t.check([x.id for x in c.videos.list()] == [v3.id, v.id], "deleted video is gone from the list")
        try:
            c.videos.retrieve(v2.id)
            t.check(False, "retrieve after delete is a 404")
        except Exception as e:  # openai.NotFoundError
            t.check(getattr(e, "status_code", None) == 404, f"retrieve after delete is a 404 ({e})")

        # Synchronous endpoint with curl: MP4 bytes.
        sync_out = os.path.join(root, "sync.mp4")
        code = subprocess.run(
            ["curl", "-sS", "-o", sync_out, "-w", "%{http_code} %{content_type}", "-H", "Authorization: Bearer k",
             "-H", "Content-Type: application/json", "-d",
             json.dumps({"prompt": "a horse", "seconds": 1, **FAST}), server.base_url + "/v1/videos/generations"],
            check=True, capture_output=True, text=True).stdout
        t.check(code == "200 video/mp4", f"curl POST /v1/videos/generations: {code}")
        s = ffprobe(sync_out)
        t.check((s["codec_name"], s["width"], s["height"], s["nb_read_frames"]) == ("h264", 48, 32, "17"),
                f"sync MP4 is 48x32 with 17 frames: {s}")
        form = subprocess.run(
            ["curl", "-sS", "-o", sync_out, "-w", "%{http_code}", "-H", "Authorization: Bearer k",
             "-F", "prompt=a horse", "-F", "num_frames=5", "-F", "size=48x32", "-F", "num_inference_steps=2",
             server.base_url + "/v1/videos/generations"], check=True, capture_output=True, text=True).stdout
        t.check(form == "200" and ffprobe(sync_out)["nb_read_frames"] == "5", "curl multipart sync generation")

        metrics = subprocess.run(["curl", "-sS", server.base_url + "/metrics"], check=True, capture_output=True,
                                 text=True).stdout
        t.check('vgen_http_requests_total{endpoint="/v1/videos/{id}",method="GET",status="200"}' in metrics,
                "metrics count requests by endpoint and status")
        t.check("vgen_denoising_step_seconds_count" in metrics and "vgen_queue_depth 0" in metrics,
                "metrics have step times and queue depth")
        t.check('vgen_video_jobs{state="completed"} 2' in metrics, "metrics count jobs by state")
    finally:
        code = server.stop()
        t.check(code == 0, f"SIGTERM stops the server cleanly (exit {code})")
    t.finish(root)


if __name__ == "__main__":
    main()
