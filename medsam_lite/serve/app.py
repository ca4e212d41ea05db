"""The FastAPI app of ``medsam-lite serve``: a browser annotator over a documented HTTP API.

API (JSON unless stated; errors are 4xx ``{"detail": "<one line>"}``; the page uses only these;
state-changing requests send ``Content-Type: application/json`` or, for an upload, multipart):

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

Security (:mod:`medsam_lite.serve.security`): only loopback / configured Host names; cross-site
requests and non-JSON state-changing requests are refused; every body is size-limited; a case with
unsaved changes is never closed to make room (409 instead).

Layout: routers per resource in :mod:`medsam_lite.serve.routes`; shared state
(:class:`~medsam_lite.serve.server.Server`) in ``app.state.server``; case state in
:mod:`~medsam_lite.serve.state`, jobs in :mod:`~medsam_lite.serve.jobs`, embeddings in
:mod:`~medsam_lite.serve.embeddings`, the two annotation modes in :mod:`~medsam_lite.serve.slice_mode`
and :mod:`~medsam_lite.serve.volume_mode`.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from . import http_errors, security
from .config import ServeConfig
from .routes import ROUTERS
from .server import Server


def create_app(config: ServeConfig, backend: Any = None) -> FastAPI:
    """The app for ``config``. ``backend``: a ready Backend to share (default: built from ``config.model``)."""
    server = Server(config, backend)
    app = FastAPI(title="medsam-lite serve", docs_url=None, redoc_url=None,
                  description=__doc__, on_shutdown=[server.close])
    app.state.server = server
    http_errors.install(app)
    security.install(app, config)
    for router in ROUTERS:
        app.include_router(router)
    return app


def serve(config: ServeConfig) -> None:
    """Run the app with uvicorn until interrupted (blocking)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", server_header=False)
