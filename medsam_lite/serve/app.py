"""The FastAPI app of ``medsam-lite serve``: a browser annotator over a documented HTTP API.

API (JSON unless stated; errors are 4xx ``{"detail": "<one line>"}``; the page uses only these):

* ``GET  /api/info``: roots, output root, limits, model.
* ``GET  /api/files``: openable files / DICOM folders under the roots.
* ``POST /api/cases``: multipart ``file`` (upload) or JSON ``{"path": ..., "window": null|"abdomen"|"L,W"}``
  (a path under a root; ``window`` maps non-uint8 CT to the model's uint8) -> ``{"id", "shape", "kind", ...}``.
  The case's slice embeddings are computed in the background right away (``embedding`` job in the info).
* ``GET  /api/cases/{id}``: case info (objects, embedding progress, undo / redo availability).
* ``DELETE /api/cases/{id}``: close a case.
* ``GET  /api/cases/{id}/slice/{z}.png?window=auto|percentile|abdomen|chest|brain|bone|L,W``: slice for display.
* ``GET  /api/cases/{id}/labels/{z}.bin``: slice ``z`` of the label map, H*W raw uint8 bytes (row major).
* ``POST /api/cases/{id}/segment`` ``{"box": [x0, y0, x1, y1], "z": z, "object": null|id, "name": null|str}``
  -> ``{"mask_png": base64 PNG (H x W, 0/255), "ms", "object", "encoded"}``; the mask becomes object
  ``object`` on slice z (a new object when null).
* ``POST /api/cases/{id}/propagate`` ``{"box": [x0, y0, z0, x1, y1, z1], "object": null|id}`` -> 202 job;
  ``GET /api/jobs/{job}`` -> progress; ``GET /api/jobs/{job}/labels`` -> the (D, H, W) uint8 label
  volume of the propagation as ``.npy`` (``Predictor.predict_volume``'s output for that one box).
* ``PATCH /api/cases/{id}/objects/{oid}`` ``{"name"}``; ``DELETE /api/cases/{id}/objects/{oid}``;
  ``POST /api/cases/{id}/undo``; ``POST /api/cases/{id}/redo``.
* ``GET  /api/cases/{id}/labels``: the label map as a download in the case's format (npz ``segs``,
  NIfTI with the input's affine, MHA / NRRD, PNG, TIFF).
* ``POST /api/cases/{id}/save`` ``{"out_dir": "<folder under the output root>"}`` -> ``{"path"}``.
"""
from __future__ import annotations

import base64
import importlib.resources
import io
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ..errors import InputError
from ..imageio import is_supported, mask_path_for, write_mask
from ..normalize import parse_window
from ..transforms import preprocess_image
from ..validation import check_boxes_2d, check_boxes_3d
from .state import (COLOURS, CachingBackend, Cancelled, CaseState, CaseStore, Job, MemoryEmbeddingStore, ServeConfig,
                    embedding_order, open_case_file, resolve_under, run_job)

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
LIST_LIMIT = 1000
"""Most entries ``/api/files`` lists."""
KEEP_VOLUMES = 4
"""Finished propagation jobs whose label volume ``/api/jobs/{job}/labels`` still serves."""


class OpenPath(BaseModel):
    path: str
    window: Optional[str] = None


class SegmentRequest(BaseModel):
    box: List[float] = Field(min_length=4, max_length=4)
    z: int = 0
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)


class PropagateRequest(BaseModel):
    box: List[float] = Field(min_length=6, max_length=6)
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)


class RenameRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SaveRequest(BaseModel):
    out_dir: str = "."


def _png(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) RGB uint8 -> PNG bytes."""
    import cv2

    if array.ndim == 3:
        array = array[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise InputError("could not encode PNG")
    return buf.tobytes()


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:200].lstrip(".")
    if not base:
        raise InputError("upload has no usable file name")
    return base


class Server:
    """The state behind one app: config, the shared caching backend, open cases, jobs, temp folder."""

    def __init__(self, config: ServeConfig, backend: Any = None) -> None:
        self.config = config
        self.roots = [Path(r).expanduser().resolve() for r in config.roots]
        self.output_root = Path(config.output_root).expanduser().resolve()
        if backend is None:
            from ..predictor import Predictor

            backend = Predictor(config.model, backend=config.backend, precision=config.precision).backend
        self.store = MemoryEmbeddingStore(int(config.embedding_cache_mb * 2**20))
        self.backend = CachingBackend(backend, self.store)
        self.cases = CaseStore(config.max_cases)
        self.jobs: Dict[str, Job] = {}
        self.jobs_lock = threading.Lock()
        self.tmp = Path(tempfile.mkdtemp(prefix="medsam-lite-serve-"))

    def close(self) -> None:
        """Cancel running jobs, wait for them (bounded), remove the temporary folder."""
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers
    def predictor(self) -> Any:
        from ..predictor import Predictor

        return Predictor(backend=self.backend)

    def add_job(self, kind: str, case_id: str, total: int) -> Job:
        job = Job(uuid.uuid4().hex[:12], kind, case_id, total)
        with self.jobs_lock:
            self.jobs[job.id] = job
            finished = [j for j in self.jobs.values() if j.state != "running"]
            for old in finished[:-64]:  # keep the last finished jobs only
                self.jobs.pop(old.id, None)
            for old in finished[:-KEEP_VOLUMES]:  # and the label volumes of the last few
                if isinstance(old.result, dict):
                    old.result.pop("labels", None)
        return job

    def get_job(self, job_id: str) -> Job:
        with self.jobs_lock:
            if job_id not in self.jobs:
                raise KeyError(f"unknown job {job_id!r}")
            return self.jobs[job_id]

    def start_embedding(self, state: CaseState) -> None:
        """Encode every slice of ``state`` in the background, middle slice first."""
        job = self.add_job("embed", state.id, state.depth)
        state.embed_job = job

        def work(job: Job) -> Dict[str, Any]:
            for z in embedding_order(state.depth):
                if job.cancel.is_set():
                    raise Cancelled()
                if z not in state.embedded:
                    tensor, _ = preprocess_image(state.volume[z])
                    self.backend.encode_background(tensor)
                    state.embedded.add(z)
                job.done += 1
            return {}

        run_job(job, work)

    def open(self, case_path: Path, window: Optional[str], display: Optional[str] = None) -> CaseState:
        case = open_case_file(case_path, display)
        state = self.cases.add(case, parse_window(window), display or case.path.name)
        self.start_embedding(state)
        return state

    def list_files(self) -> List[str]:
        out: List[str] = []
        for root in self.roots:
            if root.is_file():
                out.append(str(root))
                continue
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                if len(out) >= LIST_LIMIT:
                    return out
                if any(part.startswith(".") for part in path.relative_to(root).parts):
                    continue
                try:
                    if (path.is_file() or path.is_dir()) and is_supported(path):
                        out.append(str(path))
                except OSError:
                    continue
        return out


def create_app(config: ServeConfig, backend: Any = None) -> FastAPI:
    """The app for ``config``. ``backend``: a ready Backend to share (default: built from ``config.model``)."""
    server = Server(config, backend)
    app = FastAPI(title="medsam-lite serve", docs_url=None, redoc_url=None,
                  description=__doc__, on_shutdown=[server.close])
    app.state.server = server
    limit = int(config.max_upload_mb * 2**20)

    # ------------------------------------------------------------ errors: one line, 4xx
    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(KeyError)
    async def _key_error(_: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else "not found"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=422)

    # ------------------------------------------------------------ page
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        data = importlib.resources.files("medsam_lite.serve").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        return static(name)

    # ------------------------------------------------------------ server info
    @app.get("/api/info")
    def info() -> Dict[str, Any]:
        return {"roots": [str(r) for r in server.roots], "output_root": str(server.output_root),
                "max_upload_mb": config.max_upload_mb, "model": config.model or "default",
                "backend": server.backend.name, "colours": [list(c) for c in COLOURS],
                "cases": [s.info() for s in server.cases.all()]}

    @app.get("/api/files")
    def files() -> Dict[str, Any]:
        return {"files": server.list_files()}

    # ------------------------------------------------------------ cases
    @app.post("/api/cases")
    async def open_case(request: Request) -> Dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            length = request.headers.get("content-length")
            if length is None:
                raise HTTPException(411, "upload needs a Content-Length header")
            if not length.isdigit():
                raise HTTPException(400, f"bad Content-Length {length[:40]!r}")
            if int(length) > limit:
                raise HTTPException(413, f"upload of {int(length) / 2**20:.1f} MiB exceeds the "
                                         f"{config.max_upload_mb:g} MiB limit")
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InputError("multipart upload needs a 'file' field")
            name = _safe_name(upload.filename or "")
            folder = server.tmp / uuid.uuid4().hex[:12]
            folder.mkdir()
            dest = folder / name
            with open(dest, "wb") as fh:
                while chunk := await upload.read(1 << 20):
                    fh.write(chunk)
            window = form.get("window")
            state = await run_in_threadpool(server.open, dest, window if isinstance(window, str) and window else None,
                                            upload.filename)
            return state.info()
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "body must be JSON {\"path\": ...} or a multipart file upload") from None
        if not isinstance(body, dict) or not isinstance(body.get("path"), str):
            raise HTTPException(400, "JSON body must be {\"path\": \"<file under an allowed root>\"}")
        if body.get("window") is not None and not isinstance(body["window"], str):
            raise HTTPException(400, "window must be a preset name or \"LEVEL,WIDTH\"")
        req = OpenPath(**{k: v for k, v in body.items() if k in ("path", "window")})
        path = resolve_under(req.path, server.roots, "case path")
        state = await run_in_threadpool(server.open, path, req.window)
        return state.info()

    @app.get("/api/cases/{case_id}")
    def case_info(case_id: str) -> Dict[str, Any]:
        return server.cases.get(case_id).info()

    @app.delete("/api/cases/{case_id}")
    def close_case(case_id: str) -> Dict[str, Any]:
        server.cases.remove(case_id)
        return {"closed": case_id}

    @app.get("/api/cases/{case_id}/slice/{z}.png")
    def slice_png(case_id: str, z: int, window: str = "auto") -> Response:
        state = server.cases.get(case_id)
        return Response(_png(state.display_slice(z, window)), media_type="image/png")

    @app.get("/api/cases/{case_id}/labels/{z}.bin")
    def label_slice(case_id: str, z: int) -> Response:
        state = server.cases.get(case_id)
        z = state.check_z(z)
        with state.lock:
            data = state.labels[z].tobytes()
        return Response(data, media_type="application/octet-stream")

    @app.post("/api/cases/{case_id}/segment")
    def segment(case_id: str, req: SegmentRequest) -> Dict[str, Any]:
        start = time.perf_counter()
        state = server.cases.get(case_id)
        z = state.check_z(req.z)
        if req.object is not None:
            state.get_object(req.object)
        box = check_boxes_2d(np.asarray([req.box], np.float64), (state.height, state.width))
        image = state.volume[z]
        encoded = not server.backend.cached(preprocess_image(image)[0])
        predictor = server.predictor()
        with server.backend.foreground():
            predictor.set_image(image)
            mask = predictor.predict(box, label_map=False)[0]
        state.embedded.add(z)
        with state.lock:
            state.snapshot()
            if req.object is None:
                obj = state.new_object(req.name, [float(v) for v in req.box], z)
            else:
                obj = state.get_object(req.object)
                obj.box, obj.z, obj.z_range = [float(v) for v in req.box], z, None
                if req.name:
                    obj.name = req.name
            state.set_slice_mask(obj, z, mask)
            if state.first_mask_s is None:
                state.first_mask_s = time.perf_counter() - state.opened
        ms = (time.perf_counter() - start) * 1000.0
        return {"mask_png": base64.b64encode(_png(mask.astype(np.uint8) * 255)).decode("ascii"), "ms": ms,
                "object": obj.to_json(), "encoded": encoded, "pixels": int(mask.sum()),
                "first_mask_s": state.first_mask_s}

    @app.post("/api/cases/{case_id}/propagate", status_code=202)
    def propagate(case_id: str, req: PropagateRequest) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        if not state.is_3d:
            raise InputError("propagate needs a 3D case; use /segment for 2D")
        if req.object is not None:
            state.get_object(req.object)
        box = check_boxes_3d(np.asarray([req.box], np.float64), state.volume.shape)
        z0, z1 = int(box[0, 2]), int(box[0, 5])
        job = server.add_job("propagate", state.id, z1 - z0 + 1)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            if job.cancel.is_set():
                raise Cancelled()

        def work(job: Job) -> Dict[str, Any]:
            with server.backend.foreground():
                segs = server.predictor().predict_volume(state.volume, box, progress=False, on_progress=progress)
            mask = segs > 0
            with state.lock:
                state.snapshot()
                xyxy = [float(box[0, i]) for i in (0, 1, 3, 4)]
                if req.object is None:
                    obj = state.new_object(req.name, xyxy, int((z1 - z0) / 2 + z0))
                else:
                    obj = state.get_object(req.object)
                    if req.name:
                        obj.name = req.name
                obj.box, obj.z, obj.z_range = xyxy, int((z1 - z0) / 2 + z0), (z0, z1)
                state.set_volume_mask(obj, mask)
                for z in range(z0, z1 + 1):
                    state.embedded.add(z)
            return {"labels": segs, "object": obj.to_json(), "slices": [int(z) for z in np.flatnonzero(mask.any((1, 2)))]}

        run_job(job, work)
        return job.to_json()

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> Dict[str, Any]:
        return server.get_job(job_id).to_json()

    @app.post("/api/jobs/{job_id}/cancel")
    def job_cancel(job_id: str) -> Dict[str, Any]:
        job = server.get_job(job_id)
        job.cancel.set()
        return job.to_json()

    @app.get("/api/jobs/{job_id}/labels")
    def job_labels(job_id: str) -> Response:
        job = server.get_job(job_id)
        if job.state != "done" or not isinstance(job.result, dict) or "labels" not in job.result:
            raise HTTPException(409, f"job {job_id} has no label volume (state {job.state})")
        buf = io.BytesIO()
        np.save(buf, job.result["labels"], allow_pickle=False)
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="propagation_{job_id}.npy"'})

    # ------------------------------------------------------------ objects, history
    @app.patch("/api/cases/{case_id}/objects/{oid}")
    def rename(case_id: str, oid: int, req: RenameRequest) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        with state.lock:
            state.get_object(oid)
            state.snapshot()
            state.objects[oid].name = req.name
        return state.info()

    @app.delete("/api/cases/{case_id}/objects/{oid}")
    def delete_object(case_id: str, oid: int) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        with state.lock:
            state.get_object(oid)
            state.snapshot()
            state.delete_object(oid)
        return state.info()

    @app.post("/api/cases/{case_id}/undo")
    def undo(case_id: str) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        with state.lock:
            state.restore(undo=True)
        return state.info()

    @app.post("/api/cases/{case_id}/redo")
    def redo(case_id: str) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        with state.lock:
            state.restore(undo=False)
        return state.info()

    # ------------------------------------------------------------ output
    @app.get("/api/cases/{case_id}/labels")
    def download(case_id: str) -> FileResponse:
        state = server.cases.get(case_id)
        folder = server.tmp / f"dl-{uuid.uuid4().hex[:12]}"
        with state.lock:
            labels = state.label_map().copy()
        path = write_mask(state.case, labels, mask_path_for(state.case, folder))
        return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    @app.post("/api/cases/{case_id}/save")
    def save(case_id: str, req: SaveRequest) -> Dict[str, Any]:
        state = server.cases.get(case_id)
        target = (server.output_root / req.out_dir).resolve()
        if not (target == server.output_root or target.is_relative_to(server.output_root)):
            raise InputError(f"output folder must be inside the output root {server.output_root}", req.out_dir)
        if target.exists() and not target.is_dir():
            raise InputError("output folder is a file", req.out_dir)
        with state.lock:
            labels = state.label_map().copy()
        path = write_mask(state.case, labels, mask_path_for(state.case, target))
        return {"path": str(path)}

    return app


def serve(config: ServeConfig) -> None:
    """Run the app with uvicorn until interrupted (blocking)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
