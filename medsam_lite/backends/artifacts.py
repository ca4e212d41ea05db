"""Cache of converted inference artifacts (ONNX graphs, OpenVINO IR), built once per machine.

Layout: ``<root>/<format>/<key>/`` where ``root`` is, in order, the ``cache_dir`` argument, the
environment variable ``MEDSAM_LITE_CACHE``, or ``platformdirs.user_cache_dir("medsam-lite")``. The
key (:class:`ArtifactKey`) hashes (format, weights SHA-256 from
:func:`medsam_lite.checkpoint.state_sha256`, precision, runtime library version, our conversion
format version), so new weights, a new runtime or a changed conversion get a fresh entry.

An entry is built by a caller-supplied function into a temporary folder beside it, which is then
renamed into place (:func:`os.rename` is atomic on one file system), all under a ``filelock`` lock:
two processes starting at once convert once, and neither ever sees a half-written entry (the
temporary folder of a process killed mid-conversion is removed by the next builder, which holds the
lock). A complete
entry holds ``manifest.json`` (written last) listing every file with its size; an entry whose
manifest is missing, unreadable, or whose files are missing / of another size is removed and rebuilt.
One line on stderr reports each conversion and how long it took.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

ENV_VAR = "MEDSAM_LITE_CACHE"
MANIFEST = "manifest.json"
LOCK_TIMEOUT_S = 3600.0
"""How long a process waits for another one's conversion of the same entry (seconds)."""


def cache_root(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The cache root: ``cache_dir``, else ``$MEDSAM_LITE_CACHE``, else the user cache folder."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("medsam-lite"))


@dataclass(frozen=True)
class ArtifactKey:
    """What a converted artifact depends on.

    Attributes:
        format: artifact kind, e.g. ``"openvino"`` or ``"onnx"``.
        weights_sha256: :func:`medsam_lite.checkpoint.state_sha256` of the model.
        precision: ``fp32`` / ``bf16`` / ``int8`` (or a named mixed scheme).
        runtime_version: version of the runtime library that converts / runs it.
        format_version: version of our conversion code (bump when the conversion changes).
    """

    format: str
    weights_sha256: str
    precision: str
    runtime_version: str
    format_version: int

    def digest(self) -> str:
        """Short hex digest naming this key's folder."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_dir(key: ArtifactKey, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Folder of ``key``'s entry (it may not exist yet)."""
    return cache_root(cache_dir) / key.format / f"{key.precision}-{key.digest()}"


def _manifest_of(folder: Path) -> Dict[str, int]:
    """{relative path: size} of every file under ``folder`` (except the manifest)."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST
    }


def is_complete(folder: Path, key: Optional[ArtifactKey] = None) -> bool:
    """Whether ``folder`` is a complete entry: its manifest parses, names ``key`` (when given) and every
    listed file exists with the listed size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if key is not None and manifest.get("key") != asdict(key):
            return False
        return bool(files) and all((folder / name).is_file() and (folder / name).stat().st_size == size
                                   for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def ensure_entry(key: ArtifactKey, build: Callable[[Path], None], description: str,
                 cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The folder of ``key``'s complete entry, building it with ``build(tmp_folder)`` if needed.

    ``build`` writes the artifact files into the empty folder it is given; only files written by
    ``build`` belong to the entry (runtime caches written later into the entry, e.g. OpenVINO's
    compiled-model cache in a subfolder, are not checked). ``description`` names the conversion in
    the stderr line, e.g. ``"lite_medsam encoder + decoder to OpenVINO bf16"``.
    """
    from filelock import FileLock

    final = entry_dir(key, cache_dir)
    if is_complete(final, key):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=LOCK_TIMEOUT_S):
        if is_complete(final, key):  # another process built it while we waited
            return final
        if final.exists():  # corrupt or partial: rebuild from scratch
            shutil.rmtree(final, ignore_errors=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a process killed mid-build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        sys.stderr.write(f"medsam-lite: converting {description} (first use, cached in {final}) ...")
        sys.stderr.flush()
        start = time.perf_counter()
        try:
            build(tmp)
            manifest = {"key": asdict(key), "files": _manifest_of(tmp), "created": time.time()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.rename(tmp, final)
        except BaseException:
            sys.stderr.write(" failed\n")
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        sys.stderr.write(f" {time.perf_counter() - start:.1f} s\n")
    return final


def _alias_path(fmt: str, file_sha256: str, cache_dir: Optional[Union[str, Path]]) -> Path:
    return cache_root(cache_dir) / fmt / "by-file" / f"{file_sha256}.json"


def read_alias(fmt: str, file_sha256: str, cache_dir: Optional[Union[str, Path]] = None) -> Optional[str]:
    """The model's ``weights_sha256`` (state SHA-256) recorded for a weights *file* of SHA-256
    ``file_sha256`` by :func:`write_alias`, or None (no record, or an unreadable one). It lets a later
    process find its entry without rebuilding the torch model."""
    try:
        value = json.loads(_alias_path(fmt, file_sha256, cache_dir).read_text())["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and len(value) == 64 else None


def write_alias(fmt: str, file_sha256: str, weights_sha256: str, cache_dir: Optional[Union[str, Path]] = None) -> None:
    """Record (atomically) that the weights file ``file_sha256`` loads to a model of state SHA-256
    ``weights_sha256``."""
    from ..io_utils import atomic_path

    path = _alias_path(fmt, file_sha256, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"weights_sha256": weights_sha256}))

