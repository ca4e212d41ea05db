"""Build the OpenVINO f32 IR shipped as package data (:mod:`medsam_lite.backends.packaged_ir`) from a checkpoint.

:func:`build_ir` converts a pretrained model with the same function the artifact cache uses
(:func:`medsam_lite.backends.openvino.convert_to_ir`: torch graphs -> ONNX -> ``openvino.convert_model``) into
a folder and writes its manifest (SHA-256 per file, the checkpoint's SHA-256, the model's state SHA-256,
the conversion's format version and the torch / onnx / OpenVINO versions that built it). With the same
library versions the bytes are identical from build to build (measured: two builds and the artifact-cache
entry of LiteMedSAM had equal SHA-256 for all six files), so :func:`differences` against the packaged
manifest is the reproducibility check. Needs the [torch] extra. ``scripts/build_default_ir.py`` is the
command line.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..backends import packaged_ir


def library_versions() -> Dict[str, str]:
    """Versions of the libraries a conversion depends on (recorded in the manifest)."""
    import onnx
    import openvino
    import torch

    return {"openvino": openvino.get_version(), "onnx": onnx.__version__, "torch": torch.__version__}


def build_ir(out_dir: Union[str, Path, None] = None, name: str = "lite_medsam") -> Path:
    """Convert pretrained ``name`` into ``out_dir`` (default: its package-data folder,
    :func:`medsam_lite.backends.packaged_ir.folder_of`), replacing what was there; returns the folder.

    The files are written into a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failed build leaves the previous IR untouched.
    """
    from ..backends.openvino import FORMAT_VERSION, convert_to_ir
    from ..checkpoint import load_model, pretrained_file, state_sha256

    out = Path(out_dir) if out_dir is not None else packaged_ir.folder_of(name)
    model = load_model(name).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 is not what package data should have
    try:
        convert_to_ir(model, tmp)
        data = packaged_ir.manifest(tmp, name, state_sha256(model), pretrained_file(name)[1], FORMAT_VERSION,
                                    library_versions())
        packaged_ir.write_manifest(tmp, data)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def differences(built: Union[str, Path], reference: Union[str, Path]) -> List[str]:
    """What differs between the manifests of two IR folders, one line each (empty when the IRs are
    byte-identical and of the same model and conversion; the library versions are not compared)."""
    import json

    a = json.loads((Path(built) / packaged_ir.MANIFEST).read_text())
    b = json.loads((Path(reference) / packaged_ir.MANIFEST).read_text())
    out = [f"{key}: {a.get(key)!r} != {b.get(key)!r}" for key in ("name", "weights_sha256", "checkpoint_sha256",
                                                                  "format_version")
           if a.get(key) != b.get(key)]
    for file in sorted(set(a["files"]) | set(b["files"])):
        if a["files"].get(file) != b["files"].get(file):
            out.append(f"{file}: sha256 {a['files'].get(file)} != {b['files'].get(file)}")
    return out


def main(out_dir: Optional[str] = None, check: bool = False, name: str = "lite_medsam") -> int:
    """Build (``check``: into a temporary folder, then compare with the packaged IR); 0 when done / identical."""
    if not check:
        print(f"wrote {build_ir(out_dir, name)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        built = build_ir(packaged_ir.folder_of(name, Path(tmp)), name)
        diff = differences(built, packaged_ir.folder_of(name))
        versions = [packaged_ir.read(name, root).built_with for root in (Path(tmp), None)]
    if versions[0] != versions[1]:
        print(f"built with {versions[0]}, the packaged IR with {versions[1]}")
    for line in diff:
        print(line)
    print("identical to the packaged IR" if not diff else f"{len(diff)} difference(s) from the packaged IR")
    return 0 if not diff else 1
