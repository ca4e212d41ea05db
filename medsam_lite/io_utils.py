"""Atomic file writing: write to a temporary name in the target folder, then rename.

Temporary names are ``.<stem>.<pid>-<random>.tmp<suffixes>`` beside the target (the pattern
``.<stem>.*.tmp*`` other cleaners match). They are created with ``os.open(..., 0o666)``, so the
final file gets the permissions a plain ``open(path, "w")`` would give under the process umask
(0644 under umask 022), not ``mkstemp``'s 0600. The pid in the name lets
:func:`remove_dead_temporaries` delete what a killed process left behind without touching the
temporary files of a run that is still going.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


def _split_suffix(name: str) -> "tuple[str, str]":
    suffix = "".join(Path(name).suffixes)
    return (name[: len(name) - len(suffix)], suffix) if suffix else (name, "")


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    The temporary name keeps ``path``'s suffixes (``.x.1234-0a1b2c3d.tmp.nii.gz``) so writers that
    choose the format from the extension still work. The file exists (empty) when the body starts;
    the body may overwrite or replace it. A failing body leaves neither a partial ``path`` nor a
    temporary file; an existing ``path`` is kept unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(path.name)
    while True:
        tmp_path = path.parent / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        raise _naming(exc, path, tmp_path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _naming(exc: OSError, path: Path, tmp_path: Path) -> OSError:
    """``exc`` naming ``path`` (the file the caller asked for) instead of nothing or the temporary name:
    a write that fails with ENOSPC has no file name of its own, and the temporary name means nothing
    to a user."""
    if exc.filename not in (None, str(tmp_path), tmp_path):
        return exc
    named = OSError(exc.errno, exc.strerror or str(exc), str(path))
    named.__traceback__ = exc.__traceback__
    return named


def real_path(path: Union[str, Path]) -> Path:
    """``path`` with every symbolic link resolved as far as possible; never raises (a link loop or a
    missing target stays as written, made absolute). For comparing outputs with inputs."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, RuntimeError, ValueError):  # pragma: no cover - realpath(strict=False) rarely raises
        return Path(os.path.abspath(path))


def link_problem(path: Union[str, Path]) -> "str | None":
    """Why the symbolic link ``path`` cannot be followed (a loop, a missing target), or None when
    ``path`` is not a link or the link works."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (following it leads back to itself)"
        if exc.errno == errno.ENOENT:
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return f"cannot follow symbolic link ({exc.strerror or exc})"
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as exc:  # pragma: no cover
        return exc.errno != errno.ESRCH
    return True


def remove_dead_temporaries(folder: Union[str, Path]) -> List[Path]:
    """Delete the :func:`atomic_path` temporary files in ``folder`` (not recursive) whose writing
    process is no longer running (a killed run). Returns what was removed."""
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match and entry.is_file() and not _pid_alive(int(match.group("pid"))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_output_folder(folder: Union[str, Path], what: str = "output folder") -> None:
    """An existing writable folder, or a path whose nearest existing ancestor is a writable folder.
    Creates nothing (a probe file in an existing folder is created and removed). Raises InputError."""
    from .errors import InputError

    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise InputError(f"{what} exists and is not a folder", folder)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise InputError(f"{what} is not writable ({exc.strerror or exc})", folder) from None
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot create {what}: {parent} is not a folder", folder)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot create {what}: {parent} is not writable", folder)
