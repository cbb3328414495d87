#!/usr/bin/env python3
"""Loopback load test for POST /predict/{model} (no oha/wrk on the build machines).

Sends the reference README's request (multipart field `upload_file`, type application/x-npz)
over keep-alive connections, one thread per client, and prints latency percentiles and
images/s. Standard library only.

    python3 benches/loadtest.py --url http://127.0.0.1:3000/predict/cnn \
        --file fixtures/k49/test_images_100.npz --images 100 --concurrency 4 --seconds 10
"""

import argparse
import http.client
import socket
import statistics
import threading
import time
import urllib.parse

BOUNDARY = "kanaedgeloadtestboundary"


def multipart(path):
    with open(path, "rb") as f:
        data = f.read()
    name = path.rsplit("/", 1)[-1]
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"upload_file\"; filename=\"{name}\"\r\n"
        "Content-Type: application/x-npz\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def client(url, body, deadline, latencies, errors, images, lock):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.connect()
    # Without this, Nagle + delayed ACK can add 40 ms stalls that measure the client, not the server.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {
        "accept": "application/json",
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    mine = []
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        conn.request("POST", url.path + (f"?{url.query}" if url.query else ""), body, headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200 or payload.count(b'"index"') != images:
            with lock:
                errors.append((response.status, payload[:200]))
            continue
        mine.append(elapsed)
    conn.close()
    with lock:
        latencies.extend(mine)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--images", type=int, required=True, help="images in the file (checked in replies)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    body = multipart(args.file)

    warm_errors, lock = [], threading.Lock()
    # 2 s not counted: warms every instance (each loads the model once).
    warm = [threading.Thread(target=client, args=(url, body, time.perf_counter() + 2, [], warm_errors, args.images, lock))
            for _ in range(args.concurrency)]
    [t.start() for t in warm]
    [t.join() for t in warm]

    latencies, errors = [], []
    started = time.perf_counter()
    deadline = started + args.seconds
    threads = [threading.Thread(target=client, args=(url, body, deadline, latencies, errors, args.images, lock))
               for _ in range(args.concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - started
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3
    print(f"file={args.file} concurrency={args.concurrency} requests={len(latencies)} errors={len(errors)} wall={wall:.1f}s")
    print(f"latency ms: p50={pct(50):.2f} p90={pct(90):.2f} p99={pct(99):.2f} mean={statistics.mean(latencies) * 1e3:.2f}")
    print(f"requests/s={len(latencies) / wall:.1f} images/s={len(latencies) * args.images / wall:.0f}")
    if errors:
        print("first error:", errors[0])


if __name__ == "__main__":
    main()
