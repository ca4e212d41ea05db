// medsam-lite serve: the page. Talks only to the documented /api endpoints (see docs/serve.md).
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  caseId: null, info: null, z: 0, selected: null, colours: [],
  zoom: 1, panX: 0, panY: 0, drag: null, embedTimer: null, labels: null,
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
  S.caseId = info.id; S.info = info; S.selected = null;
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
  const img = new Image();
  const z = S.z, id = S.caseId;
  img.onload = () => {
    if (z !== S.z || id !== S.caseId) return;
    $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  };
  img.onerror = () => message(`could not load slice ${z}`, "error");
  img.src = `/api/cases/${id}/slice/${z}.png?window=${encodeURIComponent($("window").value)}`;
  refreshOverlay();
}

const refreshOverlay = guard(async () => {
  if (!S.caseId) return;
  const z = S.z, id = S.caseId;
  const buf = new Uint8Array(await (await api("GET", `/api/cases/${id}/labels/${z}.bin`)).arrayBuffer());
  if (z !== S.z || id !== S.caseId) return;
  S.labels = buf;
  const { width: w, height: h } = S.info;
  const ctx = $("overlay-canvas").getContext("2d");
  const data = ctx.createImageData(w, h);
  let count = 0;
  for (let i = 0; i < buf.length; i++) {
    const l = buf[i];
    if (!l) continue;
    const c = S.colours[(l - 1) % S.colours.length];
    data.data[4 * i] = c[0]; data.data[4 * i + 1] = c[1]; data.data[4 * i + 2] = c[2]; data.data[4 * i + 3] = 120;
    count++;
  }
  ctx.putImageData(data, 0, 0);
  $("overlay-canvas").dataset.maskPixels = count;
  drawBoxes();
});

function drawBoxes(rubber) {
  const cv = $("box-canvas"), ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  ctx.lineWidth = Math.max(1, 1.5 / S.zoom);
  for (const o of (S.info ? S.info.objects : [])) {
    const onSlice = o.z === S.z || (o.z_range && S.z >= o.z_range[0] && S.z <= o.z_range[1]);
    if (!onSlice) continue;
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
    if (o.id === S.selected) li.className = "selected";
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = `rgb(${o.colour.join(",")})`;
    const name = document.createElement("input");
    name.value = o.name;
    name.dataset.id = o.id;
    name.onchange = guard(async () => {
      S.renaming = rename(o.id, name.value);
      await S.renaming;
      renderObjects();
    });
    const where = document.createElement("span");
    where.className = "small";
    where.textContent = o.z_range ? `z ${o.z_range[0]}-${o.z_range[1]}` : `z ${o.z}`;
    const del = document.createElement("button");
    del.textContent = "x"; del.title = "delete";
    del.onclick = guard(async (ev) => {
      ev.stopPropagation();
      S.info = await apiJson("DELETE", `/api/cases/${S.caseId}/objects/${o.id}`);
      if (S.selected === o.id) S.selected = null;
      afterEdit();
    });
    li.onclick = (ev) => {
      if (ev.target === name) return;
      S.selected = o.id === S.selected ? null : o.id;
      if (S.selected !== null && o.z !== S.z) { S.z = o.z; $("slice").value = S.z; showSlice(); }
      renderObjects(); drawBoxes();
    };
    li.append(sw, name, where, del);
    ul.appendChild(li);
  }
  $("undo").disabled = !S.info.can_undo;
  $("redo").disabled = !S.info.can_redo;
}

function afterEdit() {
  renderObjects();
  refreshOverlay();
}

// ------------------------------------------------------------------ zoom / pan
function applyTransform() {
  $("stage").style.transform = `translate(${S.panX}px, ${S.panY}px) scale(${S.zoom})`;
}

function fit() {
  const vp = $("viewport").getBoundingClientRect();
  S.zoom = Math.min(vp.width / S.info.width, vp.height / S.info.height);
  S.panX = (vp.width - S.info.width * S.zoom) / 2;
  S.panY = (vp.height - S.info.height * S.zoom) / 2;
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

function toImage(ev) {
  const r = $("box-canvas").getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * S.info.width;
  const y = (ev.clientY - r.top) / r.height * S.info.height;
  return [Math.max(0, Math.min(S.info.width - 1, Math.floor(x))), Math.max(0, Math.min(S.info.height - 1, Math.floor(y)))];
}

function normBox(b) {
  return [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
}

function selectedBox() {
  if (!S.info || S.selected === null) return null;
  const o = S.info.objects.find((x) => x.id === S.selected);
  if (!o) return null;
  const onSlice = o.z === S.z || (o.z_range && S.z >= o.z_range[0] && S.z <= o.z_range[1]);
  return onSlice ? o.box : null;
}

// Which edges of the selected object's box the pointer grabs (within 6 screen pixels), or null.
function hitHandles(ev) {
  const b = selectedBox();
  if (!b) return null;
  const r = $("box-canvas").getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * S.info.width, y = (ev.clientY - r.top) / r.height * S.info.height;
  const tol = 6 * S.info.width / r.width;
  const inX = x >= b[0] - tol && x <= b[2] + 1 + tol, inY = y >= b[1] - tol && y <= b[3] + 1 + tol;
  const h = {
    x0: inY && Math.abs(x - b[0]) <= tol, x1: inY && Math.abs(x - (b[2] + 1)) <= tol,
    y0: inX && Math.abs(y - b[1]) <= tol, y1: inX && Math.abs(y - (b[3] + 1)) <= tol,
  };
  return (h.x0 || h.x1 || h.y0 || h.y1) ? h : null;
}

// ------------------------------------------------------------------ segmenting
const segment = guard(async (box) => {
  const t0 = performance.now();
  const body = { box, z: S.z };
  if (S.selected !== null) body.object = S.selected;
  document.body.dataset.busy = "1";
  try {
    const res = await apiJson("POST", `/api/cases/${S.caseId}/segment`, body);
    const rtt = performance.now() - t0;
    if (S.firstMask === null) S.firstMask = (performance.now() - S.openedAt) / 1000;
    $("latency").textContent = `last box: ${res.ms.toFixed(0)} ms on the server (${res.encoded ? "encoder ran" : "decoder only"}),` +
      ` ${rtt.toFixed(0)} ms round trip; first mask ${S.firstMask.toFixed(1)} s after opening`;
    document.body.dataset.lastMs = res.ms.toFixed(1);
    S.info = await apiJson("GET", `/api/cases/${S.caseId}`);
    S.selected = res.object.id;
    renderObjects();
    await refreshOverlay();
    message(`${res.object.name}: ${res.pixels} pixels`, "ok");
    document.body.dataset.segments = String(Number(document.body.dataset.segments || 0) + 1);
  } finally {
    document.body.dataset.busy = "";
  }
});

const propagate = guard(async () => {
  if (!S.caseId || S.info.kind !== "3d") return;
  const o = S.info.objects.find((x) => x.id === S.selected);
  if (!o) { message("select (or draw) a box first", "error"); return; }
  const z0 = Number($("z0").value), z1 = Number($("z1").value);
  const [x0, y0, x1, y1] = o.box;
  let job = await apiJson("POST", `/api/cases/${S.caseId}/propagate`, { box: [x0, y0, z0, x1, y1, z1], object: o.id });
  $("propagate").disabled = true;
  try {
    while (job.state === "running") {
      $("prop-progress").max = job.total; $("prop-progress").value = job.done;
      $("prop-label").textContent = `${job.done}/${job.total}`;
      await new Promise((r) => setTimeout(r, 300));
      job = await apiJson("GET", `/api/jobs/${job.id}`);
    }
    if (job.state !== "done") throw new Error(`propagation ${job.state}: ${job.message}`);
    $("prop-progress").max = job.total; $("prop-progress").value = job.total;
    $("prop-label").textContent = `${job.total} slices in ${(job.ms / 1000).toFixed(1)} s`;
    S.info = await apiJson("GET", `/api/cases/${S.caseId}`);
    afterEdit();
    message(`propagated ${o.name} over slices ${job.slices.length ? job.slices[0] + "-" + job.slices[job.slices.length - 1] : "(none)"}`, "ok");
  } finally {
    $("propagate").disabled = false;
  }
});

function defaultRange() {
  if (!S.info || S.info.kind !== "3d") return;
  $("z0").value = Math.max(0, S.z - 5);
  $("z1").value = Math.min(S.info.depth - 1, S.z + 5);
}

// ------------------------------------------------------------------ events
function setup() {
  $("open-path").onclick = guard(openPath);
  $("upload").onchange = guard(upload);
  $("window").onchange = showSlice;
  $("slice").oninput = () => { S.z = Number($("slice").value); showSlice(); defaultRange(); };
  $("zoom-in").onclick = () => zoomAt(1.25);
  $("zoom-out").onclick = () => zoomAt(0.8);
  $("zoom-reset").onclick = () => { if (S.info) { fit(); drawBoxes(); } };
  $("new-object").onclick = () => { S.selected = null; renderObjects(); drawBoxes(); };
  $("undo").onclick = guard(async () => { S.info = await apiJson("POST", `/api/cases/${S.caseId}/undo`); afterEdit(); });
  $("redo").onclick = guard(async () => { S.info = await apiJson("POST", `/api/cases/${S.caseId}/redo`); afterEdit(); });
  $("propagate").onclick = propagate;
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

  const vp = $("viewport");
  vp.addEventListener("contextmenu", (ev) => ev.preventDefault());
  vp.addEventListener("wheel", (ev) => {
    if (!S.info) return;
    ev.preventDefault();
    if (ev.ctrlKey || S.info.kind === "2d") {
      zoomAt(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
    } else {
      S.z = Math.max(0, Math.min(S.info.depth - 1, S.z + (ev.deltaY > 0 ? 1 : -1)));
      $("slice").value = S.z; showSlice(); defaultRange();
    }
  }, { passive: false });
  vp.addEventListener("mousedown", (ev) => {
    if (!S.info) return;
    if (ev.button === 2 || ev.button === 1 || ev.shiftKey) {
      S.drag = { pan: true, x: ev.clientX, y: ev.clientY, px: S.panX, py: S.panY };
    } else if (ev.button === 0) {
      const p = toImage(ev);
      const handles = hitHandles(ev);
      S.drag = handles ? { pan: false, edit: handles, box: selectedBox().slice() } : { pan: false, start: p, end: p };
    }
    ev.preventDefault();
  });
  window.addEventListener("mousemove", (ev) => {
    if (!S.drag) return;
    if (S.drag.pan) {
      S.panX = S.drag.px + ev.clientX - S.drag.x; S.panY = S.drag.py + ev.clientY - S.drag.y; applyTransform();
    } else if (S.drag.edit) {
      const p = toImage(ev), b = S.drag.box, e = S.drag.edit;
      if (e.x0) b[0] = p[0]; if (e.y0) b[1] = p[1]; if (e.x1) b[2] = p[0]; if (e.y1) b[3] = p[1];
      drawBoxes(normBox(b));
    } else {
      S.drag.end = toImage(ev);
      const [a, b] = [S.drag.start, S.drag.end];
      drawBoxes([Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]);
    }
  });
  window.addEventListener("mouseup", (ev) => {
    const d = S.drag;
    S.drag = null;
    if (!d || d.pan) return;
    let box;
    if (d.edit) {
      box = normBox(d.box);
    } else {
      const end = toImage(ev);
      box = normBox([d.start[0], d.start[1], end[0], end[1]]);
    }
    drawBoxes();
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return; // a click, not a box
    segment(box);
  });
  window.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT") return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") $("undo").click();
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "y") $("redo").click();
  });
  guard(loadInfo)();
}

setup();
