"""Objects and history of a case: rename, delete, undo, redo (each returns the case info)."""
from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..server import CaseDep

router = APIRouter(prefix="/api/cases/{case_id}", tags=["objects"])


class RenameRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)


@router.patch("/objects/{oid}")
def rename(state: CaseDep, oid: int, req: RenameRequest) -> Dict[str, Any]:
    with state.lock:
        state.get_object(oid)
        state.snapshot()
        state.objects[oid].name = req.name
    return state.info()


@router.delete("/objects/{oid}")
def delete_object(state: CaseDep, oid: int) -> Dict[str, Any]:
    with state.lock:
        state.get_object(oid)
        state.snapshot()
        state.delete_object(oid)
    return state.info()


@router.post("/undo")
def undo(state: CaseDep) -> Dict[str, Any]:
    with state.lock:
        state.restore(undo=True)
    return state.info()


@router.post("/redo")
def redo(state: CaseDep) -> Dict[str, Any]:
    with state.lock:
        state.restore(undo=False)
    return state.info()
