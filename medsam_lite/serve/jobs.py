"""Job control of ``medsam-lite serve``: background tasks (embedding a case, a propagation) in threads.

A :class:`Job` records progress ``done / total``, its state and result; :class:`JobTable` keeps the
recent ones by id (the last :data:`KEEP_JOBS` finished, and the label volumes of the last
:data:`KEEP_VOLUMES`); :func:`run_job` runs one in a daemon thread. Case state lives in
:mod:`medsam_lite.serve.state`; this module knows nothing of cases but their ids.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import Cancelled, InputError

__all__ = ["Cancelled", "Job", "JobTable", "run_job", "embedding_order"]

KEEP_JOBS = 64
"""Finished jobs kept (their status stays readable)."""
KEEP_VOLUMES = 4
"""Finished propagation jobs whose label volume ``/api/jobs/{job}/labels`` still serves."""


@dataclass
class Job:
    """A background task (embedding a case, a propagation) with progress ``done / total``."""

    id: str
    kind: str
    case_id: str
    total: int
    done: int = 0
    state: str = "running"  # running | done | error | cancelled
    message: str = ""
    started: float = field(default_factory=time.perf_counter)
    ms: Optional[float] = None
    result: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: Optional[threading.Thread] = None

    def to_json(self) -> Dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "case": self.case_id, "state": self.state, "done": self.done,
               "total": self.total, "message": self.message, "ms": self.ms}
        if isinstance(self.result, dict):
            out.update({k: v for k, v in self.result.items() if k != "labels"})
        return out


class JobTable:
    """Jobs by id; thread-safe."""

    def __init__(self) -> None:
        self._jobs: Dict[str, Job] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, case_id: str, total: int) -> Job:
        job = Job(uuid.uuid4().hex[:12], kind, case_id, total)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state != "running"]
            for old in finished[:-KEEP_JOBS]:  # keep the last finished jobs only
                self._jobs.pop(old.id, None)
            for old in finished[:-KEEP_VOLUMES]:  # and the label volumes of the last few
                if isinstance(old.result, dict):
                    old.result.pop("labels", None)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"unknown job {job_id!r}")
            return self._jobs[job_id]

    def all(self) -> List[Job]:
        with self._lock:
            return list(self._jobs.values())

    def stop_all(self, timeout: float = 30.0) -> None:
        """Cancel every job and wait for its thread (at most ``timeout`` s each)."""
        jobs = self.all()
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=timeout)


def run_job(job: Job, work: Callable[[Job], Any]) -> threading.Thread:
    """Run ``work(job)`` in a daemon thread, recording state, result, message and milliseconds."""

    def target() -> None:
        try:
            job.result = work(job)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except InputError as exc:
            job.state, job.message = "error", str(exc)
        except Exception as exc:  # a job must never take the server down; the page shows the line
            job.state, job.message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            job.ms = (time.perf_counter() - job.started) * 1000.0

    job.thread = threading.Thread(target=target, name=f"serve-{job.kind}-{job.id}", daemon=True)
    job.thread.start()
    return job.thread


def embedding_order(depth: int, start: Optional[int] = None) -> List[int]:
    """Slices from ``start`` (default the middle) outwards: start, start+1, start-1, start+2, ..."""
    start = depth // 2 if start is None else start
    order = [start]
    for step in range(1, depth):
        for z in (start + step, start - step):
            if 0 <= z < depth:
                order.append(z)
    return order
