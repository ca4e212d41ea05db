// medsam-lite serve: the page. Talks only to the documented /api endpoints (see docs/serve.md).
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  caseId: null, info: null, z: 0, selected: null, colours: [],
  zoom: 1, panX: 0, panY: 0, drag: null, embedTimer: null, labels: null,
  newMode: false, hidden: new Set(), job: null, wl: null, readoutBusy: false, sliceBusy: false,
};

// ------------------------------------------------------------------ helpers
function message(text, kind) {
  const el = $("message");
  el.textContent = text || "";
  el.className = kind || "";
}

async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) {
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(url, opts);
  if (!res.ok) {
    let detail = res.status + " " + res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return res;
}

async function apiJson(method, url, body) {
  return (await api(method, url, body)).json();
}

function guard(fn) {
  return async (...args) => {
    try { await fn(...args); } catch (e) { message(e.message, "error"); }
  };
}

// ------------------------------------------------------------------ opening cases
async function loadInfo() {
  const info = await apiJson("GET", "/api/info");
  S.colours = info.colours;
  $("out-root").textContent = info.output_root;
  const files = (await apiJson("GET", "/api/files")).files;
  const sel = $("file-select");
  for (const f of files) {
    const o = document.createElement("option");
    o.value = f; o.textContent = f; sel.appendChild(o);
  }
}

async function openPath() {
  const path = $("file-select").value;
  if (!path) { message("choose a file first", "error"); return; }
  message("opening " + path + " ...");
  const body = { path };
  if ($("model-window").value.trim()) body.window = $("model-window").value.trim();
  caseOpened(await apiJson("POST", "/api/cases", body));
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  message("uploading " + file.name + " ...");
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("model-window").value.trim()) form.append("window", $("model-window").value.trim());
  try {
    caseOpened(await apiJson("POST", "/api/cases", form));
  } finally {
    $("upload").value = "";
  }
}

async function rename(oid, name) {
  S.info = await apiJson("PATCH", `/api/cases/${S.caseId}/objects/${oid}`, { name });
}

// Names typed in the object list reach the server before a save or download: a rename still in flight is
// awaited, and a field whose text differs from the server's name (typed, not yet committed) is sent now.
async function flushNames() {
  if (S.renaming) { try { await S.renaming; } catch (e) { /* reported by its own handler */ } }
  for (const input of $("objects").querySelectorAll("input[data-id]")) {
    const o = S.info.objects.find((x) => x.id === Number(input.dataset.id));
    if (o && input.value.trim() && input.value !== o.name) await rename(o.id, input.value);
  }
}

function caseOpened(info) {
  S.caseId = info.id; S.info = info; S.selected = null; S.hidden = new Set(); S.newMode = false; S.wl = null;
  S.flipH = false; S.flipV = false;
  S.openedAt = performance.now(); S.firstMask = null;
  document.body.dataset.caseId = info.id;
  $("case-name").textContent = `${info.name}  (${info.kind}, ${info.shape.join(" x ")})`;
  $("placeholder").style.display = "none";
  for (const id of ["image-canvas", "overlay-canvas", "box-canvas"]) {
    $(id).width = info.width; $(id).height = info.height;
  }
  $("slice").max = info.depth - 1;
  S.z = Math.floor(info.depth / 2);
  $("slice").value = S.z;
  $("propagate-panel").style.display = info.kind === "3d" ? "" : "none";
  $("download").href = `/api/cases/${info.id}/labels`;
  $("download-names").href = `/api/cases/${info.id}/label-table`;
  for (const o of $("window").querySelectorAll("option.hu")) o.disabled = !info.hounsfield;
  if (!info.hounsfield && $("window").selectedOptions[0].classList.contains("hu")) $("window").value = "auto";
  showMarkers();
  fit();
  renderObjects();
  defaultRange();
  message(`opened ${info.name}`, "ok");
  showSlice();
  pollEmbedding();
}

function pollEmbedding() {
  clearTimeout(S.embedTimer);
  const id = S.caseId;
  const tick = guard(async () => {
    if (id !== S.caseId) return;
    const info = await apiJson("GET", `/api/cases/${id}`);
    const job = info.embedding;
    if (job) {
      $("embed-progress").max = job.total; $("embed-progress").value = job.done;
      $("embed-label").textContent = job.state === "running" ? `${job.done}/${job.total} slices`
        : `${job.state}: ${job.total} slice(s) in ${(job.ms / 1000).toFixed(1)} s${job.message ? " " + job.message : ""}`;
      if (job.state === "running") S.embedTimer = setTimeout(tick, 500);
    }
  });
  tick();
}

// ------------------------------------------------------------------ drawing
function showSlice() {
  if (!S.caseId) return;
  $("slice-label").textContent = `slice ${S.z} / ${S.info.depth - 1}`;
  document.body.dataset.z = String(S.z);
  const img = new Image();
  const z = S.z, id = S.caseId;
  img.onload = () => {
    if (z !== S.z || id !== S.caseId) return;
    $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  };
  img.onerror = () => message(`could not load slice ${z}`, "error");
  img.src = `/api/cases/${id}/slice/${z}.png?window=${encodeURIComponent(displayWindow())}`;
  $("corner-info").textContent = S.info.kind === "3d" ? `z = ${z} of ${S.info.depth}` : "";
  refreshOverlay();
}

const refreshOverlay = guard(async () => {
  if (!S.caseId) return;
  const z = S.z, id = S.caseId;
  const buf = new Uint8Array(await (await api("GET", `/api/cases/${id}/labels/${z}.bin`)).arrayBuffer());
  if (z !== S.z || id !== S.caseId) return;
  S.labels = buf;
  const { width: w, height: h } = S.info;
  paintOverlay(buf, w, h);
  document.body.dataset.overlayZ = String(z);
  drawBoxes();
});

// The label slice as RGBA: each visible object in its colour at the chosen opacity (outline: its border pixels
// only, fully opaque). Hidden objects are left out. dataset.maskPixels = the pixels painted.
function paintOverlay(buf, w, h) {
  const ctx = $("overlay-canvas").getContext("2d");
  const data = ctx.createImageData(w, h);
  const alpha = Math.max(1, Math.round(255 * Number($("opacity").value) / 100));
  const outline = $("outline").checked;
  let count = 0;
  for (let i = 0; i < buf.length; i++) {
    const l = buf[i];
    if (!l || S.hidden.has(l)) continue;
    if (outline) {
      const x = i % w, y = (i - x) / w;
      const inner = x > 0 && x < w - 1 && y > 0 && y < h - 1 && buf[i - 1] === l && buf[i + 1] === l
        && buf[i - w] === l && buf[i + w] === l;
      if (inner) continue;
    }
    const c = S.colours[(l - 1) % S.colours.length];
    data.data[4 * i] = c[0]; data.data[4 * i + 1] = c[1]; data.data[4 * i + 2] = c[2];
    data.data[4 * i + 3] = outline ? 255 : alpha;
    count++;
  }
  ctx.putImageData(data, 0, 0);
  $("overlay-canvas").dataset.maskPixels = count;
}

function repaint() {
  if (S.labels && S.info) paintOverlay(S.labels, S.info.width, S.info.height);
}

function drawBoxes(rubber) {
  const cv = $("box-canvas"), ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  ctx.lineWidth = Math.max(1, 1.5 / S.zoom);
  for (const o of (S.info ? S.info.objects : [])) {
    const onSlice = o.z === S.z || (o.z_range && S.z >= o.z_range[0] && S.z <= o.z_range[1]);
    if (!onSlice || S.hidden.has(o.id)) continue;
    const [x0, y0, x1, y1] = o.box;
    ctx.strokeStyle = `rgb(${o.colour.join(",")})`;
    ctx.setLineDash(o.id === S.selected ? [4 / S.zoom, 3 / S.zoom] : []);
    ctx.strokeRect(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }
  if (rubber) {
    ctx.setLineDash([]); ctx.strokeStyle = "#fff";
    ctx.strokeRect(rubber[0], rubber[1], rubber[2] - rubber[0] + 1, rubber[3] - rubber[1] + 1);
  }
}

function renderObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  for (const o of S.info.objects) {
    const li = document.createElement("li");
    li.dataset.id = o.id;
    li.className = (o.id === S.selected ? "selected" : "") + (S.hidden.has(o.id) ? " hidden-object" : "");
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = `rgb(${o.colour.join(",")})`;
    const name = document.createElement("input");
    name.value = o.name;
    name.dataset.id = o.id;
    name.title = "name (empty: the default name)";
    name.placeholder = `object ${o.id}`;
    // the list is not rebuilt here: the field may be typed into again at once (a cleared name shows the default
    // as its placeholder)
    name.onchange = guard(async () => {
      S.renaming = rename(o.id, name.value);
      await S.renaming;
      showMode();
    });
    const where = document.createElement("span");
    where.className = "small";
    where.textContent = o.z_range && o.z_range[0] !== o.z_range[1] ? `z ${o.z_range[0]}-${o.z_range[1]}` : `z ${o.z}`;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = o.pending ? "pending" : "";
    tag.title = o.pending ? `drawn on slice ${o.z}: Propagate spreads it over ${o.propagate_range.join("-")}` : "";
    const eye = button(S.hidden.has(o.id) ? "show" : "hide", "hide / show (H)", () => toggleHidden(o.id));
    eye.dataset.role = "eye";
    const lock = button(o.locked ? "unlock" : "lock", "locked objects are never overwritten nor corrected (L)",
      guard(async () => setLock(o)));
    lock.dataset.role = "lock";
    const del = button("x", "delete", guard(async () => {
      S.info = await apiJson("DELETE", `/api/cases/${S.caseId}/objects/${o.id}`);
      if (S.selected === o.id) S.selected = null;
      afterEdit();
    }));
    li.onclick = (ev) => {
      if (ev.target === name || ev.target.tagName === "BUTTON") return;
      select(o.id === S.selected ? null : o.id, true);
    };
    li.append(sw, name, where, tag, eye, lock, del);
    ul.appendChild(li);
  }
  $("undo").disabled = !S.info.can_undo;
  $("redo").disabled = !S.info.can_redo;
  showMode();
}

function button(text, title, onclick) {
  const b = document.createElement("button");
  b.textContent = text; b.title = title;
  b.onclick = (ev) => { ev.stopPropagation(); onclick(ev); };
  return b;
}

function select(oid, jump) {
  S.selected = oid;
  const o = S.info.objects.find((x) => x.id === oid);
  if (o && jump && !(o.z_range && S.z >= o.z_range[0] && S.z <= o.z_range[1]) && o.z !== S.z) goSlice(o.z);
  if (o && o.pending && S.info.kind === "3d") { $("z0").value = o.propagate_range[0]; $("z1").value = o.propagate_range[1]; }
  S.newMode = false;
  renderObjects(); drawBoxes();
}

function showMode() {
  const o = S.info && S.info.objects.find((x) => x.id === S.selected);
  document.body.classList.toggle("new-mode", S.newMode);
  document.body.dataset.mode = S.newMode || !o ? "new" : "auto";
  $("mode-label").textContent = S.newMode ? "New object: the next box makes a new object (Esc: cancel)"
    : o ? `Selected ${o.name}${o.locked ? " (locked)" : ""}: a box over it on its slices corrects it; elsewhere a new object`
      : "No object selected: a box makes a new object";
}

function toggleHidden(oid) {
  if (S.hidden.has(oid)) S.hidden.delete(oid); else S.hidden.add(oid);
  renderObjects(); repaint(); drawBoxes();
}

async function setLock(o) {
  S.info = await apiJson("POST", `/api/cases/${S.caseId}/objects/${o.id}/${o.locked ? "unlock" : "lock"}`);
  renderObjects();
  message(`${o.name} ${o.locked ? "unlocked" : "locked"}`, "ok");
}

function afterEdit() {
  renderObjects();
  refreshOverlay();
}

function goSlice(z) {
  if (!S.info) return;
  S.z = Math.max(0, Math.min(S.info.depth - 1, z));
  $("slice").value = S.z;
  showSlice(); defaultRange();
}

// ------------------------------------------------------------------ view: radiological turn, zoom / pan
// The page shows a slice as 3D Slicer does (patient's right on the screen's left, anterior up) when the file
// states its geometry: info.view = how to turn the (y, x) slice (transpose, flip rows, flip columns) and the edge
// letters. M maps image pixel coordinates to the turned frame: X = a x + c y + e, Y = b x + d y + f.
function turn() {
  const v = (S.info && S.info.view) || {};
  let W = S.info.width, H = S.info.height;
  let a = 1, b = 0, c = 0, d = 1, e = 0, f = 0;
  if (v.transpose) { a = 0; b = 1; c = 1; d = 0; [W, H] = [H, W]; }
  if (v.flip_rows) { b = -b; d = -d; f = H - f; }
  if (v.flip_cols) { a = -a; c = -c; e = W - e; }
  if (S.flipH) { a = -a; c = -c; e = W - e; }  // the user's own flips (files without geometry)
  if (S.flipV) { b = -b; d = -d; f = H - f; }
  return { a, b, c, d, e, f, W, H };
}

function showMarkers() {
  let letters = (S.info.view && S.info.view.letters) || "";
  if (letters && S.flipH) letters = letters[1] + letters[0] + letters.slice(2);
  if (letters && S.flipV) letters = letters.slice(0, 2) + letters[3] + letters[2];
  const ids = ["mark-left", "mark-right", "mark-top", "mark-bottom"];
  ids.forEach((id, i) => { $(id).textContent = letters[i] || ""; });
  const flips = (S.flipH ? ", flipped left-right" : "") + (S.flipV ? ", flipped up-down" : "");
  document.body.dataset.view = (S.info.view && S.info.view.letters ? S.info.view.how
    : "array orientation (no geometry in the file: use the flip buttons to turn it)") + flips;
  $("viewport").title = document.body.dataset.view;
}

function flipView(horizontal) {
  if (!S.info) return;
  if (horizontal) S.flipH = !S.flipH; else S.flipV = !S.flipV;
  showMarkers(); fit(); drawBoxes();
}

function applyTransform() {
  const t = turn(), z = S.zoom;
  $("stage").style.transform =
    `matrix(${z * t.a}, ${z * t.b}, ${z * t.c}, ${z * t.d}, ${z * t.e + S.panX}, ${z * t.f + S.panY})`;
}

function fit() {
  const vp = $("viewport").getBoundingClientRect(), t = turn();
  S.zoom = Math.min(vp.width / t.W, vp.height / t.H);
  S.panX = (vp.width - t.W * S.zoom) / 2;
  S.panY = (vp.height - t.H * S.zoom) / 2;
  applyTransform();
}

function zoomAt(factor, cx, cy) {
  const vp = $("viewport").getBoundingClientRect();
  const px = cx === undefined ? vp.width / 2 : cx - vp.left, py = cy === undefined ? vp.height / 2 : cy - vp.top;
  S.panX = px - (px - S.panX) * factor;
  S.panY = py - (py - S.panY) * factor;
  S.zoom *= factor;
  applyTransform(); drawBoxes();
}

// Client coordinates -> image coordinates (floats), through the inverse of the view transform.
function toImageF(ev) {
  const vp = $("viewport").getBoundingClientRect(), t = turn();
  const X = (ev.clientX - vp.left - S.panX) / S.zoom - t.e, Y = (ev.clientY - vp.top - S.panY) / S.zoom - t.f;
  const det = t.a * t.d - t.b * t.c;
  return [(t.d * X - t.c * Y) / det, (-t.b * X + t.a * Y) / det];
}

// Image coordinates -> client coordinates (the forward view transform; used by the browser test to aim).
window.imageToClient = (x, y) => {
  const vp = $("viewport").getBoundingClientRect(), t = turn();
  const X = t.a * x + t.c * y + t.e, Y = t.b * x + t.d * y + t.f;
  return [vp.left + S.panX + S.zoom * X, vp.top + S.panY + S.zoom * Y];
};

function toImage(ev) {
  const [x, y] = toImageF(ev);
  return [Math.max(0, Math.min(S.info.width - 1, Math.floor(x))), Math.max(0, Math.min(S.info.height - 1, Math.floor(y)))];
}

function normBox(b) {
  return [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
}

function selectedBox() {
  if (!S.info || S.selected === null) return null;
  const o = S.info.objects.find((x) => x.id === S.selected);
  if (!o || S.hidden.has(o.id)) return null;
  const onSlice = o.z === S.z || (o.z_range && S.z >= o.z_range[0] && S.z <= o.z_range[1]);
  return onSlice ? o.box : null;
}

// Which edges of the selected object's box the pointer grabs (within 6 screen pixels), or null.
function hitHandles(ev) {
  const b = selectedBox();
  if (!b) return null;
  const [x, y] = toImageF(ev);
  const tol = 6 / S.zoom;
  const inX = x >= b[0] - tol && x <= b[2] + 1 + tol, inY = y >= b[1] - tol && y <= b[3] + 1 + tol;
  const h = {
    x0: inY && Math.abs(x - b[0]) <= tol, x1: inY && Math.abs(x - (b[2] + 1)) <= tol,
    y0: inX && Math.abs(y - b[1]) <= tol, y1: inX && Math.abs(y - (b[3] + 1)) <= tol,
  };
  return (h.x0 || h.x1 || h.y0 || h.y1) ? h : null;
}

// ------------------------------------------------------------------ window / level, value under the cursor
function displayWindow() {
  return S.wl ? `${Math.round(S.wl[0])},${Math.max(1, Math.round(S.wl[1]))}` : $("window").value;
}

function startWindowLevel(ev) {
  const presets = { abdomen: [40, 400], chest: [-600, 1500], bone: [400, 1800], brain: [40, 80] };
  const start = S.wl || presets[$("window").value] || (S.info.hounsfield ? [40, 400] : [128, 256]);
  S.drag = { wl: true, x: ev.clientX, y: ev.clientY, start: start.slice() };
}

function moveWindowLevel(ev) {
  const d = S.drag, scale = S.info.hounsfield ? 4 : 1;
  S.wl = [d.start[0] + (ev.clientY - d.y) * scale, Math.max(1, d.start[1] + (ev.clientX - d.x) * scale)];
  $("wl-label").textContent = `W/L ${Math.round(S.wl[1])} / ${Math.round(S.wl[0])}`;
  if (S.sliceBusy) return;  // one slice request at a time while dragging
  S.sliceBusy = true;
  const img = new Image(), z = S.z;
  img.onload = img.onerror = () => {
    S.sliceBusy = false;
    if (z === S.z && img.naturalWidth) $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  };
  img.src = `/api/cases/${S.caseId}/slice/${z}.png?window=${encodeURIComponent(displayWindow())}`;
}

async function readout(ev) {
  if (!S.info || S.readoutBusy) return;
  const [x, y] = toImageF(ev);
  if (x < 0 || y < 0 || x >= S.info.width || y >= S.info.height) { $("readout").textContent = ""; return; }
  S.readoutBusy = true;
  try {
    const v = await apiJson("GET", `/api/cases/${S.caseId}/value/${S.z}?x=${Math.floor(x)}&y=${Math.floor(y)}`);
    const value = Array.isArray(v.value) ? v.value.map((n) => Math.round(n)).join(",")
      : (Number.isInteger(v.value) ? v.value : v.value.toFixed(1));
    const o = S.info.objects.find((k) => k.id === v.label);
    $("readout").textContent = `(${v.x}, ${v.y}, ${v.z}): ${value}${v.unit ? " " + v.unit : ""}` +
      (o ? ` - ${o.name}` : "");
  } catch (e) { /* the cursor left the case */ } finally { S.readoutBusy = false; }
}

// ------------------------------------------------------------------ jobs: boxes, corrections, propagation
async function runJob(job, what) {
  S.job = job;
  $("cancel").disabled = false;
  document.body.dataset.busy = "1";
  try {
    while (job.state === "running") {
      $("prop-progress").max = job.total; $("prop-progress").value = job.done;
      $("prop-label").textContent = `${what}: ${job.done}/${job.total} slices`;
      await new Promise((r) => setTimeout(r, 150));
      job = await apiJson("GET", `/api/jobs/${job.id}`);
    }
    $("prop-progress").max = job.total; $("prop-progress").value = job.state === "done" ? job.total : job.done;
    $("prop-label").textContent = job.state === "done" ? `${what}: ${job.total} slices in ${(job.ms / 1000).toFixed(1)} s`
      : `${what} ${job.state}${job.message ? ": " + job.message : ""}`;
    S.info = await apiJson("GET", `/api/cases/${S.caseId}`);
    if (job.state === "cancelled") { message(`${what} cancelled: nothing changed`, "ok"); afterEdit(); return null; }
    if (job.state !== "done") throw new Error(`${what} failed: ${job.message}`);
    return job;
  } finally {
    S.job = null;
    $("cancel").disabled = true;
    document.body.dataset.busy = "";
  }
}

// A box drawn on the current slice: the server decides (new object or correction, docs/serve.md "Rules").
const drawnBox = guard(async (box, mode) => {
  const t0 = performance.now();
  const body = { box, z: S.z, selected: S.selected, mode: mode || (S.newMode ? "new" : "auto") };
  const start = await apiJson("POST", `/api/cases/${S.caseId}/box`, body);
  const job = await runJob(start, start.kind === "new" ? "new object" : "correction");
  if (!job) return;
  const rtt = performance.now() - t0;
  if (S.firstMask === null) S.firstMask = (performance.now() - S.openedAt) / 1000;
  $("latency").textContent = `last box: ${job.ms.toFixed(0)} ms on the server (${job.action}), ${rtt.toFixed(0)} ms ` +
    `round trip; first mask ${S.firstMask.toFixed(1)} s after opening`;
  document.body.dataset.lastMs = job.ms.toFixed(1);
  document.body.dataset.lastAction = job.action;
  S.newMode = false;
  S.selected = job.object.id;
  renderObjects();
  await refreshOverlay();
  message(`${job.object.name}: ${job.action === "new" ? "new object" : "corrected"} (${job.reason}); ` +
    `${job.pixels} pixels on slice ${S.z}${job.object.pending ? " - Propagate to spread it" : ""}`, "ok");
  document.body.dataset.segments = String(Number(document.body.dataset.segments || 0) + 1);
});

const propagate = guard(async (all) => {
  if (!S.caseId || S.info.kind !== "3d") return;
  let body;
  if (all === true) {
    body = { all: true };
  } else {
    const o = S.info.objects.find((x) => x.id === S.selected);
    if (!o) { message("select a pending object (or draw a box) first", "error"); return; }
    body = { object: o.id, z_range: [Number($("z0").value), Number($("z1").value)] };
  }
  $("propagate").disabled = $("propagate-all").disabled = true;
  try {
    const job = await runJob(await apiJson("POST", `/api/cases/${S.caseId}/propagate`, body), "propagation");
    if (!job) return;
    afterEdit();
    const names = job.objects.map((o) => o.name).join(", ");
    message(`propagated ${names} over slices ${job.slices.length ? job.slices[0] + "-" + job.slices[job.slices.length - 1] : "(none)"}`, "ok");
  } finally {
    $("propagate").disabled = $("propagate-all").disabled = false;
  }
});

function defaultRange() {
  if (!S.info || S.info.kind !== "3d") return;
  const o = S.info.objects.find((x) => x.id === S.selected);
  if (o && o.pending) return;  // the selected pending object's own range stays in the fields
  $("z0").value = Math.max(0, S.z - 5);
  $("z1").value = Math.min(S.info.depth - 1, S.z + 5);
}

// ------------------------------------------------------------------ keyboard
function onKey(ev) {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || !S.info) return;
  const ctrl = ev.ctrlKey || ev.metaKey, key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  const o = S.info.objects.find((x) => x.id === S.selected);
  const actions = {
    ArrowUp: () => goSlice(S.z + 1), ArrowRight: () => goSlice(S.z + 1),
    ArrowDown: () => goSlice(S.z - 1), ArrowLeft: () => goSlice(S.z - 1),
    PageUp: () => goSlice(S.z + 10), PageDown: () => goSlice(S.z - 10),
    Home: () => goSlice(0), End: () => goSlice(S.info.depth - 1),
    Escape: () => { S.newMode = false; select(null, false); },
  };
  if (ctrl && key === "z") { ev.preventDefault(); $(ev.shiftKey ? "redo" : "undo").click(); return; }
  if (ctrl && key === "y") { ev.preventDefault(); $("redo").click(); return; }
  if (ctrl) return;
  if (actions[ev.key]) { ev.preventDefault(); actions[ev.key](); return; }
  if (key === "n") $("new-object").click();
  else if (key === "l" && o) guard(async () => setLock(o))();
  else if (key === "h" && o) toggleHidden(o.id);
  else if (key === "o") { $("outline").checked = !$("outline").checked; repaint(); }
  else if (key === "p") propagate(ev.shiftKey);
}

// ------------------------------------------------------------------ events
function setup() {
  $("open-path").onclick = guard(openPath);
  $("upload").onchange = guard(upload);
  $("window").onchange = () => { S.wl = null; $("wl-label").textContent = ""; showSlice(); };
  $("slice").oninput = () => goSlice(Number($("slice").value));
  $("zoom-in").onclick = () => zoomAt(1.25);
  $("zoom-out").onclick = () => zoomAt(0.8);
  $("zoom-reset").onclick = () => { if (S.info) { fit(); drawBoxes(); } };
  $("flip-h").onclick = () => flipView(true);
  $("flip-v").onclick = () => flipView(false);
  $("opacity").oninput = repaint;
  $("outline").onchange = repaint;
  $("new-object").onclick = () => { if (S.info) { S.newMode = true; showMode(); drawBoxes(); } };
  $("undo").onclick = guard(async () => { S.info = await apiJson("POST", `/api/cases/${S.caseId}/undo`); afterEdit(); });
  $("redo").onclick = guard(async () => { S.info = await apiJson("POST", `/api/cases/${S.caseId}/redo`); afterEdit(); });
  $("propagate").onclick = () => propagate(false);
  $("propagate-all").onclick = () => propagate(true);
  $("cancel").onclick = guard(async () => { if (S.job) await apiJson("POST", `/api/jobs/${S.job.id}/cancel`); });
  $("save").onclick = guard(async () => {
    await flushNames();
    const res = await apiJson("POST", `/api/cases/${S.caseId}/save`, { out_dir: $("out-dir").value });
    message(`saved ${res.path} and its names ${res.labels}`, "ok");
  });
  for (const [id, what] of [["download", "labels"], ["download-names", "label-table"]]) {
    $(id).onclick = guard(async (ev) => {
      ev.preventDefault();
      if (!S.caseId) { message("open a case first", "error"); return; }
      await flushNames();  // a name still being typed is part of what is downloaded
      const a = document.createElement("a");
      a.href = `/api/cases/${S.caseId}/${what}`; a.download = "";
      document.body.appendChild(a); a.click(); a.remove();
    });
  }
  setupPointer();
  window.addEventListener("keydown", onKey);
  guard(loadInfo)();
}

function setupPointer() {
  const vp = $("viewport");
  vp.addEventListener("contextmenu", (ev) => ev.preventDefault());
  vp.addEventListener("wheel", (ev) => {
    if (!S.info) return;
    ev.preventDefault();
    if (ev.ctrlKey || S.info.kind === "2d") zoomAt(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
    else goSlice(S.z + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  vp.addEventListener("mousedown", (ev) => {
    if (!S.info) return;
    if (ev.button === 1 || (ev.button === 0 && ev.shiftKey)) {
      S.drag = { pan: true, x: ev.clientX, y: ev.clientY, px: S.panX, py: S.panY };
    } else if (ev.button === 2) {
      startWindowLevel(ev);
    } else if (ev.button === 0) {
      if (S.job) { message("a job is running: wait for it or cancel it", "error"); ev.preventDefault(); return; }
      const p = toImage(ev);
      const handles = S.newMode ? null : hitHandles(ev);
      S.drag = handles ? { edit: handles, box: selectedBox().slice() } : { start: p, end: p };
    }
    ev.preventDefault();
  });
  window.addEventListener("mousemove", (ev) => {
    if (!S.drag) { if (ev.target === $("box-canvas")) readout(ev); return; }
    if (S.drag.pan) {
      S.panX = S.drag.px + ev.clientX - S.drag.x; S.panY = S.drag.py + ev.clientY - S.drag.y; applyTransform();
    } else if (S.drag.wl) {
      moveWindowLevel(ev);
    } else if (S.drag.edit) {
      const p = toImage(ev), b = S.drag.box, e = S.drag.edit;
      if (e.x0) b[0] = p[0]; if (e.y0) b[1] = p[1]; if (e.x1) b[2] = p[0]; if (e.y1) b[3] = p[1];
      drawBoxes(normBox(b));
    } else {
      S.drag.end = toImage(ev);
      drawBoxes(normBox([S.drag.start[0], S.drag.start[1], S.drag.end[0], S.drag.end[1]]));
    }
  });
  window.addEventListener("mouseup", (ev) => {
    const d = S.drag;
    S.drag = null;
    if (!d || d.pan) return;
    if (d.wl) { showSlice(); return; }
    let box;
    if (d.edit) {
      box = normBox(d.box);
    } else {
      const end = toImage(ev);
      box = normBox([d.start[0], d.start[1], end[0], end[1]]);
    }
    drawBoxes();
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return; // a click, not a box
    drawnBox(box, d.edit ? "correct" : undefined);
  });
}

setup();
