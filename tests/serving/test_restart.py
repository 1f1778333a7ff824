"""Durability: kill -9 the server while one job runs and another waits, restart it on the
same media directory, and check that the completed job is still listed and downloadable,
the interrupted ones are failed with code "server_restarted", no partial files remain, and
new jobs run."""

import json
import os
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import FAST, Checks, Server, ffprobe, parse_args, request, require_tools  # noqa: E402

SLOW = {"size": "256x256", "num_frames": 33, "num_inference_steps": 60}


def get(server, video_id):
    status, _, body = request(server, "GET", f"/v1/videos/{video_id}")
    return status, json.loads(body)


def wait_for(server, video_id, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, v = get(server, video_id)
        if condition(v):
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timeout waiting on {video_id}: {v}")


def main():
    binary, model = parse_args()
    require_tools(programs=["ffprobe"])
    root = tempfile.mkdtemp(prefix="vgen_restart_")
    media = os.path.join(root, "media")
    t = Checks()
    server = Server(binary, model, media).start()

    _, _, body = request(server, "POST", "/v1/videos", {"prompt": "finished before the crash", "seconds": 1, **FAST})
    done = json.loads(body)
    done = wait_for(server, done["id"], lambda v: v["status"] == "completed")
    _, _, before = request(server, "GET", f"/v1/videos/{done['id']}/content")
    _, _, body = request(server, "POST", "/v1/videos", {"prompt": "running at the crash", **SLOW})
    running = json.loads(body)
    _, _, body = request(server, "POST", "/v1/videos", {"prompt": "queued at the crash", **FAST})
    queued = json.loads(body)
    wait_for(server, running["id"], lambda v: v["status"] == "in_progress" and v["progress"] >= 2)
    server.kill9()
    print("killed with SIGKILL mid-job")
    # What a kill during encoding leaves: a temporary file; and a file whose job is gone.
    videos = os.path.join(media, "videos")
    for stale in (f"{running['id']}.mp4.tmp-12345-0", "video_0123456789abcdefGONE.mp4"):
        with open(os.path.join(videos, stale), "wb") as f:
            f.write(b"partial")

    server.start()
    status, v = get(server, done["id"])
    t.check(status == 200 and v["status"] == "completed" and v["progress"] == 100, "completed job survives")
    status, h, after = request(server, "GET", f"/v1/videos/{done['id']}/content")
    t.check(status == 200 and h.get("content-type") == "video/mp4" and after == before,
            "its MP4 downloads, byte for byte the same")
    path = os.path.join(root, "after.mp4")
    with open(path, "wb") as f:
        f.write(after)
    s = ffprobe(path)
    t.check((s["codec_name"], s["nb_read_frames"]) == ("h264", "17"), f"and is a valid 17-frame H.264: {s}")
    status, _, thumb = request(server, "GET", f"/v1/videos/{done['id']}/content?variant=thumbnail")
    # WebP, or PNG on a build without FFmpeg's libraries
    t.check(status == 200 and (thumb[:4] == b"RIFF" or thumb[:4] == b"\x89PNG"), "its thumbnail too")

    for what, job in (("running", running), ("queued", queued)):
        status, v = get(server, job["id"])
        err = v.get("error") or {}
        t.check(status == 200 and v["status"] == "failed" and err.get("code") == "server_restarted"
                and err.get("message"), f"the {what} job is failed with server_restarted: {v['status']} {err}")
        status, h, body = request(server, "GET", f"/v1/videos/{job['id']}/content")
        t.check(status == 409 and h.get("x-should-retry") == "false", f"its content is a final 409: {status}")

    _, _, body = request(server, "GET", "/v1/videos?order=asc")
    listed = [v["id"] for v in json.loads(body)["data"]]
    t.check(listed == [done["id"], running["id"], queued["id"]], f"all three listed in order: {listed}")
    files = sorted(os.listdir(os.path.join(media, "videos")))
    t.check(files in [sorted([f"{done['id']}.mp4", f"{done['id']}.thumbnail.{ext}"]) for ext in ("webp", "png")],
            f"no partial or temporary files: {files}")

    _, _, body = request(server, "POST", "/v1/videos", {"prompt": "after the restart", "num_frames": 5, **FAST})
    new = wait_for(server, json.loads(body)["id"], lambda v: v["status"] in ("completed", "failed"))
    t.check(new["status"] == "completed", "new jobs run after the restart")

    # A second server on the same media directory would fail the first one's jobs: refused.
    other = Server(binary, model, media)
    try:
        other.start(timeout=30)
        t.check(False, "a second server on the same media dir is refused")
        other.stop()
    except RuntimeError as e:
        t.check("in use by another vgen server" in str(e), "a second server on the same media dir is refused")
    t.check(server.stop() == 0, "clean stop")

    server.start()
    status, v = get(server, new["id"])
    t.check(status == 200 and v["status"] == "completed", "after a clean stop and restart the new job is there")
    _, _, body = request(server, "GET", "/v1/videos")
    t.check(len(json.loads(body)["data"]) == 4, "four jobs listed")
    t.check(server.stop() == 0, "clean stop")
    t.finish(root)


if __name__ == "__main__":
    main()
