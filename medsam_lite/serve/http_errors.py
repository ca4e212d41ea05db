"""Error responses of ``medsam-lite serve``: every refusal is a 4xx ``{"detail": "<one line>"}``.

Details are one line of at most :data:`DETAIL_CHARS` characters (echoed paths / values are cut), so a
huge bogus value never comes back whole. Bad input (:class:`~medsam_lite.errors.InputError`) is 400,
an unknown case / object / job (``KeyError``) 404, a full case store or an edit while a job runs on the case
409, malformed requests 422,
a client that went away mid-body 400 (logged by nobody: nothing is wrong with the server).
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from ..errors import InputError
from .files import shown
from .state import BusyError, CaseLimitError

DETAIL_CHARS = 400
"""Longest ``detail`` sent."""


def error(status: int, detail: object, headers: dict | None = None) -> JSONResponse:
    """``{"detail": detail}`` as one line of at most :data:`DETAIL_CHARS` characters."""
    return JSONResponse({"detail": shown(detail, DETAIL_CHARS)}, status_code=status, headers=headers)


async def _input_error(_: Request, exc: InputError) -> JSONResponse:
    return error(400, exc)


async def _key_error(_: Request, exc: KeyError) -> JSONResponse:
    return error(404, exc.args[0] if exc.args else "not found")


async def _case_limit(_: Request, exc: CaseLimitError) -> JSONResponse:
    return error(409, exc)


async def _busy(_: Request, exc: BusyError) -> JSONResponse:
    return error(409, exc)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, exc.detail, getattr(exc, "headers", None))


async def _disconnect(_: Request, exc: ClientDisconnect) -> JSONResponse:
    return error(400, "client disconnected before the request body was complete")  # nobody reads it


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(shown(p, 40) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return error(422, "bad request: " + "; ".join(parts))


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(KeyError, _key_error)
    app.add_exception_handler(CaseLimitError, _case_limit)
    app.add_exception_handler(BusyError, _busy)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ClientDisconnect, _disconnect)
