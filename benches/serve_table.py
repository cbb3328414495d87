#!/usr/bin/env python3
"""The serving table of the speed-and-memory issue, in one command.

Starts kana-host on a free port with the shipped spin.toml (fresh state dir, the given compile
cache), then measures, for every served model (`GET /models`, or `--models`):

- start: process start -> first `/health` 200 and -> first `/predict/<model>` 200 (1 image);
- 1 image, 1 client: p50 latency over HTTP;
- 100-image npz at 1 and 4 clients: images/s (keep-alive, multipart like the reference README);
- RSS of the host after each model's runs (VmRSS), and idle RSS right after start;
- with `--big`: a 38,547-image npz (the K49 test-set size, tiled from the fixtures) sent to
  `/predict/<model>` and to `/async_predict/<model>` (polled until done), time and peak RSS.

Prints a Markdown table. Standard library, plus numpy for `--big` only.

    cargo xtask build-components && cargo build -p kana-host
    python3 benches/serve_table.py --host target/debug/kana-host --seconds 5 --big
"""

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadtest  # noqa: E402  (the keep-alive client)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE = os.path.join(ROOT, "fixtures/k49/test_image_0.npz")
HUNDRED = os.path.join(ROOT, "fixtures/k49/test_images_100.npz")
BIG_COUNT = 38_547


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples a process's RSS every 20 ms while running."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def post(url, body, content_type, timeout=600):
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_host(args, state):
    started = time.perf_counter()
    proc = subprocess.Popen(
        [args.host, "up", "--listen", "127.0.0.1:0", "--manifest", os.path.join(ROOT, "spin.toml"),
         "--state-dir", state, "--cache-dir", args.cache_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = None
    for line in proc.stdout:
        m = re.match(r"Serving (http://\S+)", line)
        if m:
            base = m.group(1)
            break
    if base is None:
        proc.kill()
        sys.exit("the host exited before serving (build it, and the components, first)")
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, base, started


def wait_for(fn, deadline_s=120):
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        try:
            if fn():
                return time.perf_counter()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise TimeoutError("host did not answer")


def load(base, model, path, images, clients, seconds):
    """images/s and latencies from loadtest's client threads (2 s warm-up not counted)."""
    url = urllib.parse.urlsplit(f"{base}/predict/{model}")
    body = loadtest.multipart(path)
    lock = threading.Lock()
    warm = [threading.Thread(target=loadtest.client, args=(url, body, time.perf_counter() + 1, [], [], images, lock))
            for _ in range(clients)]
    [t.start() for t in warm]
    [t.join() for t in warm]
    latencies, errors = [], []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=loadtest.client, args=(url, body, t0 + seconds, latencies, errors, images, lock))
               for _ in range(clients)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3 if latencies else float("nan")
    return len(latencies) * images / wall, p50, len(errors)


def big_npz():
    import numpy as np
    with np.load(HUNDRED) as z:
        base = z[z.files[0]]
    reps = -(-BIG_COUNT // len(base))
    imgs = np.concatenate([base] * reps)[:BIG_COUNT]
    buf = io.BytesIO()
    np.savez_compressed(buf, arr_0=imgs)
    return buf.getvalue()


def big_runs(base, pid, model):
    body = big_npz()
    rows = []
    with PeakRss(pid) as peak:
        t0 = time.perf_counter()
        status, reply = post(f"{base}/predict/{model}", body, "application/x-npz")
        sync_s = time.perf_counter() - t0
    detail = "" if status == 200 else f" ({json.loads(reply).get('kind', '?')}: {json.loads(reply).get('error', '')[:120]})"
    rows.append((f"{BIG_COUNT:,} images, sync /predict", f"{status}{detail}", f"{sync_s:.1f} s", f"{peak.peak:.0f}"))
    with PeakRss(pid) as peak:
        t0 = time.perf_counter()
        status, reply = post(f"{base}/async_predict/{model}", body, "application/x-npz")
        if status != 202:
            rows.append((f"{BIG_COUNT:,} images, /async_predict", f"{status} {reply[:120]!r}", "", f"{peak.peak:.0f}"))
            return rows
        task = json.loads(reply)["task_id"]
        state = "?"
        while time.perf_counter() - t0 < 900:
            _, info = get(f"{base}/tasks/{task}")
            state = json.loads(info).get("status")
            if state in ("done", "failed"):
                break
            time.sleep(0.5)
        async_s = time.perf_counter() - t0
    rows.append((f"{BIG_COUNT:,} images, /async_predict until {state}", "202", f"{async_s:.1f} s", f"{peak.peak:.0f}"))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=os.path.join(ROOT, "target/debug/kana-host"))
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, "target/tmp/kana-host-compile-cache"))
    parser.add_argument("--models", help="comma-separated names (default: every served model)")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--big", action="store_true", help="also the 38,547-image file (first model only)")
    args = parser.parse_args()

    state = tempfile.mkdtemp(prefix="kana-serve-table-")
    proc, base, started = start_host(args, state)
    try:
        health = wait_for(lambda: get(f"{base}/health")[0] == 200) - started
        listing = json.loads(get(f"{base}/models")[1])
        models = args.models.split(",") if args.models else [m["name"] for m in listing["models"]]
        one = open(ONE, "rb").read()
        first = wait_for(lambda: post(f"{base}/predict/{models[0]}", one, "application/x-npz")[0] == 200) - started
        idle = rss_mib(proc.pid)
        print(f"host {args.host}, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"start -> /health 200: {health * 1e3:.0f} ms; -> first /predict/{models[0]} 200: {first * 1e3:.0f} ms; "
              f"RSS after that: {idle:.0f} MiB\n")
        print("| model | 1 image p50 (1 client) | 100 images, 1 client | 100 images, 4 clients | RSS after (MiB) |")
        print("|---|---|---|---|---|")
        for model in models:
            _, p50, e1 = load(base, model, ONE, 1, 1, args.seconds)
            r1, _, e2 = load(base, model, HUNDRED, 100, 1, args.seconds)
            r4, _, e3 = load(base, model, HUNDRED, 100, 4, args.seconds)
            errors = e1 + e2 + e3
            note = f" ({errors} errors)" if errors else ""
            print(f"| {model} | {p50:.2f} ms | {r1:,.0f} images/s | {r4:,.0f} images/s{note} | {rss_mib(proc.pid):.0f} |",
                  flush=True)
        if args.big:
            print(f"\n| large file ({models[0]}) | answer | time | peak RSS (MiB) |\n|---|---|---|---|")
            for row in big_runs(base, proc.pid, models[0]):
                print("| " + " | ".join(row) + " |", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
