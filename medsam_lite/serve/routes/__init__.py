"""HTTP routes of ``medsam-lite serve``, one :class:`fastapi.APIRouter` per resource.

Routes reach the shared state only through the dependencies of :mod:`medsam_lite.serve.server`
(``ServerDep``: ``request.app.state.server``; ``CaseDep``: an open case by ``{case_id}``).
"""
from __future__ import annotations

from typing import Tuple

from fastapi import APIRouter

from . import annotate, cases, info, jobs, objects, output, pages

ROUTERS: Tuple[APIRouter, ...] = (pages.router, info.router, cases.router, annotate.router, objects.router,
                                  jobs.router, output.router)
"""Every router of the app, in the order they are included."""
