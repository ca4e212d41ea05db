"""Annotation on a case: ``POST /api/cases/{id}/segment`` (a box on a slice) and ``.../propagate`` (3D job)."""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..images import png
from ..server import CaseDep, ServerDep
from ..slice_mode import segment_box
from ..volume_mode import start_propagation

router = APIRouter(prefix="/api/cases/{case_id}", tags=["annotate"])


class SegmentRequest(BaseModel):
    box: List[float] = Field(min_length=4, max_length=4)
    z: int = 0
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)


class PropagateRequest(BaseModel):
    box: List[float] = Field(min_length=6, max_length=6)
    object: Optional[int] = None
    name: Optional[str] = Field(default=None, max_length=200)


@router.post("/segment")
def segment(state: CaseDep, server: ServerDep, req: SegmentRequest) -> Dict[str, Any]:
    out = segment_box(server, state, req.box, req.z, req.object, req.name)
    mask = out["mask"]
    return {"mask_png": base64.b64encode(png(mask.astype(np.uint8) * 255)).decode("ascii"), "ms": out["ms"],
            "object": out["object"].to_json(), "encoded": out["encoded"], "pixels": int(mask.sum()),
            "first_mask_s": state.first_mask_s}


@router.post("/propagate", status_code=202)
def propagate(state: CaseDep, server: ServerDep, req: PropagateRequest) -> Dict[str, Any]:
    return start_propagation(server, state, req.box, req.object, req.name).to_json()
