"""Settings of ``medsam-lite serve`` (:class:`ServeConfig`), filled by ``medsam_lite.cli.serve``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


@dataclass
class ServeConfig:
    """Settings of one server.

    ``roots``: files / folders whose contents may be opened by path (resolved, symlinks followed).
    ``output_root``: folder under which masks may be saved. ``model``: pretrained name or checkpoint
    path (None = default). ``host`` / ``port``: where uvicorn binds. ``allowed_hosts``: Host header
    names accepted besides 127.0.0.1, localhost, [::1] and ``host`` (any port; DNS-rebinding guard).
    ``max_upload_mb``: upload (multipart body) size limit. ``max_json_kb``: limit of every other
    request body. ``max_cases``: open cases kept (opening one more closes the oldest case without
    unsaved changes; refused when every open case has some). ``embedding_cache_mb``: in-memory
    slice-embedding budget (4 MiB per slice).
    """

    roots: Sequence[Path] = ()
    output_root: Path = Path(".")
    model: Optional[str] = None
    backend: str = "auto"
    precision: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765
    allowed_hosts: Sequence[str] = ()
    max_upload_mb: float = 512.0
    max_json_kb: float = 64.0
    max_cases: int = 8
    embedding_cache_mb: float = 2048.0
    preload: Sequence[Path] = ()
