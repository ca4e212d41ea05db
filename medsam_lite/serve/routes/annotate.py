"""Annotation on a case: ``POST /api/cases/{id}/segment`` (a box on a slice, answered at once), ``.../box`` (a box
drawn by the page: new object or correction by the rules, as a job), ``.../correct`` (a correction job) and
``.../propagate`` (a 3D box, a pending object or every pending object, as a job)."""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..images import png
from ..server import CaseDep, ServerDep
from ..slice_mode import segment_box
from ..volume_mode import start_box, start_correction, start_propagation

router = APIRouter(prefix="/api/cases/{case_id}", tags=["annotate"])


class SegmentRequest(BaseModel):
    box: List[float] = Field(min_length=4, max_length=4)
    z: int = 0
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)


class BoxRequest(BaseModel):
    box: List[float] = Field(min_length=4, max_length=4)
    z: int = 0
    selected: Optional[int] = None
    mode: str = Field(default="auto", max_length=10)
    name: Optional[str] = Field(default=None, max_length=200)
    z_range: Optional[List[int]] = Field(default=None, min_length=2, max_length=2)


class CorrectRequest(BaseModel):
    object: int
    z: int
    box: List[float] = Field(min_length=4, max_length=4)


class PropagateRequest(BaseModel):
    box: Optional[List[float]] = Field(default=None, min_length=6, max_length=6)
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)
    z: Optional[int] = None
    z_range: Optional[List[int]] = Field(default=None, min_length=2, max_length=2)
    all: bool = False


@router.post("/segment")
def segment(state: CaseDep, server: ServerDep, req: SegmentRequest) -> Dict[str, Any]:
    out = segment_box(server, state, req.box, req.z, req.object, req.name)
    mask = out["mask"]
    return {"mask_png": base64.b64encode(png(mask.astype(np.uint8) * 255)).decode("ascii"), "ms": out["ms"],
            "object": out["object"].to_json(), "encoded": out["encoded"], "pixels": int(mask.sum()),
            "first_mask_s": state.first_mask_s}


@router.post("/box", status_code=202)
def box(state: CaseDep, server: ServerDep, req: BoxRequest) -> Dict[str, Any]:
    return start_box(server, state, req.box, req.z, req.selected, req.mode, req.name, req.z_range).to_json()


@router.post("/correct", status_code=202)
def correct(state: CaseDep, server: ServerDep, req: CorrectRequest) -> Dict[str, Any]:
    return start_correction(server, state, req.object, req.z, req.box).to_json()


@router.post("/propagate", status_code=202)
def propagate(state: CaseDep, server: ServerDep, req: PropagateRequest) -> Dict[str, Any]:
    return start_propagation(server, state, req.box, req.object, req.name, req.z, req.z_range, req.all).to_json()
