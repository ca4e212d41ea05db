"""Server info and the openable files: ``GET /api/info``, ``GET /api/files``."""
from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter

from ..files import list_files
from ..server import ServerDep
from ..state import COLOURS

router = APIRouter(prefix="/api", tags=["info"])


@router.get("/info")
def info(server: ServerDep) -> Dict[str, Any]:
    config = server.config
    return {"roots": [str(r) for r in server.roots], "output_root": str(server.output_root),
            "max_upload_mb": config.max_upload_mb, "model": config.model or "default",
            "backend": server.backend.name, "colours": [list(c) for c in COLOURS],
            "cases": [s.info() for s in server.cases.all()]}


@router.get("/files")
def files(server: ServerDep) -> Dict[str, Any]:
    return {"files": list_files(server.roots)}
