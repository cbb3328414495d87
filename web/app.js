// kana-edge drawing page: plain JS, no build step, no network beyond this server.
// Draw → preprocess like the training data (white on black, cropped to the ink, longer side
// scaled to 24 px, centred in 28×28) → POST /predict/{model}?top_k=5 as a JSON pixel array.
"use strict";

const SIZE = 28;       // model input (every shipped card: [1, 28, 28])
const FIT = 24;        // the ink's longer side after scaling, like K49's centred characters
const BRUSH = 16;      // px on the 280 px pad: ~2 px strokes once scaled into 28×28
const DEBOUNCE_MS = 150;

const $ = (id) => document.getElementById(id);
const pad = $("pad"), preview = $("preview"), modelSelect = $("model");
const ink = pad.getContext("2d", { willReadFrequently: true });
let timer = 0, sequence = 0;

// ------------------------------------------------------------------ models
async function loadModels() {
  try {
    const reply = await fetch("/models");
    const { models } = await reply.json();
    const hiragana = (m) => (m.classes || []).some((c) => /[\u3040-\u309f]/.test(c.label));
    models.sort((a, b) => hiragana(b) - hiragana(a) || a.name.localeCompare(b.name));
    modelSelect.replaceChildren(...models.map((m) => {
      const aliases = (m.aliases || []).length ? ` (${m.aliases.join(", ")})` : "";
      return new Option(`${m.name}${aliases} · ${m.classes.length} classes`, m.name);
    }));
  } catch (e) {
    modelSelect.replaceChildren(new Option("no models", ""));
    $("draw-status").textContent = `GET /models failed: ${e}`;
  }
}
modelSelect.addEventListener("change", () => schedule());

// ------------------------------------------------------------------ drawing
function clearPad() {
  clearTimeout(timer);
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  preview.getContext("2d").clearRect(0, 0, SIZE, SIZE);
  $("top5").replaceChildren();
  $("draw-status").textContent = "";
  sequence++;
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

let last = null;
pad.addEventListener("pointerdown", (e) => {
  pad.setPointerCapture(e.pointerId);
  last = point(e);
  stroke(last, last);
});
pad.addEventListener("pointermove", (e) => {
  if (!last) return;
  for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) {
    const p = point(ev);
    stroke(last, p);
    last = p;
  }
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (last) { last = null; schedule(); } });
}

function stroke([x0, y0], [x1, y1]) {
  ink.strokeStyle = "#fff";
  ink.lineWidth = BRUSH;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(x0, y0);
  ink.lineTo(x1, y1);
  ink.stroke();
}

$("clear").addEventListener("click", clearPad);

// ------------------------------------------------------------------ preprocessing
/** The ink's bounding box on the pad, or null when it is blank. */
function inkBox() {
  const { data, width, height } = ink.getImageData(0, 0, pad.width, pad.height);
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * 4] > 16) {
        if (x < x0) x0 = x; if (x > x1) x1 = x;
        if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? null : { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 };
}

function canvas(size) {
  const c = document.createElement("canvas");
  c.width = c.height = size;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.imageSmoothingEnabled = true;
  g.imageSmoothingQuality = "high";
  g.fillStyle = "#000";
  g.fillRect(0, 0, size, size);
  return [c, g];
}

/** 28 rows of 28 ints 0-255 (white ink high), drawn into the preview; null when blank. */
function toPixels() {
  const box = inkBox();
  if (!box) return null;
  // Crop and fit at 4× first, then halve twice: smoother than one 10× downscale.
  let [c, g] = canvas(SIZE * 4);
  const scale = (FIT * 4) / Math.max(box.w, box.h);
  const w = box.w * scale, h = box.h * scale;
  g.drawImage(pad, box.x, box.y, box.w, box.h, (c.width - w) / 2, (c.height - h) / 2, w, h);
  for (const size of [SIZE * 2, SIZE]) {
    const [next, ng] = canvas(size);
    ng.drawImage(c, 0, 0, size, size);
    [c, g] = [next, ng];
  }
  const { data } = g.getImageData(0, 0, SIZE, SIZE);
  const p = preview.getContext("2d");
  p.putImageData(new ImageData(data, SIZE, SIZE), 0, 0);
  return Array.from({ length: SIZE }, (_, y) => Array.from({ length: SIZE }, (_, x) => data[(y * SIZE + x) * 4]));
}

// ------------------------------------------------------------------ prediction
function schedule() {
  clearTimeout(timer);
  timer = setTimeout(predictDrawing, DEBOUNCE_MS);
}

/** The request the page sends (the host test web.rs sends the same shape). */
function predictRequest(model, pixels) {
  return fetch(`/predict/${encodeURIComponent(model)}?top_k=5`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([pixels]), // [N=1][28][28]
  });
}

async function predictDrawing() {
  const pixels = toPixels(), model = modelSelect.value;
  if (!pixels || !model) return;
  const mine = ++sequence, started = performance.now();
  try {
    const reply = await predictRequest(model, pixels);
    const json = await reply.json();
    if (mine !== sequence) return; // a newer drawing is on its way
    if (!reply.ok) throw new Error(json.error || reply.status);
    showTop5(json.results[0].top_k || []);
    $("draw-status").textContent = `${Math.round(performance.now() - started)} ms`;
  } catch (e) {
    if (mine === sequence) $("draw-status").textContent = `predict failed: ${e.message || e}`;
  }
}

function showTop5(top) {
  $("top5").replaceChildren(...top.map((t) => {
    const p = Number(t.probability);
    const li = document.createElement("li");
    li.innerHTML = `<span class="label"></span><span class="bar"></span><span class="p"></span>`;
    li.querySelector(".label").textContent = t.prediction;
    li.querySelector(".bar").style.width = `${(p * 100).toFixed(1)}%`;
    li.querySelector(".p").textContent = `${(p * 100).toFixed(1)}%`;
    return li;
  }));
}

// ------------------------------------------------------------------ upload
function uploadType(file) {
  if (/\.npz$/i.test(file.name)) return "application/x-npz";
  return ["image/png", "image/jpeg"].includes(file.type) ? file.type : "application/octet-stream";
}

function post(path, file) {
  return fetch(path, { method: "POST", headers: { "Content-Type": uploadType(file) }, body: file });
}

const showStatus = (text, error = false) => {
  $("upload-status").textContent = text;
  $("upload-status").className = error ? "error" : "muted";
};

// The contact sheet (inputs with their top-1, first 100): a job's is a URL; an upload's is the
// same POST with ?format=png, shown from a blob URL.
function showSheet(href) {
  const link = $("sheet");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.hidden = !href;
  if (href) link.href = href;
}

async function uploadSheet(model, file) {
  const reply = await fetch(`/predict/${encodeURIComponent(model)}?format=png`,
    { method: "POST", headers: { "Content-Type": uploadType(file) }, body: file });
  if (reply.ok) showSheet(URL.createObjectURL(await reply.blob()));
}

$("file").addEventListener("change", async () => {
  const files = [...$("file").files], model = modelSelect.value;
  $("async").disabled = files.length === 0;
  $("grid").replaceChildren();
  showSheet(null);
  let count = 0;
  for (const file of files) {
    showStatus(`predicting ${file.name}…`);
    try {
      const reply = await post(`/predict/${encodeURIComponent(model)}`, file);
      const json = await reply.json();
      if (!reply.ok) throw new Error(json.error || reply.status);
      const thumbnail = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
      for (const r of json.results) $("grid").append(cell(file.name, r, thumbnail));
      count += json.results.length;
    } catch (e) {
      showStatus(`${file.name}: ${e.message || e}`, true);
      return;
    }
  }
  showStatus(`${count} image(s), model ${model}`);
  if (files.length) await uploadSheet(model, files[0]);
});

function cell(name, result, thumbnail) {
  const li = document.createElement("li");
  if (thumbnail) li.append(Object.assign(document.createElement("img"), { src: thumbnail, alt: name }));
  const label = Object.assign(document.createElement("span"), { className: "label", textContent: result.prediction });
  const caption = document.createTextNode(`#${result.index} · ${(Number(result.probability) * 100).toFixed(0)}%`);
  li.append(label, caption);
  li.title = `${name} #${result.index}`;
  return li;
}

$("async").addEventListener("click", async () => {
  const file = $("file").files[0], model = modelSelect.value; // the first file of the selection
  if (!file) return;
  $("async").disabled = true;
  showSheet(null);
  try {
    const reply = await post(`/async_predict/${encodeURIComponent(model)}`, file);
    const job = await reply.json();
    if (reply.status !== 202) throw new Error(job.error || reply.status);
    for (;;) {
      const task = await (await fetch(job.status_url)).json();
      showStatus(`job ${task.task_id}: ${task.status} (${task.images_done ?? 0}/${task.images ?? "?"} images)`);
      if (task.status === "failed") throw new Error(task.error || "job failed");
      if (task.status === "done") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const results = await (await fetch(`${job.status_url}/results`)).json();
    showStatus(`job ${job.task_id}: done, ${results.results.length} results`);
    showSheet(`${job.status_url}/sheet.png`);
  } catch (e) {
    showStatus(`async job: ${e.message || e}`, true);
  } finally {
    $("async").disabled = false;
  }
});

clearPad();
loadModels();
