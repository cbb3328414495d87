#!/usr/bin/env python3
"""The drawing page in a real browser: drives headless Chromium (Debian's `chromium`) over the
DevTools protocol, opens the page, draws "く" with mouse events on the canvas, waits for the
top 5 and saves a screenshot (docs/drawing-page.png was made this way). Needs the Python
package `websocket-client`; not part of `cargo xtask test` (yet).

    python3 benches/page_check.py http://127.0.0.1:3000/ docs/drawing-page.png
"""
import base64, json, subprocess, sys, time, urllib.request
import websocket

url = sys.argv[1]
out = sys.argv[2]
port = 9333
proc = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                         f"--remote-debugging-port={port}", "--window-size=1100,900", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            page = next(t for t in targets if t["type"] == "page")
            break
        except Exception:
            time.sleep(0.1)
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True)
    n = [0]
    def call(method, **params):
        n[0] += 1
        ws.send(json.dumps({"id": n[0], "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == n[0]:
                return msg.get("result", msg)
    def js(expr):
        return call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)["result"].get("value")
    call("Page.enable")
    call("Page.navigate", url=url)
    time.sleep(2)
    print("models:", js("[...document.querySelectorAll('#model option')].map(o => o.value).join(', ')"))
    box = js("(() => { const r = document.getElementById('pad').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
    x0, y0, w, h = box
    # "く": one chevron stroke, as fractions of the canvas.
    strokes = [
        [(0.62, 0.15), (0.35, 0.5), (0.62, 0.85)],
    ]
    for stroke in strokes:
        pts = []
        for (ax, ay), (bx, by) in zip(stroke, stroke[1:]):
            for i in range(12):
                t = i / 12
                pts.append((ax + (bx - ax) * t, ay + (by - ay) * t))
        pts.append(stroke[-1])
        sx, sy = pts[0]
        call("Input.dispatchMouseEvent", type="mousePressed", x=x0 + sx * w, y=y0 + sy * h, button="left", clickCount=1)
        for px, py in pts[1:]:
            call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + px * w, y=y0 + py * h, button="left", buttons=1)
        ex, ey = pts[-1]
        call("Input.dispatchMouseEvent", type="mouseReleased", x=x0 + ex * w, y=y0 + ey * h, button="left", clickCount=1)
    time.sleep(1.5)
    print("top5:", js("[...document.querySelectorAll('#top5 li')].map(li => li.textContent.replace(/\\s+/g, ' ').trim()).join(' | ')"))
    print("preview non-empty:", js("(() => { const d = document.getElementById('preview').getContext('2d').getImageData(0,0,28,28).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; })()"))
    print("status:", js("document.getElementById('draw-status').textContent"))
    shot = call("Page.captureScreenshot", format="png")
    open(out, "wb").write(base64.b64decode(shot["data"]))
    print("screenshot:", out)
finally:
    proc.terminate()
