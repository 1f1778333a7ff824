"""Bad requests against `vgen serve`: each gets its status code and an error body in
OpenAI's shape, and the server stays up. Then 409 (content not ready), cancellation of
running and queued jobs by DELETE, and 429 when the queue is full."""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import FAST, Checks, Server, multipart, parse_args, request  # noqa: E402

KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
UNKNOWN_ID = "video_0123456789abcdefXYZ"
# ~1 s per step on the tiny model at this size: long enough to act on a running job.
SLOW = {"size": "256x256", "num_frames": 33, "num_inference_steps": 60}


def is_error_body(headers, body):
    try:
        e = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (headers.get("content-type", "").startswith("application/json") and isinstance(e.get("message"), str)
            and isinstance(e.get("type"), str) and "param" in e and "code" in e)


def bad_requests(server):
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    i2v_body, i2v_type = multipart({"prompt": "x", **FAST}, [("input_reference", "ref.png", "image/png", png)])
    edit_body, edit_type = multipart({"prompt": "x"}, [("image[]", "a.png", "image/png", png)])
    bad_utf8_body, bad_utf8_type = multipart({"prompt": "x"})
    bad_utf8_body = bad_utf8_body.replace(b"\r\n\r\nx\r\n", b"\r\n\r\n\xff\xfe\r\n")
    json_h = {"Content-Type": "application/json", **AUTH}
    # (what, method, path, body, headers, expected status(es), expected param or None, text in message or None)
    return [
        ("no API key", "GET", "/v1/models", None, {"Authorization": ""}, 401, None, "API key"),
        ("wrong API key", "GET", "/v1/videos", None, {"Authorization": "Bearer nope"}, 401, None, None),
        ("empty bearer", "POST", "/v1/videos", {"prompt": "x"}, {"Authorization": "Bearer "}, 401, None, None),
        ("unknown path", "GET", "/v2/things", None, AUTH, 404, None, None),
        ("unknown id", "GET", f"/v1/videos/{UNKNOWN_ID}", None, AUTH, 404, "video_id", None),
        ("unknown id content", "GET", f"/v1/videos/{UNKNOWN_ID}/content", None, AUTH, 404, None, None),
        ("delete unknown id", "DELETE", f"/v1/videos/{UNKNOWN_ID}", None, AUTH, 404, None, None),
        ("malformed id", "GET", "/v1/videos/video_abc", None, AUTH, 400, "video_id", None),
        ("encoded traversal", "GET", "/v1/videos/..%2F..%2Fvgen.db", None, AUTH, (400, 404), None, None),
        ("dot segments", "GET", "/v1/videos/../../vgen.db", None, AUTH, (400, 404), None, None),
        ("encoded dots", "GET", "/v1/videos/%2e%2e/content", None, AUTH, (400, 404), None, None),
        ("NUL in id", "GET", "/v1/videos/video_0123456789abcdef%00.mp4", None, AUTH, (400, 404), None, None),
        ("PUT videos", "PUT", "/v1/videos", {"prompt": "x"}, json_h, 405, None, None),
        ("DELETE models", "DELETE", "/v1/models", None, AUTH, 405, None, None),
        ("POST a video id", "POST", f"/v1/videos/{UNKNOWN_ID}", {"prompt": "x"}, json_h, 405, None, None),
        ("GET the sync endpoint", "GET", "/v1/videos/generations", None, AUTH, 405, None, None),
        ("not JSON", "POST", "/v1/videos", b"not json", json_h, 400, None, "JSON"),
        ("empty body", "POST", "/v1/videos", b"", json_h, 400, None, None),
        ("JSON array", "POST", "/v1/videos", b"[1,2]", json_h, 400, None, None),
        ("deeply nested JSON", "POST", "/v1/videos", b"[" * 100000 + b"]" * 100000, json_h, 400, None, None),
        ("number overflow", "POST", "/v1/videos", b'{"prompt": "x", "seed": 1e400}', json_h, 400, None, None),
        ("missing prompt", "POST", "/v1/videos", {"seconds": "4"}, json_h, 400, "prompt", None),
        ("unknown field", "POST", "/v1/videos", {"prompt": "x", "foo": 1}, json_h, 422, "foo", "foo"),
        ("seconds not a number", "POST", "/v1/videos", {"prompt": "x", "seconds": "abc"}, json_h, 400, "seconds", None),
        ("negative seconds", "POST", "/v1/videos", {"prompt": "x", "seconds": -4}, json_h, 400, "seconds", None),
        ("size not WxH", "POST", "/v1/videos", {"prompt": "x", "size": "big"}, json_h, 400, "size", None),
        ("size the model rejects", "POST", "/v1/videos", {"prompt": "x", "size": "50x32"}, json_h, 400, None, None),
        ("frames off the 4k+1 grid", "POST", "/v1/videos", {"prompt": "x", "num_frames": 8}, json_h, 400, None, None),
        ("steps as a string", "POST", "/v1/videos", {"prompt": "x", "num_inference_steps": "2"}, json_h, 400,
         "num_inference_steps", None),
        ("negative seed", "POST", "/v1/videos", {"prompt": "x", "seed": -2}, json_h, 400, "seed", None),
        ("other model", "POST", "/v1/videos", {"prompt": "x", "model": "sora-2"}, json_h, 400, "model", None),
        ("seconds and num_frames", "POST", "/v1/videos", {"prompt": "x", "seconds": 1, "num_frames": 5}, json_h, 400,
         "num_frames", None),
        ("image-to-video on T2V", "POST", "/v1/videos", i2v_body, {"Content-Type": i2v_type, **AUTH}, 400,
         "input_reference", "image-to-video not supported by this model"),
        ("invalid UTF-8 prompt", "POST", "/v1/videos", bad_utf8_body, {"Content-Type": bad_utf8_type, **AUTH}, 400,
         "prompt", None),
        ("sync: unknown field", "POST", "/v1/videos/generations", {"prompt": "x", "bar": 2}, json_h, 422, "bar", None),
        ("image response format", "POST", "/v1/images/generations", {"prompt": "x", "response_format": "uri"}, json_h,
         400, "response_format", "'b64_json' or 'url'"),
        ("too many images", "POST", "/v1/images/generations", {"prompt": "x", "n": 11}, json_h, 400, "n", None),
        ("image gif", "POST", "/v1/images/generations", {"prompt": "x", "output_format": "gif"}, json_h, 400,
         "output_format", None),
        ("edit on a T2V model", "POST", "/v1/images/edits", edit_body, {"Content-Type": edit_type, **AUTH}, 400, None,
         "cannot edit"),
        ("edit without image", "POST", "/v1/images/edits", {"prompt": "x"}, json_h, 400, "image", None),
        ("list limit 0", "GET", "/v1/videos?limit=0", None, AUTH, 400, "limit", None),
        ("list limit abc", "GET", "/v1/videos?limit=abc", None, AUTH, 400, "limit", None),
        ("list order", "GET", "/v1/videos?order=sideways", None, AUTH, 400, "order", None),
        ("list after unknown", "GET", f"/v1/videos?after={UNKNOWN_ID}", None, AUTH, 404, "after", None),
        ("list unknown param", "GET", "/v1/videos?bogus=1", None, AUTH, 400, "bogus", None),
        ("content variant", "GET", f"/v1/videos/{UNKNOWN_ID}/content?variant=spritesheet", None, AUTH, 400, "variant",
         None),
    ]


def raw_exchange(port, data):
    """Sends raw bytes, returns the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return out


def random_requests(server, t, count=300):
    """Random bytes and type-mutated fields: every answer is a 4xx in OpenAI's shape. The size
    stays one the model rejects, so that no mutation becomes a real (slow) generation."""
    rng = random.Random(1234)
    values = [None, 0, -1, 2 ** 70, 1.5, -1e308, "", "x" * 5000, "4", "\u0000", [], [1], {}, {"a": None}, True]
    fields = ["prompt", "seconds", "fps", "num_frames", "seed", "negative_prompt", "num_inference_steps",
              "guidance_scale", "n", "output_format", "response_format", "output_compression", "model"]
    paths = ["/v1/videos", "/v1/videos/generations", "/v1/images/generations", "/v1/images/edits"]
    types = ["application/json", "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain"]
    bad = []
    for i in range(count):
        path = rng.choice(paths)
        if i % 2:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000)))
            if i % 4 == 1:
                body = b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n" + body
            headers = {"Content-Type": rng.choice(types), **AUTH}
        else:
            doc = {"prompt": "x", "size": "50x32"}
            for name in rng.sample(fields, rng.randint(1, 4)):
                doc[name] = rng.choice(values)
            if path == "/v1/videos" or path == "/v1/videos/generations":
                for name in ("n", "output_format", "response_format", "output_compression"):
                    doc.pop(name, None)
            else:
                for name in ("seconds", "fps", "num_frames"):
                    doc.pop(name, None)
            body, headers = json.dumps(doc).encode(), {"Content-Type": "application/json", **AUTH}
        status, h, data = request(server, "POST", path, body, headers)
        if not (400 <= status < 500 and is_error_body(h, data)):
            bad.append((path, body[:80], status, data[:120]))
    t.check(not bad, f"{count} random requests all answered 4xx in OpenAI's shape {bad[:3]}")


def startup_errors(binary, model, root, t):
    """Problems found before serving end `vgen serve` with exit code 1 and a one-line reason."""
    def run(args, config_text=None, model=model, env=None):
        config = os.path.join(root, "engine.yaml")
        if config_text is not None:
            with open(config, "w") as f:
                f.write(config_text)
            args = args + ["--config", config]
        r = subprocess.run([binary, "serve", "--model", model, "--media-dir", os.path.join(root, "media_startup")]
                           + args, capture_output=True, text=True, timeout=60,
                           env=None if env is None else {**os.environ, **env})
        return r.returncode, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""

    code, line = run(["--port", "0"], "parallel_config:\n  cfg_size: 2\n")
    t.check(code == 1 and "parallel_config: 2 ranks" in line and "not implemented" in line, f"unimplemented feature: {line}")
    code, line = run(["--port", "0"], "attention:\n  backend: reference\n  blocks: 2\n")
    t.check(code == 1 and "engine.yaml:3:3: attention.blocks: unknown key" in line, f"unknown config key: {line}")
    code, line = run(["--port", "0"], "parallel_config: {cfg_size: two}\n")
    t.check(code == 1 and "parallel_config.cfg_size: expected an integer" in line, f"wrong config type: {line}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, line = run(["--port", str(busy.getsockname()[1])])
    t.check(code == 1 and "cannot listen" in line, f"port in use: {line}")
    code, line = run(["--port", "0"], model=os.path.join(root, "no_such_model"))
    t.check(code == 1 and "no_such_model" in line, f"missing model: {line}")
    # Before the model loads or the port is bound, unless the config's own choice overrides it.
    code, line = run(["--port", "0"], model=os.path.join(root, "no_such_model"), env={"VGEN_ATTENTION_BACKEND": "flsh"})
    t.check(code == 1 and "VGEN_ATTENTION_BACKEND: unknown attention backend 'flsh'" in line,
            f"unknown attention backend in the environment: {line}")
    code, line = run(["--port", "0"], "attention:\n  backend: cudnn\n", model=os.path.join(root, "no_such_model"),
                     env={"VGEN_ATTENTION_BACKEND": "flsh"})
    t.check(code == 1 and "no_such_model" in line, f"the config's backend overrides the environment's: {line}")


def no_mp4_writer(binary, model, root, t):
    """A build without FFmpeg's libraries encodes MP4s through an ffmpeg program. With none
    ($VGEN_FFMPEG naming a missing one) the server warns at start and refuses video requests
    before generating (500, not to be retried), storing no job. Builds with the libraries do not
    use the program: they start without the warning and are not checked further here."""
    server = Server(binary, model, os.path.join(root, "media_no_mp4"), env={"VGEN_FFMPEG": "/no/such/ffmpeg"}).start()
    try:
        if "no program '/no/such/ffmpeg' found" not in server.log_text():
            print("  (this build has FFmpeg's libraries: nothing to check)")
            return
        t.check("video requests will be refused" in server.log_text(), "the start-up warning says what it means")
        for path in ("/v1/videos", "/v1/videos/generations"):
            status, h, data = request(server, "POST", path, {"prompt": "x", **FAST})
            error = json.loads(data).get("error", {}) if is_error_body(h, data) else {}
            t.check(status == 500 and error.get("code") == "mp4_unavailable" and "/no/such/ffmpeg" in error.get("message", "")
                    and h.get("x-should-retry") == "false", f"{path} without an MP4 writer: {status} {data[:200]!r}")
        status, _, data = request(server, "GET", "/v1/videos")
        t.check(status == 200 and json.loads(data)["data"] == [], f"no job stored: {data[:200]!r}")
    finally:
        t.check(server.stop() == 0, "clean stop")


def wait_for(server, video_id, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, headers, body = request(server, "GET", f"/v1/videos/{video_id}")
        v = json.loads(body)
        if condition(v):
            return v, headers
        time.sleep(0.05)
    raise RuntimeError(f"timeout waiting on {video_id}: {v}")


def main():
    binary, model = parse_args()
    root = tempfile.mkdtemp(prefix="vgen_errors_")
    t = Checks()
    server = Server(binary, model, os.path.join(root, "media"), api_key=KEY).start()
    try:
        print("bad requests:")
        for what, method, path, body, headers, want, param, text in bad_requests(server):
            status, h, data = request(server, method, path, body, headers)
            wants = want if isinstance(want, tuple) else (want,)
            ok = status in wants and is_error_body(h, data)
            if ok and param is not None:
                ok = json.loads(data)["error"]["param"] == param
            if ok and text is not None:
                ok = text in json.loads(data)["error"]["message"]
            t.check(ok, f"{what}: {method} {path[:60]} -> {status} (want {want}) {data[:160]!r}")
            if status == 405:
                t.check("allow" in h, f"{what}: 405 carries an Allow header ({h.get('allow')})")

        reply = raw_exchange(server.port, b"GARBAGE\r\n\r\n")
        t.check(reply.startswith(b"HTTP/1.1 400") and b'"error"' in reply, f"malformed request line: {reply[:80]!r}")
        status, _, _ = request(server, "GET", "/health", headers={"Authorization": ""})
        t.check(status == 200, "/health needs no API key")
        status, _, _ = request(server, "GET", "/metrics", headers={"Authorization": ""})
        t.check(status == 200, "/metrics needs no API key")
        random_requests(server, t)
        status, _, _ = request(server, "GET", "/health")
        t.check(status == 200, "healthy after the random requests")

        print("content not ready, cancel running and queued jobs:")
        status, _, body = request(server, "POST", "/v1/videos", {"prompt": "slow", **SLOW})
        slow = json.loads(body)
        t.check(status == 200 and slow["status"] == "queued" and slow["object"] == "video", "slow job queued")
        status, _, body = request(server, "POST", "/v1/videos", {"prompt": "queued behind", **FAST, "num_frames": 5})
        behind = json.loads(body)
        status, _, body = request(server, "POST", "/v1/videos", {"prompt": "deleted while queued", **FAST})
        doomed = json.loads(body)
        v, headers = wait_for(server, slow["id"], lambda v: v["progress"] > 0)
        t.check(v["status"] == "in_progress" and 0 < v["progress"] < 100, f"progress reported per step ({v['progress']})")
        t.check(int(headers.get("openai-poll-after-ms", "0")) > 0, "openai-poll-after-ms header while running")
        status, h, data = request(server, "GET", f"/v1/videos/{slow['id']}/content")
        t.check(status == 409 and is_error_body(h, data) and h.get("x-should-retry") == "false",
                f"content of a running job: {status}, x-should-retry {h.get('x-should-retry')}")
        status, _, data = request(server, "GET", f"/v1/videos/{doomed['id']}/content?variant=thumbnail")
        t.check(status == 409, f"content of a queued job: {status}")
        status, _, data = request(server, "DELETE", f"/v1/videos/{doomed['id']}")
        t.check(status == 200 and json.loads(data)["deleted"] is True, "delete a queued job")
        t0 = time.time()
        status, _, data = request(server, "DELETE", f"/v1/videos/{slow['id']}")
        t.check(status == 200 and json.loads(data) == {"id": slow["id"], "object": "video.deleted", "deleted": True},
                "delete the running job")
        status, _, _ = request(server, "GET", f"/v1/videos/{slow['id']}")
        t.check(status == 404, "deleted job is gone")
        v, _ = wait_for(server, behind["id"], lambda v: v["status"] in ("completed", "failed"))
        # The slow job had about a minute left; cancellation stops it at the next step.
        t.check(v["status"] == "completed" and time.time() - t0 < 20,
                f"the job behind it ran right after the cancel ({time.time() - t0:.1f} s)")
        status, _, _ = request(server, "GET", f"/v1/videos/{doomed['id']}")
        t.check(status == 404, "the job deleted while queued never ran")
        files = sorted(os.listdir(os.path.join(root, "media", "videos")))
        thumbnails = [sorted([f"{behind['id']}.mp4", f"{behind['id']}.thumbnail.{ext}"]) for ext in ("webp", "png")]
        t.check(files in thumbnails, f"only the completed job has files: {files}")
        status, _, _ = request(server, "GET", "/health")
        t.check(status == 200, "still healthy after all of it")
    finally:
        t.check(server.stop() == 0, "clean stop")

    print("queue full:")
    small = Server(binary, model, os.path.join(root, "media_small"), extra_args=["--max-queue", "1"]).start()
    t0 = time.time()
    try:
        codes = []
        for i in range(3):
            status, h, data = request(small, "POST", "/v1/videos", {"prompt": f"job {i}", **SLOW})
            codes.append(status)
            if i == 0:
                wait_for(small, json.loads(data)["id"], lambda v: v["status"] == "in_progress")
        t.check(codes == [200, 200, 429], f"running + 1 queued, then 429: {codes}")
        t.check(is_error_body(h, data) and json.loads(data)["error"]["code"] == "queue_full", "429 body")
        status, _, data = request(small, "POST", "/v1/videos/generations", {"prompt": "sync", **FAST})
        t.check(status == 429, f"sync requests count against the same queue: {status}")
        t0 = time.time()
    finally:
        t.check(small.stop() == 0 and time.time() - t0 < 10, "SIGTERM with a running job stops quickly")

    print("no MP4 writer:")
    no_mp4_writer(binary, model, root, t)
    print("startup errors:")
    startup_errors(binary, model, root, t)
    t.finish(root)


if __name__ == "__main__":
    main()
