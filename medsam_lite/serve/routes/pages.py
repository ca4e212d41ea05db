"""The page: ``/`` and ``/static/{name}`` (the HTML / JS / CSS shipped in the package)."""
from __future__ import annotations

import importlib.resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(include_in_schema=False)


def static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(404, f"no static file {name!r}")
    data = importlib.resources.files("medsam_lite.serve").joinpath("static", name).read_bytes()
    return Response(data, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/")
def index() -> Response:
    return static("index.html")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    return static(name)
