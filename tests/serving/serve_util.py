"""Shared helpers of the server tests: start `vgen serve` on a free port, wait until it is
ready, stop or kill it, make raw HTTP requests, and check media files with ffprobe.

Every test script is run by ctest as `python3 SCRIPT VGEN_BINARY MODEL_DIR` and exits 0
(pass), 1 (fail) or 77 (skipped: a tool it needs is missing)."""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77

# Small and fast on a CPU: 48x32 pixels, 2 denoising steps.
FAST = {"size": "48x32", "num_inference_steps": 2}


def require_tools(*python_modules, programs=()):
    """Exits with the skip code when an optional dependency is missing."""
    for name in python_modules:
        try:
            __import__(name)
        except ImportError:
            print(f"SKIP: python module '{name}' is not installed (pip install {name})")
            sys.exit(SKIP)
    for program in programs:
        if shutil.which(program) is None:
            print(f"SKIP: '{program}' is not installed")
            sys.exit(SKIP)


def parse_args():
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} VGEN_BINARY MODEL_DIR")
        sys.exit(2)
    return sys.argv[1], sys.argv[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_processes = []


@atexit.register
def _kill_leftovers():
    """A test that dies on an exception must not leave its server running."""
    for proc in _processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Server:
    """One `vgen serve` process; its log goes to media_dir/../server-N.log."""

    def __init__(self, binary, model, media_dir, api_key=None, extra_args=(), env=None):
        self.binary, self.model, self.media_dir = binary, model, media_dir
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.env = None if env is None else {**os.environ, **env}
        self.proc = None
        self.port = None
        self.starts = 0

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=120):
        self.port = free_port()
        args = [self.binary, "serve", "--model", self.model, "--port", str(self.port),
                "--media-dir", self.media_dir] + self.extra_args
        if self.api_key:
            args += ["--api-key", self.api_key]
        self.starts += 1
        self.log_path = os.path.join(os.path.dirname(self.media_dir.rstrip("/")),
                                     f"server-{os.path.basename(self.media_dir)}-{self.starts}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        _processes.append(self.proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vgen serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                status, _, _ = request(self, "GET", "/health")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"vgen serve not ready after {timeout} s:\n{self.log_text()}")

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=30):
        """SIGTERM, then wait: a clean stop must be quick even with jobs running."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"vgen serve did not stop within {timeout} s of SIGTERM")
        return self.proc.returncode

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def request(server, method, path, body=None, headers=None, timeout=120):
    """Raw HTTP: returns (status, headers dict with lower-case keys, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    h = dict(headers or {})
    if server.api_key and "Authorization" not in h:
        h["Authorization"] = f"Bearer {server.api_key}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def multipart(fields, files=()):
    """(body, content_type) for text fields {name: value} and files [(name, filename, type, bytes)]."""
    boundary = "vgenTestBoundary7MA4YWxkTrZu0gW"
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, filename, ctype, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def ffprobe(path):
    """codec, width, height, frame count and frame rate of the first video stream."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames,r_frame_rate", "-of", "json", path],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def image_info(data):
    """(format, width, height) of PNG/JPEG/WebP bytes, decoded with ffprobe."""
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(data)
        f.flush()
        s = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                            "-of", "json", f.name], check=True, capture_output=True, text=True).stdout
    s = json.loads(s)["streams"][0]
    return s["codec_name"], s["width"], s["height"]


class Checks:
    """Collects failures instead of stopping at the first one; exit code at the end."""

    def __init__(self):
        self.failures = 0
        self.count = 0

    def check(self, condition, what):
        self.count += 1
        if condition:
            print(f"  ok    {what}")
        else:
            self.failures += 1
            print(f"  FAIL  {what}")
        return condition

    def finish(self, scratch_dir=None):
        """Exits; the scratch directory (media, server logs) is kept only when a check failed."""
        print(f"{self.count - self.failures}/{self.count} checks passed")
        if scratch_dir and not self.failures:
            shutil.rmtree(scratch_dir, ignore_errors=True)
        elif scratch_dir:
            print(f"server logs and media kept in {scratch_dir}")
        sys.exit(1 if self.failures else 0)

