"""Issue 20: `vgen serve` under hostile input, each attack reproduced on loopback, bounded in
count and time, with the server's answer and its memory asserted (RSS after the attack within
a stated bound of RSS before):

  1. deeply nested / oversized JSON (413, 400) and a 10,000-request hostile fuzz: RSS < 2x idle
  2. bodies over the limit, chunked or not, and bodies without an API key: refused before
     they are read (413, 401), Expect: 100-continue refused before the body is sent
  3. a second server on a port in use does not start
  5. invented and raw-byte methods: 501, /metrics keeps a bounded set of series, valid UTF-8
  6. 400 slow connections (more than the handler threads) and 50 mixed clients: /health
     within 1 s throughout, the slow ones closed at the header deadline, every valid job
     completes, RSS bounded; the listen backlog is 1024
  7. no API key: Host and Origin checks, non-JSON content types refused
  9. prompt limits; a not-ready 409 carries x-should-retry: false
 11. one access-log line per request
"""

import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import FAST, Checks, Server, parse_args, request  # noqa: E402

KEY = "hardening-key"
MIB = 1 << 20
FORM = "multipart/form-data; boundary=b"


def rss(server):
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def head_bytes(method, path, headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(sock, timeout=10):
    """The status code of the response on `sock` (0 when the connection ends without one)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    try:
        return int(data.split(b" ")[1])
    except (IndexError, ValueError):
        return 0


def early_answer(port, method, path, headers, first_body=b""):
    """Sends the headers (and at most `first_body`), then reads the answer without sending the
    rest: the answer must come before the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head_bytes(method, path, headers))
        if first_body:
            try:
                s.sendall(first_body)
            except OSError:
                pass
        return read_status(s)


def chunked_upload(port, path, total, headers, chunk=MIB):
    """Sends `total` bytes of '{' as a chunked body as long as the server reads; the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head_bytes("POST", path, {"Transfer-Encoding": "chunked", **headers}))
        sent = 0
        piece = f"{chunk:x}\r\n".encode() + b"{" * chunk + b"\r\n"
        try:
            while sent < total:
                s.sendall(piece)
                sent += chunk
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        return read_status(s), sent


def json_headers(length, key=KEY, ctype="application/json"):
    h = {"Content-Type": ctype, "Content-Length": str(length)}
    if key:
        h["Authorization"] = f"Bearer {key}"
    return h


def body_limits(server, t):
    print("2. body limits hold for every body, before it is read:")
    port = server.port
    before = rss(server)
    status, sent = chunked_upload(port, "/v1/videos", 100 * MIB, {"Authorization": f"Bearer {KEY}",
                                                                 "Content-Type": "application/json"})
    t.check(status == 413, f"100 MiB chunked JSON body: {status} (was parsed)")
    status, sent = chunked_upload(port, "/v1/videos", 100 * MIB, {"Authorization": f"Bearer {KEY}", "Content-Type": FORM})
    t.check(status == 411, f"100 MiB chunked multipart body: {status} (multipart needs a Content-Length)")
    status, sent = chunked_upload(port, "/v1/videos", 200 * MIB, {"Content-Type": "application/json"})
    t.check(status == 401 and sent < 200 * MIB, f"200 MiB chunked body without a key: {status} after "
            f"{sent // MIB} MiB sent (was read in full before the 401)")
    status = early_answer(port, "POST", "/v1/videos", json_headers(200 * MIB, key=None), b"{" * 65536)
    t.check(status == 413, f"Content-Length 200 MiB without a key: {status} before the body")
    status = early_answer(port, "POST", "/v1/videos", json_headers(30 * MIB, key=None, ctype=FORM), b"{" * 65536)
    t.check(status == 401, f"30 MiB multipart body without a key: 401 before the body ({status})")
    status = early_answer(port, "POST", "/v1/videos", json_headers(300 << 10), b"{" * 65536)
    t.check(status == 413, f"300 KiB JSON body (JSON limit 256 KiB; multipart 32 MiB): {status} before the body")
    status = early_answer(port, "POST", "/v1/videos", {**json_headers(33 * MIB), "Expect": "100-continue"})
    t.check(status == 413, f"Expect: 100-continue over the limit: {status} before the body is sent")
    status = early_answer(port, "POST", "/v1/videos", {**json_headers(1000), "Expect": "100-continue"})
    t.check(status == 100, f"Expect: 100-continue within the limit: {status}")

    # 16 parallel 30 MiB POSTs without a key took RSS from 0.4 to 1.2 GB.
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        early_answer(port, "POST", "/v1/videos", json_headers(30 * MIB, key=None, ctype=FORM), b"{" * MIB)))
        for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.check(results == [401] * 16, f"16 parallel 30 MiB bodies without a key: {sorted(set(results))}")
    after = rss(server)
    t.check(after < before + 64 * MIB, f"RSS {before // MIB} -> {after // MIB} MiB (bound: +64 MiB)")


def json_attacks(server, t):
    print("1. deeply nested and oversized JSON:")
    status = early_answer(server.port, "POST", "/v1/videos", json_headers(10 * MIB), b"[" * 65536)
    t.check(status == 413, f"10 MiB of '[': {status} before the body is read (cost ~0.7 GB of RSS each)")
    status, _, body = request(server, "POST", "/v1/videos", b"[" * 200000, {"Content-Type": "application/json"})
    t.check(status == 400 and "deeper than" in json.loads(body)["error"]["message"], f"200,000 '[': {status}")
    # The largest JSON that is parsed, 40 at a time: its memory goes back (the allocator policy).
    before = rss(server)
    wide = b'{"prompt": "x", "size": "50x32", "a": [' + b"0," * 120000 + b"0]}"
    for _ in range(3):
        threads = [threading.Thread(target=request, args=(server, "POST", "/v1/videos", wide,
                                                           {"Content-Type": "application/json"})) for _ in range(40)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    time.sleep(0.5)  # the server trims freed memory 200 ms after large requests
    after = rss(server)
    t.check(after < before + 64 * MIB, f"3 x 40 concurrent 240 KB JSON bodies: RSS {before // MIB} -> "
            f"{after // MIB} MiB (bound: +64 MiB)")
    status = early_answer(server.port, "POST", "/v1/videos", json_headers(10 * 1000 * 1000), b'{"prompt": "xxx')
    t.check(status == 413, f"a 10 MB prompt: {status}")
    status, _, body = request(server, "POST", "/v1/videos", b"[" * (200 << 10), {"Content-Type": "application/json"})
    t.check(status == 400, f"200 KiB of '[' (under the 256 KiB JSON limit): {status}, refused before parsing")
    status, _, body = request(server, "POST", "/v1/videos", {"prompt": "x" * 4001, **FAST})
    t.check(status == 400 and json.loads(body)["error"]["param"] == "prompt", f"a 4001-character prompt: {status}")


def fuzz(server, t, count, idle):
    print(f"1. a fuzz of {count} hostile requests:")
    port = server.port
    rng = random.Random(20)
    kinds = [
        ("deep", lambda: (b"[" * rng.choice([1000, 100000, 1000000]), "application/json")),
        ("junk", lambda: (bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000))), "application/json")),
        ("text", lambda: (b'{"prompt": "x"}', "text/plain")),
        ("form", lambda: (b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n" + b"[" * 50000,
                          "multipart/form-data; boundary=b")),
    ]
    lock = threading.Lock()
    answers = {}

    def worker(n):
        for i in range(n):
            kind, make = rng.choice(kinds)
            body, ctype = make()
            method = rng.choice(["POST", "POST", "POST", "BREW", "P\xd8ST"])
            # A method the server does not know is refused before the body is read, and the
            # connection closed: the client may see the 400/501 or a reset.
            known = method == "POST"
            # A body over the 256 KiB JSON limit is refused unread and the connection closed:
            # this client sends it all before reading, so it may see the 413 or a reset.
            unread = ctype == "application/json" and len(body) > (256 << 10)
            path = rng.choice(["/v1/videos", "/v1/images/generations", "/v1/videos/generations", "/nope"])
            head = head_bytes(method, path, {"Content-Type": ctype, "Content-Length": str(len(body)),
                                             "Authorization": f"Bearer {KEY}"})
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(head.replace(b"\xc3\x98", b"\xd8") + body)
                    status = read_status(s)
            except OSError:
                status = -1
            with lock:
                key = status
                if status == -1 and not known:
                    key = "reset (unknown method)"
                elif status == -1 and unread:
                    key = "reset (over the limit, unread)"
                answers[key] = answers.get(key, 0) + 1

    workers = 8
    threads = [threading.Thread(target=worker, args=(count // workers,)) for _ in range(workers)]
    t0 = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    after = rss(server)
    t.check(all(isinstance(s, str) or 400 <= s < 600 for s in answers),
            f"{count} requests in {time.time() - t0:.0f} s, answers {answers}")
    t.check(after < 2 * idle, f"RSS {idle // MIB} MiB idle -> {after // MIB} MiB after the fuzz (bound: 2x idle)")


def metrics_labels(server, t):
    print("5. /metrics labels are bounded and valid UTF-8:")
    for i in range(300):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"M{i}X /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() if i % 2 else
                      b"\xff\xfe\x01 /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status = read_status(s)
            if i < 2:
                t.check(status in (400, 501), f"method {'raw bytes' if i % 2 == 0 else 'M1X'}: {status}")
    status, _, body = request(server, "GET", "/metrics")
    try:
        text = body.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        text, valid = "", False
    series = [line for line in text.splitlines() if line.startswith("vgen_http_requests_total{")]
    t.check(valid, "/metrics is valid UTF-8")
    t.check(len(series) < 40, f"{len(series)} request series after 300 invented methods (was one per method)")
    t.check("vgen_device_memory_allocated_bytes{" in text and "vgen_generation_peak_device_memory_bytes{" in text,
            "/metrics has device memory figures")


SLOW_CLIENTS = 400  # more than the 256 handler threads: slow clients must hold none
HEADER_DEADLINE = 10  # s, vgen serve's header_timeout


def slow_and_mixed(server, t, seconds):
    print(f"6. {SLOW_CLIENTS} slow connections (a header byte every 2 s) and 50 mixed clients for {seconds} s:")
    port = server.port
    before = rss(server)
    stop = threading.Event()
    slow_socks, slow_lives, slow_open = [], [], []

    def slow_client():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            return
        opened = time.time()
        slow_socks.append(s)
        s.settimeout(2.0)
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
        for b in head:
            try:
                s.send(bytes([b]))
                data = s.recv(1)  # waits 2 s; b"" once the server has closed the connection
            except socket.timeout:
                if stop.is_set():
                    break
                continue
            except OSError:
                data = b""
            slow_lives.append((time.time() - opened, data))
            return
        slow_open.append(time.time() - opened)

    def hostile_client():
        rng = random.Random(threading.get_ident())
        while not stop.wait(0.01):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    body = b"[" * rng.choice([10, 100000])
                    s.sendall(head_bytes("POST", "/v1/videos", json_headers(len(body))) + body)
                    read_status(s)
            except OSError:
                pass

    valid_ids, valid_errors = [], []

    def valid_client(i):
        try:
            status, _, body = request(server, "POST", "/v1/videos", {"prompt": f"valid {i}", "num_frames": 1, **FAST})
            if status == 200:
                valid_ids.append(json.loads(body)["id"])
            else:
                valid_errors.append(status)
        except OSError as e:
            valid_errors.append(str(e))

    # Its own process: the client threads here share one interpreter lock, whose waits
    # would count as the server's.
    results = multiprocessing.get_context("fork").Queue()
    stop_polling = multiprocessing.get_context("fork").Event()

    def health_poller():
        worst, failures = 0.0, []
        while not stop_polling.is_set():
            t0 = time.time()
            try:
                status, _, _ = request(server, "GET", "/health", timeout=5)
            except OSError as e:
                status = str(e)
            elapsed = time.time() - t0
            worst = max(worst, elapsed)
            if status != 200 or elapsed > 1.0:
                failures.append((status, round(elapsed, 2)))
            time.sleep(0.1)
        results.put((worst, failures))

    threads = [threading.Thread(target=slow_client) for _ in range(SLOW_CLIENTS)]
    threads += [threading.Thread(target=hostile_client) for _ in range(30)]
    threads += [threading.Thread(target=valid_client, args=(i,)) for i in range(20)]
    poller = multiprocessing.get_context("fork").Process(target=health_poller)
    poller.start()
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop_polling.set()
    health_worst, health_failures = results.get(timeout=30)
    poller.join()
    stop.set()
    for th in threads:
        th.join()
    for s in slow_socks:
        s.close()
    t.check(not health_failures, f"/health answered within 1 s throughout (worst {health_worst:.2f} s) "
            f"{health_failures[:5]}")
    lives = sorted(life for life, _ in slow_lives)
    t.check(len(lives) == SLOW_CLIENTS and not slow_open and all(data == b"" for _, data in slow_lives)
            and HEADER_DEADLINE - 1 <= lives[0] and lives[-1] <= HEADER_DEADLINE + 3,
            f"the server closed all {len(lives)} slow connections at the {HEADER_DEADLINE} s header deadline "
            f"(after {lives[0] if lives else 0:.1f} to {lives[-1] if lives else 0:.1f} s; {len(slow_open)} still open)")
    t.check(len(valid_ids) == 20, f"20 valid jobs accepted ({len(valid_ids)}; errors {valid_errors[:3]})")
    deadline = time.time() + 120
    states = {}
    while time.time() < deadline:
        states = {}
        for vid in valid_ids:
            _, _, body = request(server, "GET", f"/v1/videos/{vid}")
            states[vid] = json.loads(body)["status"]
        if all(s in ("completed", "failed") for s in states.values()):
            break
        time.sleep(0.2)
    t.check(states and all(s == "completed" for s in states.values()),
            f"every valid job completed: {sorted(set(states.values()))}")
    after = rss(server)
    t.check(after < 2 * before + 64 * MIB, f"RSS {before // MIB} -> {after // MIB} MiB (bound: 2x + 64 MiB)")
    backlog = listen_backlog(port)
    if backlog is not None:
        t.check(backlog >= 1024, f"listen backlog {backlog} (cpp-httplib's was 5)")


def listen_backlog(port):
    """The backlog of the listening socket on `port` (ss's Send-Q), None without ss."""
    try:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            return int(fields[2])
    return None


def no_key_defaults(binary, model, root, t):
    print("7. without an API key: loopback Host only, same-origin browsers only, JSON bodies only:")
    server = Server(binary, model, os.path.join(root, "media_nokey")).start()
    try:
        port = server.port
        ok = {"prompt": "x", "size": "50x32"}  # rejected by the model: no generation runs
        status, _, _ = request(server, "POST", "/v1/videos", json.dumps(ok).encode(), {"Content-Type": "text/plain"})
        t.check(status == 415, f"text/plain body: {status} (was parsed as JSON)")
        status, _, _ = request(server, "POST", "/v1/videos", json.dumps(ok).encode(), {})
        t.check(status == 415, f"no Content-Type: {status}")
        status, _, _ = request(server, "POST", "/v1/videos", ok, {"Host": "evil.example:8000"})
        t.check(status == 403, f"foreign Host (DNS rebinding): {status}")
        status, _, _ = request(server, "GET", "/v1/videos", None, {"Host": "evil.example"})
        t.check(status == 403, f"foreign Host on a GET: {status}")
        status, _, _ = request(server, "POST", "/v1/videos", ok, {"Origin": "http://evil.example"})
        t.check(status == 403, f"cross-origin browser request: {status}")
        status, _, _ = request(server, "POST", "/v1/videos", ok, {"Origin": f"http://127.0.0.1:{port}",
                                                                  "Host": f"127.0.0.1:{port}"})
        t.check(status == 400, f"same-origin request reaches validation: {status}")
        status, _, _ = request(server, "POST", "/v1/videos", ok, {"Host": f"localhost:{port}"})
        t.check(status == 400, f"Host localhost reaches validation: {status}")

        print("3. a second server on a port in use does not start:")
        r = subprocess.run([binary, "serve", "--model", model, "--port", str(port), "--media-dir",
                            os.path.join(root, "media_second")], capture_output=True, text=True, timeout=60)
        t.check(r.returncode == 1 and "cannot listen" in r.stderr, f"second server: exit {r.returncode}, "
                f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
        t.check(not os.path.exists(os.path.join(root, "media_second")), "it leaves no media directory behind")

        print("issue 11: a model that cannot load fails before 'listening' and leaves nothing behind:")
        # A checkpoint whose transformer weights are cut short: found only by loading it, which
        # runs while /health answers 503.
        broken = os.path.join(root, "broken_model")
        shutil.copytree(model, broken)
        for dirpath, _, files in os.walk(os.path.join(broken, "transformer")):
            for name in files:
                if name.endswith(".safetensors"):
                    with open(os.path.join(dirpath, name), "r+b") as f:
                        f.truncate(os.path.getsize(os.path.join(dirpath, name)) // 2)
        cases = [("no model folder", ["--model", os.path.join(root, "no_such_model")]),
                 ("a broken checkpoint", ["--model", broken])]
        if not os.path.exists("/dev/nvidia0") and not os.path.exists("/dev/nvidiactl"):
            cases.append(("--device cuda without a GPU", ["--model", model, "--device", "cuda"]))
        for what, args in cases:
            media = os.path.join(root, "media_bad_model")
            r = subprocess.run([binary, "serve", "--port", "0", "--media-dir", media] + args,
                               capture_output=True, text=True, timeout=120)
            out = r.stdout + r.stderr
            t.check(r.returncode == 1 and "listening" not in out and not os.path.exists(media),
                    f"{what}: exit {r.returncode}, no 'listening', no media directory: {r.stderr.strip()[-150:]}")

    finally:
        t.check(server.stop() == 0, "clean stop")
    print("11. access log:")
    t.check(any("POST /v1/videos 415" in line and " ms" in line for line in server.log_text().splitlines()),
            "one line per request: method, path, status, duration")


def not_ready_409(server, t):
    print("9. a not-ready download:")
    status, _, body = request(server, "POST", "/v1/videos", {"prompt": "slow", "size": "256x256", "num_frames": 17,
                                                             "num_inference_steps": 30})
    vid = json.loads(body)["id"]
    status, h, _ = request(server, "GET", f"/v1/videos/{vid}/content")
    t.check(status == 409 and h.get("x-should-retry") == "false", f"409 with x-should-retry: false ({status})")
    status, _, body = request(server, "GET", f"/v1/videos/{vid}")
    t.check("openai-poll-after-ms" in h or status == 200, "the job itself can be polled")
    request(server, "DELETE", f"/v1/videos/{vid}")
    return vid


def main():
    binary, model = parse_args()
    root = tempfile.mkdtemp(prefix="vgen_hardening_")
    t = Checks()
    server = Server(binary, model, os.path.join(root, "media"), api_key=KEY).start()
    vid = None
    try:
        request(server, "GET", "/metrics")  # warm: the first scrape allocates its buffers
        idle = rss(server)
        print(f"idle RSS {idle // MIB} MiB")
        fuzz(server, t, int(os.environ.get("VGEN_FUZZ_REQUESTS", "10000")), idle)
        json_attacks(server, t)
        body_limits(server, t)
        metrics_labels(server, t)
        vid = not_ready_409(server, t)
        slow_and_mixed(server, t, seconds=HEADER_DEADLINE + 4)
        status, _, _ = request(server, "GET", "/health")
        t.check(status == 200, "healthy after all of it")
    finally:
        t.check(server.stop() == 0, "clean stop")
    # The log is complete once the server has stopped.
    t.check(vid and any(vid in line and "DELETE" in line for line in server.log_text().splitlines()),
            "11. the access log names the job a request named")
    no_key_defaults(binary, model, root, t)
    t.finish(root)


if __name__ == "__main__":
    main()
