#!/usr/bin/env python3
"""Measure time to 202 for /async_predict (100-image fixture) vs /predict, and time from
execute_at to done for /schedule with the spin.toml cron period (10 s).
Usage: python3 components/jobs-core/measure.py http://127.0.0.1:3000 (a running host with a model "cnn")"""
import datetime, json, pathlib, statistics, sys, time, urllib.error, urllib.request

base = sys.argv[1]
fixture = open(pathlib.Path(__file__).resolve().parents[2] / 'fixtures/k49/test_images_100.npz', 'rb').read()
boundary = 'measureboundary123'
body = (f'--{boundary}\r\nContent-Disposition: form-data; name="upload_file"; filename="test_images_100.npz"\r\n'
        f'Content-Type: application/x-npz\r\n\r\n').encode() + fixture + f'\r\n--{boundary}--\r\n'.encode()
ct = f'multipart/form-data; boundary={boundary}'

def post(path):
    req = urllib.request.Request(base + path, data=body, method='POST', headers={'Content-Type': ct})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as r:
            data = r.read(); status = r.status
    except urllib.error.HTTPError as e:
        data = e.read(); status = e.code
    return status, json.loads(data), (time.perf_counter() - t) * 1e3

def get(path):
    with urllib.request.urlopen(base + path) as r:
        return json.loads(r.read())

def parse(s):
    return datetime.datetime.fromisoformat(s.replace('Z', '+00:00'))

# warm both components
post('/predict/cnn'); post('/async_predict/cnn')
sync, accepted, done_after = [], [], []
for _ in range(20):
    s, j, ms = post('/predict/cnn'); assert s == 200, j; sync.append(ms)
for _ in range(20):
    s, j, ms = post('/async_predict/cnn'); assert s == 202, j; accepted.append(ms)
    t0 = time.perf_counter()
    while get(j['status_url'])['status'] != 'done':
        time.sleep(0.005)
    done_after.append((time.perf_counter() - t0) * 1e3 + ms)
    time.sleep(0.3)
p50 = statistics.median
print(f'/predict 100 images: p50 {p50(sync):.1f} ms (min {min(sync):.1f}, max {max(sync):.1f})')
print(f'/async_predict 100 images, time to 202: p50 {p50(accepted):.1f} ms (min {min(accepted):.1f}, max {max(accepted):.1f})')
print(f'/async_predict 100 images, submit to done (seen by polling): p50 {p50(done_after):.1f} ms')

# schedule: execute_at spread over the cron period
lags, ids = [], []
now = datetime.datetime.now(datetime.timezone.utc)
for k in range(6):
    at = (now + datetime.timedelta(seconds=3 + k * 1.7)).replace(microsecond=0)
    s, j, _ = post('/schedule/cnn?execute_at=' + at.strftime('%Y-%m-%dT%H:%M:%SZ').replace(':', '%3A'))
    assert s == 202, j
    ids.append((j['task_id'], at))
for tid, at in ids:
    while True:
        t = get(f'/tasks/{tid}')
        if t['status'] == 'done':
            break
        time.sleep(0.1)
    lag = (parse(t['finished_at']) - at).total_seconds()
    start = (parse(t['started_at']) - at).total_seconds()
    lags.append(lag)
    print(f'  execute_at {at.isoformat()} started +{start:.3f} s, done +{lag:.3f} s')
print(f'/schedule execute_at -> done: mean {statistics.mean(lags):.2f} s, max {max(lags):.2f} s (cron every 10 s)')
