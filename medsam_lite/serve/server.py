"""The state behind one app of ``medsam-lite serve`` and how routes reach it.

:class:`Server` holds the config, the resolved roots, the shared caching backend, the open cases,
the jobs and a private temporary folder. ``create_app`` stores it as ``app.state.server``; routes get
it (and a case by its path parameter) through the FastAPI dependencies :data:`ServerDep` and
:data:`CaseDep` — no module globals.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Dict, Optional

from fastapi import Depends, Request

from ..normalize import parse_window
from ..transforms import preprocess_array
from .config import ServeConfig
from ..embedding_cache import MemoryEmbeddingStore
from .embeddings import CachingBackend
from .files import open_case_file
from .jobs import Cancelled, Job, JobTable, embedding_order, run_job
from .state import HISTORY_LIMIT, CaseState, CaseStore


class Server:
    """Config, the shared caching backend, open cases, jobs, temp folder of one app."""

    def __init__(self, config: ServeConfig, backend: Any = None) -> None:
        self.config = config
        self.roots = [Path(r).expanduser().resolve() for r in config.roots]
        self.output_root = Path(config.output_root).expanduser().resolve()
        if backend is None:
            from ..predictor import Predictor

            backend = Predictor(config.model, backend=config.backend, precision=config.precision).backend
        self.store = MemoryEmbeddingStore(int(config.embedding_cache_mb * 2**20))
        self.backend = CachingBackend(backend, self.store)
        self.speaks_torch = self.predictor().uses_torch
        """Whether the shared backend takes torch tensors (the torch reference), decided once."""
        self.cases = CaseStore(config.max_cases)
        self.jobs = JobTable()
        self.tmp = Path(tempfile.mkdtemp(prefix="medsam-lite-serve-"))

    def close(self) -> None:
        """Cancel running jobs, wait for them (bounded), close the cases, remove the temporary folder."""
        self.jobs.stop_all()
        self.cases.close_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def predictor(self) -> Any:
        """A light :class:`~medsam_lite.predictor.Predictor` on the shared backend (one per request)."""
        from ..predictor import Predictor

        return Predictor(backend=self.backend)

    def model_input(self, image: Any) -> Any:
        """The (1, 3, 256, 256) float32 model-frame input of an (H, W[, 3]) uint8 slice, in the kind the shared
        backend speaks: a torch tensor for the torch reference, numpy otherwise (the default path imports no
        torch)."""
        array, _ = preprocess_array(image)
        if not self.speaks_torch:
            return array
        import torch

        return torch.from_numpy(array)

    def session(self, array: Any) -> Any:
        """A :class:`~medsam_lite.session.Session` on a case's uint8 model input (``Predictor.session``) on the shared
        backend and its one embedding store; earlier objects are locked by the annotator's rules
        (:mod:`medsam_lite.serve.editing`), not on every add."""
        from ..predictor import Predictor

        store = self.store if self.backend.weights_sha256 else None  # keys need the weights (else the session's own)
        return Predictor(backend=self.backend, embedding_cache=store).session(
            array, lock_previous=False, history_steps=4 * HISTORY_LIMIT * 8)

    def open(self, case_path: Path, window: Optional[str], display: Optional[str] = None,
             temp_dir: Optional[Path] = None) -> CaseState:
        """Read ``case_path`` into a new open case and start embedding it. ``temp_dir`` (an upload's
        folder) then belongs to the case; it is removed here if opening fails."""
        try:
            self.cases.check_room()
            case = open_case_file(case_path, display)
            state = CaseState(self.cases.new_id(), case, parse_window(window), display or case.path.name, temp_dir,
                              self.session)
            self.cases.add(state)
        except BaseException:
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        self.start_embedding(state)
        return state

    def start_embedding(self, state: CaseState) -> None:
        """Encode every slice of ``state`` in the background, nearest the case's ``focus`` slice first (the middle
        at opening; then the slice the user looks at or drew on), one encoder run at a time and none while a
        foreground operation (a request, an edit job) runs; slices an edit job embedded are store hits."""
        job = self.jobs.add("embed", state.id, state.depth)
        state.embed_job = job

        def work(job: Job) -> Dict[str, Any]:
            while len(state.embedded) < state.depth:
                if job.cancel.is_set():
                    raise Cancelled()
                z = next(s for s in embedding_order(state.depth, state.focus) if s not in state.embedded)
                self.backend.encode_background(self.model_input(state.volume[z]))
                state.embedded.add(z)
                job.done = len(state.embedded)
            return {}

        run_job(job, work)


def get_server(request: Request) -> Server:
    """FastAPI dependency: the app's :class:`Server`."""
    return request.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]


def get_case(case_id: str, server: ServerDep) -> CaseState:
    """FastAPI dependency: the open case of the ``{case_id}`` path parameter (404 if none)."""
    return server.cases.get(case_id)


CaseDep = Annotated[CaseState, Depends(get_case)]
