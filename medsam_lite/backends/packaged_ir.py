"""The OpenVINO IR shipped as package data: how an install without torch runs the default model.

``medsam_lite/weights/lite_medsam_openvino/`` holds LiteMedSAM's f32 IR (``encoder``, ``decoder_image``,
``decoder_box`` ``.xml`` / ``.bin``, exactly what :func:`medsam_lite.backends.openvino.convert_to_ir` writes
into the artifact cache) and ``manifest.json``: the SHA-256 of every file, the checkpoint it was converted
from (the SHA-256 of ``lite_medsam.pth``), the model's state SHA-256 (the ``weights_sha256`` every backend
states, so embedding-cache keys do not change), the conversion's ``format_version`` and the library versions
that built it. It is built by ``scripts/build_default_ir.py`` (:func:`medsam_lite.export.openvino_ir.build_ir`;
the conversion is byte-reproducible with the same torch / onnx / OpenVINO versions) and opened by
:class:`~medsam_lite.backends.openvino.OpenVINOBackend` for ``lite_medsam`` at every precision that runs the f32
IR (fp32, bf16, bf16-encoder), with or without torch. Every file is SHA-256 checked when it is opened, like the
weights; a mismatch is one line naming the file. Nothing here imports torch or OpenVINO.

Hashing the ~50 MB of IR took 0.16-0.19 s of every start-up (2-core AMD EPYC), so a file whose digest was checked
is recorded in the user cache (:func:`verify_record_path`) with its ``os.stat`` identity (size, mtime_ns,
ctime_ns, inode) and the digest it had; a later process skips hashing a file only while all four are unchanged and
the recorded digest is the manifest's. Any change of the file (a write, a copy, a restored mtime, which moves
ctime) hashes it again. A record that cannot be read or written only costs the hashing.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import InputError
from ..encoders.weights import sha256_of
from .artifacts import ArtifactKey, cache_root

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""Package-data folder of the shipped weights (``medsam_lite/weights``)."""

FOLDERS: Dict[str, str] = {"lite_medsam": "lite_medsam_openvino"}
"""Pretrained name -> its packaged IR folder under :data:`WEIGHTS_DIR`."""

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PackagedIR:
    """A packaged IR as its manifest describes it (``files``: file name -> SHA-256)."""

    name: str
    folder: Path
    weights_sha256: str
    checkpoint_sha256: str
    format_version: int
    built_with: Dict[str, str]
    files: Dict[str, str]


def folder_of(name: str, root: Optional[Path] = None) -> Path:
    """Where the IR of pretrained ``name`` lives (it may be absent)."""
    return (root or WEIGHTS_DIR) / FOLDERS[name]


def read(name: str, root: Optional[Path] = None) -> Optional[PackagedIR]:
    """The packaged IR of ``name`` (None: no IR is packaged for that name); a manifest that cannot be read
    raises InputError naming it. Nothing is hashed yet (:func:`verify`)."""
    if name not in FOLDERS:
        return None
    folder = folder_of(name, root)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        files = {str(k): str(v) for k, v in data["files"].items()}
        return PackagedIR(name, folder, str(data["weights_sha256"]), str(data["checkpoint_sha256"]),
                          int(data["format_version"]), dict(data.get("built_with", {})), files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"unreadable packaged IR manifest ({type(exc).__name__}: {exc}); reinstall medsam-lite",
                         path) from None


def cache_key(ir: PackagedIR) -> ArtifactKey:
    """The artifact key of the packaged IR ``ir``: its user-cache folder ``<cache root>/openvino/packaged-<digest>``
    holds OpenVINO's compiled-model cache and the record of verified digests."""
    return ArtifactKey("openvino", ir.weights_sha256, "fp32", ir.built_with.get("openvino", ""), ir.format_version)


def cache_folder(ir: PackagedIR, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """``<cache root>/openvino/packaged-<key digest>`` of ``ir`` (:func:`cache_key`; the package may be read-only)."""
    return cache_root(cache_dir) / "openvino" / f"packaged-{cache_key(ir).digest()}"


def verify_record_path(ir: PackagedIR, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where the verified digests of ``ir``'s files are recorded: ``verified-<hash of the folder's resolved
    path>.json`` in :func:`cache_folder`."""
    tag = hashlib.sha256(str(Path(ir.folder).resolve()).encode()).hexdigest()[:20]
    return cache_folder(ir, cache_dir) / f"verified-{tag}.json"


def _identity(path: Path) -> List[int]:
    """The ``os.stat`` identity of a file a recorded digest stands for: [size, mtime_ns, ctime_ns, inode]."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def _read_record(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(path: Path, record: Dict[str, Any]) -> None:
    """Write ``record`` atomically (temporary file + :func:`os.replace`); a failure is ignored (only costs hashing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def verify(ir: PackagedIR, cache_dir: Optional[Union[str, Path]] = None) -> PackagedIR:
    """``ir`` after checking every file's SHA-256 against its manifest (InputError naming the file otherwise).

    A file whose stat identity and digest are recorded as verified (module docstring; the record lives under
    the cache root of ``cache_dir``) is not hashed again; every file hashed and found right is recorded."""
    record_path = verify_record_path(ir, cache_dir)
    record = _read_record(record_path)
    changed = False
    for name, expected in sorted(ir.files.items()):
        path = ir.folder / name
        if not path.is_file():
            raise InputError("file of the packaged OpenVINO IR is missing; reinstall medsam-lite", path)
        identity = _identity(path)
        if record.get(name) == [*identity, expected]:
            continue
        digest = sha256_of(path)
        if digest != expected:
            raise InputError(f"SHA-256 mismatch: expected {expected}, got {digest} (the packaged OpenVINO IR is "
                             f"damaged; reinstall medsam-lite)", path)
        if _identity(path) == identity:  # unchanged while it was hashed
            record[name] = [*identity, expected]
            changed = True
    if changed:
        _write_record(record_path, record)
    return ir


def find(name: Optional[str] = None, weights_sha256: Optional[str] = None, format_version: Optional[int] = None,
         root: Optional[Path] = None, cache_dir: Optional[Union[str, Path]] = None) -> Optional[PackagedIR]:
    """The verified packaged IR of pretrained ``name``, or of the model of state SHA-256 ``weights_sha256``;
    None when none is packaged or it was made by another ``format_version`` of the conversion. ``cache_dir``:
    the cache root holding the record of verified digests (:func:`verify`)."""
    names = [name] if name is not None else list(FOLDERS)
    for candidate in names:
        ir = read(candidate, root)
        if ir is None or (weights_sha256 is not None and ir.weights_sha256 != weights_sha256):
            continue
        if format_version is not None and ir.format_version != format_version:
            continue
        return verify(ir, cache_dir)
    return None


def manifest(folder: Union[str, Path], name: str, weights_sha256: str, checkpoint_sha256: str, format_version: int,
             built_with: Dict[str, str]) -> Dict[str, Any]:
    """The manifest of the IR files in ``folder`` (every file but the manifest; deterministic: no dates)."""
    folder = Path(folder)
    files = {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    return {"name": name, "weights_sha256": weights_sha256, "checkpoint_sha256": checkpoint_sha256,
            "format_version": int(format_version), "built_with": dict(sorted(built_with.items())), "files": files}


def write_manifest(folder: Union[str, Path], data: Dict[str, Any]) -> Path:
    """Write ``data`` (:func:`manifest`) as ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path
