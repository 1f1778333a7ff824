"""Load: 50 concurrent clients, each with its own OpenAI SDK client, create a video job and
poll it to the end. Every job must complete and every MP4 be valid. Prints the submission
latency (p50/p99) and throughput."""

import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Checks, Server, ffprobe, parse_args, request, require_tools  # noqa: E402

CLIENTS = 50


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    binary, model = parse_args()
    require_tools("openai", programs=["ffprobe"])
    from openai import OpenAI
    warnings.simplefilter("ignore", DeprecationWarning)

    root = tempfile.mkdtemp(prefix="vgen_load_")
    server = Server(binary, model, os.path.join(root, "media"), api_key="k").start()
    t = Checks()
    results = [None] * CLIENTS
    start_gate = threading.Barrier(CLIENTS)

    def client(i):
        try:
            c = OpenAI(base_url=server.base_url + "/v1", api_key="k", max_retries=0, timeout=600)
            start_gate.wait()
            t0 = time.perf_counter()
            v = c.videos.create(prompt=f"client {i}", seconds="0.25", size="48x32",
                                extra_body={"num_inference_steps": 2, "seed": i})
            submit = time.perf_counter() - t0
            v = c.videos.poll(v.id)
            path = os.path.join(root, f"{i}.mp4")
            if v.status == "completed":
                c.videos.download_content(v.id).write_to_file(path)
            results[i] = (submit, time.perf_counter() - t0, v.id, v.status, path, None)
        except Exception as e:  # reported below, per client
            results[i] = (None, None, None, "exception", None, repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0

    try:
        errors = [r[5] for r in results if r[5]]
        t.check(not errors, f"no client raised ({errors[:3]})")
        statuses = [r[3] for r in results]
        t.check(statuses.count("completed") == CLIENTS, f"all {CLIENTS} jobs completed ({set(statuses)})")
        ids = {r[2] for r in results}
        t.check(len(ids) == CLIENTS, "distinct ids")
        valid = 0
        for r in results:
            if r[3] != "completed":
                continue
            s = ffprobe(r[4])
            # 0.25 s at 16 fps = 4 frames -> 5 on the 4k+1 grid.
            valid += (s["codec_name"], s["width"], s["height"], s["nb_read_frames"]) == ("h264", 48, 32, "5")
        t.check(valid == CLIENTS, f"{valid}/{CLIENTS} MP4 files are valid 48x32 H.264 with 5 frames")
        submits = [r[0] * 1000 for r in results if r[0] is not None]
        totals = [r[1] for r in results if r[1] is not None]
        if submits:
            print(f"submission latency over {len(submits)} clients: p50 {percentile(submits, 50):.1f} ms, "
                  f"p99 {percentile(submits, 99):.1f} ms, max {max(submits):.1f} ms")
            print(f"job end-to-end: p50 {statistics.median(totals):.2f} s, max {max(totals):.2f} s; "
                  f"wall {wall:.2f} s for {CLIENTS} jobs ({CLIENTS / wall:.2f} jobs/s)")
            t.check(percentile(submits, 99) < 5000, "p99 submission under 5 s (submission never waits for a job)")
        status, _, body = request(server, "GET", "/metrics")
        t.check(status == 200 and f'vgen_video_jobs{{state="completed"}} {CLIENTS}' in body.decode(),
                "metrics count every completed job")
    finally:
        t.check(server.stop() == 0, "clean stop")
    t.finish(root)


if __name__ == "__main__":
    main()
