"""Request guards of ``medsam-lite serve`` (ASGI middleware), outermost first:

0. :class:`SecurityHeaders`: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, a
   same-origin ``Content-Security-Policy`` with ``frame-ancestors 'none'``,
   ``Cross-Origin-Resource-Policy: same-origin`` (no cross-site ``<img>`` of a slice),
   ``Referrer-Policy: no-referrer`` on every response.
1. Host allow-list (Starlette's :class:`~starlette.middleware.trustedhost.TrustedHostMiddleware`):
   only ``127.0.0.1``, ``localhost``, ``[::1]`` (any port), the ``--host`` address and the
   ``--allowed-host`` names; anything else is 400. This defeats DNS rebinding (a page on
   ``attacker.example`` whose name later resolves to 127.0.0.1 still sends ``Host: attacker.example``).
2. :class:`CrossSiteGuard`: a request whose ``Origin`` is not this server's own origin, or whose
   ``Sec-Fetch-Site`` is ``cross-site`` / ``same-site``, is 403 (every request except GETs of the page
   and its static files, which a link may open); a state-changing request (POST, PUT, PATCH, DELETE)
   must carry ``Content-Type: application/json`` when it has a body or a content type, except the
   upload (``multipart/form-data`` on ``POST /api/cases``): else 415. Browsers send cross-site
   requests without a CORS preflight only as ``text/plain``, form or multipart bodies, and always
   with an ``Origin``; no CORS headers are ever sent, so a cross-site page can neither send JSON nor
   read a response.
3. :class:`BodyLimit`: 413 when a body is larger than its limit (``--max-upload-mb`` for the upload,
   ``max_json_kb`` for everything else), for every content type and casing: by ``Content-Length``
   before anything is read, else by counting the bytes as they stream in (chunked bodies); a body
   other than the upload is read up front (at most ``max_json_kb``) so even a route that ignores
   its body never serves an oversized request.

Refusals are ``{"detail": "<one line>"}`` JSON like every other API error (the Host refusal is
Starlette's plain-text ``Invalid host header``).
"""
from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Tuple

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InputError
from .config import ServeConfig

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*")
"""A DNS host name, lower case (what ``--allowed-host`` accepts besides IP addresses)."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UPLOAD_PATH = "/api/cases"
JSON_TYPES = frozenset({"application/json"})
UPLOAD_TYPE = "multipart/form-data"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}


def allowed_hosts(config: ServeConfig) -> List[str]:
    """Host header names (no port) the server answers: loopback, ``config.host`` unless it is a
    wildcard address (0.0.0.0, ::), and ``config.allowed_hosts``; IPv6 literals in brackets.
    InputError for a name that is neither a host name nor an IP address (no wildcards)."""
    names = list(LOOPBACK_HOSTS)
    for given in (config.host, *config.allowed_hosts):
        name = given.strip().lower()
        try:
            address = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            address = None
            if not HOST_NAME.fullmatch(name):
                raise InputError(f"--allowed-host / --host {given!r} is not a host name or an IP address "
                                 "(no wildcards, no port)") from None
        if address is not None and address.is_unspecified:
            continue
        if address is not None and address.version == 6:
            name = f"[{address.compressed}]"
        if name not in names:
            names.append(name)
    return names


def media_type(headers: Headers) -> Optional[str]:
    """The Content-Type's media type, lower case, without parameters (None without the header)."""
    value = headers.get("content-type")
    return None if value is None else value.split(";", 1)[0].strip().lower()


def is_upload(scope: Scope, headers: Headers) -> bool:
    return scope["method"] == "POST" and scope["path"] == UPLOAD_PATH and media_type(headers) == UPLOAD_TYPE


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


class CrossSiteGuard:
    """403 for cross-site requests, 415 for state-changing requests that are not JSON (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.problem(scope, Headers(scope=scope))
            if problem is not None:
                await _refuse(scope, receive, send, *problem)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def problem(scope: Scope, headers: Headers) -> Optional[tuple]:
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and not path.startswith("/api/"):
            return None  # the page and its static files: a link from anywhere may open them
        origin = headers.get("origin")
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        if origin is not None and origin.strip().lower() != own:
            return 403, "cross-origin request refused (Origin is not this server)"
        if headers.get("sec-fetch-site", "").strip().lower() in ("cross-site", "same-site"):
            return 403, "cross-site request refused (Sec-Fetch-Site)"
        if method not in UNSAFE_METHODS:
            return None
        kind = media_type(headers)
        has_body = headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers
        if (kind is not None or has_body) and kind not in JSON_TYPES and not is_upload(scope, headers):
            return 415, "Content-Type must be application/json (uploads: multipart/form-data on POST /api/cases)"
        return None


class BodyTooLarge(HTTPException):
    """413, raised from the wrapped ``receive`` when a streamed upload passes its limit."""


class BodyLimit:
    """413 for a request body over its limit, for every content type and casing.

    ``Content-Length`` over the limit: refused before anything is read. An upload is counted as it
    streams (the upload route reads it all); any other body is read up front, at most ``other_bytes``
    (small), and replayed to the app, so an oversized body is refused even where no route reads it.
    """

    def __init__(self, app: ASGIApp, upload_bytes: int, other_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.other_bytes = other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = is_upload(scope, headers)
        limit = self.upload_bytes if upload else self.other_bytes
        too_large = f"{'upload' if upload else 'request body'} exceeds the {_size(limit)} limit"
        lengths = headers.getlist("content-length")
        if any(not v.strip().isdigit() for v in lengths) or len(set(lengths)) > 1:
            await _refuse(scope, receive, send, 400, "bad Content-Length header")
            return
        if lengths and int(lengths[0]) > limit:
            await _refuse(scope, receive, send, 413, too_large)
            return
        if upload:
            await self.app(scope, _counted(receive, limit, too_large), send)
            return
        if not (lengths and int(lengths[0]) > 0) and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        outcome, body = await _read_at_most(receive, limit)
        if outcome == "too large":
            await _refuse(scope, receive, send, 413, too_large)
        elif outcome == "ok":
            await self.app(scope, _replay(body, receive), send)
        # "gone": the client disconnected mid-body; nobody to answer


def _size(limit: int) -> str:
    return f"{limit / 2**20:.3g} MiB" if limit >= 2**20 else f"{limit / 2**10:.3g} KiB"


def _counted(receive: Receive, limit: int, too_large: str) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(413, too_large)
        return message

    return counted


async def _read_at_most(receive: Receive, limit: int) -> Tuple[str, bytes]:
    """``("ok", body)``, ``("too large", b"")`` once past ``limit``, or ``("gone", b"")`` on disconnect."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return "gone", b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return "too large", b""
        chunks.append(chunk)
        if not message.get("more_body", False):
            return "ok", b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: ASGIApp, config: ServeConfig) -> None:
    """Add the guards to the FastAPI ``app`` (``add_middleware``: the last added runs first)."""
    app.add_middleware(BodyLimit, upload_bytes=int(config.max_upload_mb * 2**20),
                       other_bytes=int(config.max_json_kb * 2**10))
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(config), www_redirect=False)
    app.add_middleware(SecurityHeaders)

