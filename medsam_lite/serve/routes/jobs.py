"""Background jobs: ``GET /api/jobs/{job}``, ``POST .../cancel``, ``GET .../labels`` (a propagation's volume)."""
from __future__ import annotations

import io
from typing import Any, Dict

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from ..server import ServerDep

router = APIRouter(prefix="/api/jobs/{job_id}", tags=["jobs"])


@router.get("")
def job_status(job_id: str, server: ServerDep) -> Dict[str, Any]:
    return server.jobs.get(job_id).to_json()


@router.post("/cancel")
def job_cancel(job_id: str, server: ServerDep) -> Dict[str, Any]:
    job = server.jobs.get(job_id)
    job.cancel.set()
    return job.to_json()


@router.get("/labels")
def job_labels(job_id: str, server: ServerDep) -> Response:
    job = server.jobs.get(job_id)
    if job.state != "done" or not isinstance(job.result, dict) or "labels" not in job.result:
        raise HTTPException(409, f"job {job_id} has no label volume (state {job.state})")
    buf = io.BytesIO()
    np.save(buf, job.result["labels"], allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="propagation_{job_id}.npy"'})
