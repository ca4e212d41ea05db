"""Output of a case: ``GET /api/cases/{id}/labels`` (download) and ``POST .../save`` (under the output root).

Both write the label map in the case's format (:func:`medsam_lite.imageio.write_mask`) and mark the
case saved (it may then be closed to make room for another).
"""
from __future__ import annotations

import shutil
import uuid
from typing import Any, Dict

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from ...imageio import mask_path_for, write_mask
from ..files import output_folder
from ..server import CaseDep, ServerDep

router = APIRouter(prefix="/api/cases/{case_id}", tags=["output"])


class SaveRequest(BaseModel):
    out_dir: str = "."


@router.get("/labels")
def download(state: CaseDep, server: ServerDep) -> FileResponse:
    folder = server.tmp / f"dl-{uuid.uuid4().hex[:12]}"
    with state.lock:
        labels, version = state.label_map().copy(), state.version
    try:
        path = write_mask(state.case, labels, mask_path_for(state.case, folder))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    state.mark_saved(version)
    return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


@router.post("/save")
def save(state: CaseDep, server: ServerDep, req: SaveRequest) -> Dict[str, Any]:
    target = output_folder(req.out_dir, server.output_root)
    with state.lock:
        labels, version = state.label_map().copy(), state.version
    path = write_mask(state.case, labels, mask_path_for(state.case, target))
    state.mark_saved(version)
    return {"path": str(path)}
