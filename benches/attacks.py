#!/usr/bin/env python3
"""Re-runs the hardening issue's attacks against a running kana-host and prints a Markdown table
(attack, answer, time, host RSS growth). Standard library + numpy (bomb generation) only.

Start a host first (debug or release build; the shipped spin.toml and models), e.g.

    cargo run -p kana-host -- up --listen 127.0.0.1:3917 --state-dir /tmp/attacks \
        --request-timeout-secs 3
    python3 benches/attacks.py --url http://127.0.0.1:3917 --pid $(pgrep -f 127.0.0.1:3917)

The bombs are generated here, never committed. Numbers vary with the machine: report ranges.
"""

import argparse
import http.client
import io
import json
import socket
import struct
import threading
import time
import urllib.parse
import zipfile
import zlib

import numpy as np


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def npy_header(shape, descr="|u1"):
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    text += " " * (64 - (10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def npz(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, writer in members:
            with z.open(name, "w", force_zip64=True) as f:
                writer(f)
    return out.getvalue()


def header_bomb():
    """~200 bytes: a .npy header declaring 10^9 images and almost no data."""
    return npz([("x.npy", lambda f: f.write(npy_header((1_000_000_000, 28, 28)) + b"\0" * 100))])


def inflation_bomb(mib=1900):
    """~1.9 MB of deflated zeros that inflate to ~2 GB."""
    def write(f):
        f.write(npy_header((mib * 1024 * 1024 // 784, 28, 28)))
        chunk = b"\0" * (1 << 20)
        for _ in range(mib):
            f.write(chunk)
    return npz([("x.npy", write)])


def many_images(count):
    """A legitimate-looking upload of `count` images (compresses very well)."""
    rng = np.random.default_rng(0)
    base = (rng.random((16, 28, 28)) * 255).astype(np.uint8)  # 12.5 KB period: deflate finds it
    images = np.resize(base, (count, 28, 28))
    out = io.BytesIO()
    np.savez_compressed(out, x=images)
    return out.getvalue()


def png_bomb(side=8192):
    """A grey PNG of side×side pixels: ~70 KB deflated, side² bytes decoded."""
    raw = b"".join(b"\0" + b"\0" * side for _ in range(side))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def json_bomb(count=2_000_000):
    """A flat JSON array of `count` zeros (~4 MB)."""
    return b"[" + b"0," * (count - 1) + b"0]"


def deep_json(depth=100_000):
    return b"[" * depth + b"]" * depth


class Host:
    def __init__(self, url, pid):
        self.url = urllib.parse.urlparse(url)
        self.pid = pid

    def request(self, method, path, body=None, headers=None, timeout=120):
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=timeout)
        started = time.perf_counter()
        try:
            conn.request(method, path, body, headers or {})
            response = conn.getresponse()
            payload = response.read()
            return response.status, payload, time.perf_counter() - started, dict(response.getheaders())
        except Exception as e:  # noqa: BLE001 - a closed connection is an answer too
            return None, str(e).encode(), time.perf_counter() - started, {}
        finally:
            conn.close()

    def post(self, path, body, content_type="application/x-npz", **kw):
        return self.request("POST", path, body, {"content-type": content_type}, **kw)

    def raw(self, data, wait):
        s = socket.create_connection((self.url.hostname, self.url.port))
        s.sendall(data)
        s.settimeout(wait)
        started = time.perf_counter()
        try:
            got = s.recv(4096)
        except socket.timeout:
            got = b"(nothing)"
        s.close()
        return got, time.perf_counter() - started


def short(payload, n=90):
    text = payload.decode(errors="replace").replace("\n", " ")
    try:
        value = json.loads(text)
        if isinstance(value, dict) and "error" in value:
            text = value["error"]
        elif isinstance(value, dict) and "status" in value:
            text = f"status {value['status']}"
    except ValueError:
        pass
    return text[:n] + ("…" if len(text) > n else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:3917")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--model", default="hiragana-edge")
    ap.add_argument("--slow-model", default="fashion-mnist-resnet-wide")
    ap.add_argument("--settle-secs", type=int, default=0, help="wait this long (e.g. past --instance-idle-secs) before the last RSS sample")
    args = ap.parse_args()
    host = Host(args.url, args.pid)
    rows = []

    def row(attack, status, secs, note, rss_before):
        grown = rss_mib(host.pid) - rss_before
        rows.append((attack, status, f"{secs:.2f}", f"{grown:+d}", note))
        print(f"{attack}: {status} {secs:.2f}s RSS {grown:+d} MiB {note}", flush=True)

    start_rss = rss_mib(host.pid)
    # Warm up the components so the growth below is what the attacks cost.
    host.post(f"/predict/{args.model}", many_images(10))
    host.post(f"/async_predict/{args.model}", many_images(10))
    warm_rss = rss_mib(host.pid)
    print(f"RSS at start {start_rss} MiB, after warm-up {warm_rss} MiB", flush=True)

    for name, body, ctype in [
        ("npz header declaring 10^9 images (~200 B)", header_bomb(), "application/x-npz"),
        ("npz inflating to ~2 GB (1.9 MB)", inflation_bomb(), "application/x-npz"),
        ("PNG 8192×8192 (~70 KB)", png_bomb(), "image/png"),
        ("JSON array of 2·10^6 numbers (4 MB)", json_bomb(), "application/json"),
        ("JSON nested 10^5 deep", deep_json(), "application/json"),
    ]:
        for route in ["predict", "async_predict"]:
            before = rss_mib(host.pid)
            status, payload, secs, _ = host.post(f"/{route}/{args.model}", body, ctype)
            row(f"{name} → /{route}", status, secs, short(payload), before)

    for count in [100_000, 38_547]:
        before = rss_mib(host.pid)
        body = many_images(count)
        status, payload, secs, _ = host.post(f"/async_predict/{args.model}", body)
        row(f"{count:,}-image job (async, {len(body) // 1024} KB upload)", status, secs, short(payload), before)
        if status == 202:
            task = json.loads(payload)["status_url"]
            started = time.perf_counter()
            job, polls = {"status": "?"}, []
            while time.perf_counter() - started < 600:
                code, page, _, _ = host.request("GET", task)
                polls.append(code)
                # A poll can time out (504) while the jobs instance decodes the batch.
                if code == 200:
                    job = json.loads(page)
                    if job["status"] in ("done", "failed"):
                        break
                time.sleep(2)
            timeouts = sum(1 for c in polls if c != 200)
            note = (f"{job['status']}, runs={job.get('runs')}, turns={job.get('turns')}, "
                    f"{len(job.get('results', []))} results, {timeouts} of {len(polls)} polls not 200")
            row("  … that job, finished", job["status"], time.perf_counter() - started, note, before)

    before = rss_mib(host.pid)
    status, payload, secs, _ = host.post(f"/predict/{args.slow_model}", many_images(1000))
    row(f"1,000 images on {args.slow_model} with --request-timeout-secs 3", status, secs, short(payload), before)

    # Two slow predicts in flight: how long does /health take meanwhile?
    before = rss_mib(host.pid)
    slow = [threading.Thread(target=host.post, args=(f"/predict/{args.slow_model}", many_images(1000))) for _ in range(2)]
    for t in slow:
        t.start()
    time.sleep(0.5)
    status, payload, secs, _ = host.request("GET", "/health")
    for t in slow:
        t.join()
    row("/health while two 1,000-image resnet-wide predicts run", status, secs, short(payload), before)

    # A client that hangs up: does the host keep computing?
    before = rss_mib(host.pid)
    body = many_images(1000)
    s = socket.create_connection((host.url.hostname, host.url.port))
    s.sendall(
        f"POST /predict/{args.slow_model} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npz\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(0.5)
    s.close()
    time.sleep(0.5)
    cpu0 = cpu_seconds(host.pid)
    time.sleep(3)
    burned = cpu_seconds(host.pid) - cpu0
    row("client hangs up 0.5 s into a 1,000-image predict", "closed", 0.5, f"host CPU in the next 3 s: {burned:.2f} s", before)

    # 24 concurrent 15 MiB uploads.
    before = rss_mib(host.pid)
    big = b"\0" * (15 << 20)
    results = []
    def upload():
        results.append(host.post(f"/predict/{args.model}", big)[0])
    threads = [threading.Thread(target=upload) for _ in range(24)]
    peak = before
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(host.pid))
        time.sleep(0.05)
    statuses = ",".join(f"{c}×{results.count(c)}" for c in sorted(set(results), key=str))
    rows.append(("24 concurrent 15 MiB uploads", statuses, "", f"peak {peak - before:+d}", ""))
    print(f"24 uploads: {statuses}, RSS peak {peak - before:+d} MiB", flush=True)

    # A body at 1 byte per second.
    started = time.perf_counter()
    s = socket.create_connection((host.url.hostname, host.url.port))
    s.sendall(f"POST /predict/{args.model} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
    s.settimeout(1)
    answer = b""
    while time.perf_counter() - started < 60:
        try:
            s.sendall(b"x")
            answer = s.recv(4096)
            if answer:
                break
        except socket.timeout:
            continue
        except OSError:
            answer = b"(closed)"
            break
    s.close()
    rows.append(("body at 1 byte/s", answer.split(b"\r\n")[0].decode(errors="replace"), f"{time.perf_counter() - started:.1f}", "", ""))
    print(rows[-1], flush=True)

    # 500 connections that send half a request line.
    before = rss_mib(host.pid)
    started = time.perf_counter()
    socks = []
    for _ in range(500):
        c = socket.create_connection((host.url.hostname, host.url.port))
        c.sendall(b"GET /health HTTP/1.1\r\nHo")
        socks.append(c)
    for c in socks:
        c.settimeout(30)
    closed = 0
    for c in socks:
        try:
            data = c.recv(4096)
            closed += 1 if data is not None else 0
        except socket.timeout:
            pass
        c.close()
    rows.append(("500 half-sent requests", f"{closed}/500 closed by the host", f"{time.perf_counter() - started:.1f}", f"{rss_mib(host.pid) - before:+d}", ""))
    print(rows[-1], flush=True)

    # Routing and headers.
    got, _ = host.raw(
        b"GET /tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5
    )
    rows.append(("GET /tasks (listing)", got.split(b"\r\n")[0].decode(), "", "", short(got.split(b"\r\n\r\n", 1)[-1])))
    status, payload, secs, _ = host.request("GET", "/health/debug/trap")
    rows.append(("GET /health/debug/trap", status, f"{secs:.2f}", "", short(payload)))

    end_rss = rss_mib(host.pid)
    time.sleep(args.settle_secs)
    settled_rss = rss_mib(host.pid)
    print()
    print(f"Host RSS: {start_rss} MiB at start, {warm_rss} MiB after warm-up, {end_rss} MiB right after the run, "
          f"{settled_rss} MiB {args.settle_secs} s later.")
    print()
    print("| attack | answer | s | RSS MiB | detail |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
