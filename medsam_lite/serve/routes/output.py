"""Output of a case: ``GET /api/cases/{id}/labels`` (download), ``GET .../label-table`` (download of its names)
and ``POST .../save`` (under the output root).

The label map is written in the case's format (:func:`medsam_lite.imageio.write_mask`; DICOM-SEG segments get the
objects' names) and its label table ``<stem>.labels.json`` (object id -> the name typed in the annotator, colour;
:func:`medsam_lite.imageio.write_label_entries`) beside it on save. Saving or downloading the map marks the case
saved (it may then be closed to make room for another).
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Dict

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from ...imageio import label_table_path, mask_path_for, stem_of, write_label_entries, write_mask
from ..files import output_folder
from ..server import CaseDep, ServerDep
from ..state import CaseState

router = APIRouter(prefix="/api/cases/{case_id}", tags=["output"])


class SaveRequest(BaseModel):
    out_dir: str = "."


def _write_map(state: CaseState, folder: Path) -> Dict[str, Any]:
    """Write the label map into ``folder`` (names as DICOM-SEG segment labels); returns its path and version."""
    with state.lock:
        labels, version, entries = state.label_map().copy(), state.version, state.label_entries()
    names = [entries[i][0] if i in entries else None for i in range(1, max(entries, default=0) + 1)]
    return {"path": write_mask(state.case, labels, mask_path_for(state.case, folder), names), "version": version,
            "entries": entries}


def _download(server: Any, write: Callable[[Path], Path]) -> FileResponse:
    """``write(folder)`` into a fresh temporary folder, sent as a download and removed after it."""
    folder = server.tmp / f"dl-{uuid.uuid4().hex[:12]}"
    try:
        path = write(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


@router.get("/labels")
def download(state: CaseDep, server: ServerDep) -> FileResponse:
    written: Dict[str, Any] = {}

    def write(folder: Path) -> Path:
        written.update(_write_map(state, folder))
        return written["path"]

    response = _download(server, write)
    state.mark_saved(written["version"])
    return response


@router.get("/label-table")
def download_table(state: CaseDep, server: ServerDep) -> FileResponse:
    with state.lock:
        entries = state.label_entries()
    return _download(server, lambda folder: write_label_entries(
        label_table_path(folder, stem_of(state.case.path)), entries))


@router.post("/save")
def save(state: CaseDep, server: ServerDep, req: SaveRequest) -> Dict[str, Any]:
    target = output_folder(req.out_dir, server.output_root)
    written = _write_map(state, target)
    table = write_label_entries(label_table_path(target, stem_of(state.case.path)), written["entries"])
    state.mark_saved(written["version"])
    return {"path": str(written["path"]), "labels": str(table)}
