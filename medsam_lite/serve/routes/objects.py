"""Objects and history of a case: rename, lock, unlock, delete, undo, redo (each returns the case info).

An empty (or blank) name gives the object its default name ``object <id>`` back. Every edit is refused with 409
while an edit job runs on the case.
"""
from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..editing import edit
from ..server import CaseDep
from ..state import default_name

router = APIRouter(prefix="/api/cases/{case_id}", tags=["objects"])


class RenameRequest(BaseModel):
    name: str = Field(max_length=200)


@router.patch("/objects/{oid}")
def rename(state: CaseDep, oid: int, req: RenameRequest) -> Dict[str, Any]:
    with state.lock:
        state.get_object(oid)
        state.check_idle()
        with edit(state):
            state.objects[oid].name = req.name.strip() or default_name(oid)
    return state.info()


def _session_call(state: Any, oid: int, method: str) -> Dict[str, Any]:
    with state.lock:
        state.get_object(oid)
        state.check_idle()
        with edit(state) as steps:
            if method != "remove":
                if state.session.objects[oid].locked == (method == "lock"):
                    return state.info()  # already so: no step
            steps(method, oid)
    return state.info()


@router.post("/objects/{oid}/lock")
def lock(state: CaseDep, oid: int) -> Dict[str, Any]:
    return _session_call(state, oid, "lock")


@router.post("/objects/{oid}/unlock")
def unlock(state: CaseDep, oid: int) -> Dict[str, Any]:
    return _session_call(state, oid, "unlock")


@router.delete("/objects/{oid}")
def delete_object(state: CaseDep, oid: int) -> Dict[str, Any]:
    return _session_call(state, oid, "remove")


@router.post("/undo")
def undo(state: CaseDep) -> Dict[str, Any]:
    with state.lock:
        state.check_idle()
        state.restore(undo=True)
    return state.info()


@router.post("/redo")
def redo(state: CaseDep) -> Dict[str, Any]:
    with state.lock:
        state.check_idle()
        state.restore(undo=False)
    return state.info()
