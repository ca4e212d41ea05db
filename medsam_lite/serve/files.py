"""Files of ``medsam-lite serve``: the allowed roots (open by path, list), uploads, the output root.

Every path a request names is checked here: resolved (symlinks, ``..``) and then required to be at
or under an allowed root (:func:`resolve_under`), or under the output root (:func:`output_folder`);
``/api/files`` lists only entries that pass the same check (:func:`list_files`).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import AsyncIterator, List, Optional, Sequence

from ..errors import InputError
from ..imageio import Case, is_supported, read_case

LIST_LIMIT = 1000
"""Most entries ``/api/files`` lists."""
SHOWN_CHARS = 200
"""Longest user-given text (a path, a name) echoed in an error message."""


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters (longer: cut, with the full length said)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    tail = f"... ({len(line)} characters)"
    return line[:max(limit - len(tail), 0)] + tail


def _check_text(path: str | os.PathLike, what: str) -> str:
    text = os.fspath(path)
    if "\0" in text:
        raise InputError(f"{what} contains a NUL byte", shown(text))
    return text


def resolve_under(path: str | os.PathLike, roots: Sequence[Path], what: str = "path") -> Path:
    """``path`` resolved (symlinks and ``..`` followed); InputError unless it is one of ``roots`` or
    inside a root folder. ``roots`` must already be resolved."""
    text = _check_text(path, what)
    try:
        resolved = Path(text).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{what} not found", shown(text)) from exc
    if not is_under(resolved, roots):
        raise InputError(f"{what} is outside the allowed roots (the paths given to 'medsam-lite serve')", shown(text))
    return resolved


def is_under(resolved: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved path is one of ``roots`` or inside a root folder."""
    return any(resolved == root or (root.is_dir() and resolved.is_relative_to(root)) for root in roots)


def output_folder(out_dir: str, output_root: Path) -> Path:
    """The folder ``out_dir`` (relative to the resolved ``output_root``), resolved; InputError unless it
    lies under the output root and is not a file."""
    text = _check_text(out_dir, "output folder")
    try:
        target = (output_root / text).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError("bad output folder", shown(text)) from exc
    if not (target == output_root or target.is_relative_to(output_root)):
        raise InputError(f"output folder must be inside the output root {output_root}", shown(text))
    if target.exists() and not target.is_dir():
        raise InputError("output folder is a file", shown(text))
    return target


def list_files(roots: Sequence[Path]) -> List[str]:
    """Openable files / DICOM folders at or under the resolved ``roots`` (at most :data:`LIST_LIMIT`),
    without hidden entries and without symlinks that lead outside the roots."""
    out: List[str] = []
    for root in roots:
        if root.is_file():
            out.append(str(root))
        elif root.is_dir():
            _list_folder(root, roots, out)
        if len(out) >= LIST_LIMIT:
            break
    return out[:LIST_LIMIT]


def _list_folder(root: Path, roots: Sequence[Path], out: List[str]) -> None:
    for path in sorted(root.rglob("*")):
        if len(out) >= LIST_LIMIT:
            return
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            if path.is_symlink() and not is_under(path.resolve(strict=True), roots):
                continue
            if (path.is_file() or path.is_dir()) and is_supported(path):
                out.append(str(path))
        except (OSError, RuntimeError):
            continue


def safe_name(name: str) -> str:
    """The base name of an uploaded file with only ``[A-Za-z0-9._-]`` (InputError if nothing is left)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:200].lstrip(".")
    if not base:
        raise InputError("upload has no usable file name")
    return base


def open_case_file(path: Path, source_name: Optional[str] = None) -> Case:
    """``read_case`` with the message naming ``source_name`` (the uploaded file's name) when given."""
    try:
        return read_case(path)
    except InputError as exc:
        if source_name:
            raise InputError(exc.problem, shown(source_name)) from exc
        raise


async def store_upload(chunks: AsyncIterator[bytes], folder: Path, name: str) -> Path:
    """Write the uploaded ``chunks`` to ``folder/safe_name(name)`` (``folder`` is created and removed
    again if writing fails)."""
    folder.mkdir(parents=True)
    try:
        dest = folder / safe_name(name)
        with open(dest, "wb") as fh:
            async for chunk in chunks:
                fh.write(chunk)
        return dest
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
