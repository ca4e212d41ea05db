"""Cases: open (path or upload), info, close, slices for display, label-map slices.

``POST /api/cases``: JSON ``{"path", "window"}`` or a multipart ``file`` (+ ``window``) upload.
"""
from __future__ import annotations

import json
import shutil
import uuid
from typing import Any, Dict, Optional

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ...errors import InputError
from ..files import resolve_under, store_upload
from ..images import png
from ..security import UPLOAD_TYPE, media_type
from ..server import CaseDep, Server, ServerDep

router = APIRouter(prefix="/api/cases", tags=["cases"])


class OpenPath(BaseModel):
    path: str
    window: Optional[str] = None


@router.post("")
async def open_case(request: Request, server: ServerDep) -> Dict[str, Any]:
    if media_type(request.headers) == UPLOAD_TYPE:
        return await _open_upload(request, server)
    req = _open_request(await request.body())
    path = resolve_under(req.path, server.roots, "case path")
    state = await run_in_threadpool(server.open, path, req.window)
    return state.info()


def _open_request(body: bytes) -> OpenPath:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(400, "body must be JSON {\"path\": ...} or a multipart file upload") from None
    if not isinstance(data, dict) or not isinstance(data.get("path"), str):
        raise HTTPException(400, "JSON body must be {\"path\": \"<file under an allowed root>\"}")
    if data.get("window") is not None and not isinstance(data["window"], str):
        raise HTTPException(400, "window must be a preset name or \"LEVEL,WIDTH\"")
    try:
        return OpenPath(**{k: v for k, v in data.items() if k in ("path", "window")})
    except ValidationError:
        raise HTTPException(422, "bad request: path and window must be text") from None


async def _open_upload(request: Request, server: Server) -> Dict[str, Any]:
    server.cases.check_room()  # before reading a large body for nothing
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError("multipart upload needs a 'file' field")
        folder = server.tmp / uuid.uuid4().hex[:12]
        dest = await store_upload(_chunks(upload), folder, upload.filename or "")
        window = form.get("window")
        window = window if isinstance(window, str) and window else None
        try:
            state = await run_in_threadpool(server.open, dest, window, upload.filename, folder)
        except BaseException:  # also a cancelled request: the upload's folder never outlives it
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return state.info()


async def _chunks(upload: Any):
    while chunk := await upload.read(1 << 20):
        yield chunk


@router.get("/{case_id}")
def case_info(state: CaseDep) -> Dict[str, Any]:
    return state.info()


@router.delete("/{case_id}")
def close_case(case_id: str, server: ServerDep) -> Dict[str, Any]:
    server.cases.remove(case_id)
    return {"closed": case_id}


@router.get("/{case_id}/slice/{z}.png")
def slice_png(state: CaseDep, z: int, window: str = "auto") -> Response:
    image = state.display_slice(z, window)
    state.focus = int(z)  # the user looks here: background embedding continues from this slice
    return Response(png(image), media_type="image/png")


@router.get("/{case_id}/value/{z}")
def value(state: CaseDep, z: int, x: int, y: int) -> Dict[str, Any]:
    """The raw value (HU for CT) under the cursor, the model's uint8 value and the label at (x, y) of slice z."""
    return state.value_at(z, x, y)


@router.get("/{case_id}/labels/{z}.bin")
def label_slice(state: CaseDep, z: int) -> Response:
    z = state.check_z(z)
    with state.lock:
        data = state.labels[z].tobytes()
    return Response(data, media_type="application/octet-stream")
