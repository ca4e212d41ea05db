"""Measurements (an app layer): speed, fast inference, the agreement gate, student fidelity, the annotator's API.

Reached through ``medsam-lite benchmark speed|inference|gate|fidelity|serve`` (:mod:`medsam_lite.cli.benchmark`).
Every folder (output, shared data) is passed by the caller; nothing here defaults to a path of this repository.

Modules: :mod:`.timing` (peak RSS, medians, machine facts), :mod:`.cases` (the one :class:`~.cases.Case` type,
the bundled and generated cases), :mod:`.models` (model specs), :mod:`.agreement` (label-map agreement and
ground-truth DSC), :mod:`.speed` (baseline vs ours, ``benchmark.json``), :mod:`.compare` (one model on several
backends), :mod:`.inference` (every backend x precision), :mod:`.gate` (may ``auto`` run a reduced precision?),
:mod:`.fidelity` (students vs teacher on held-out data), :mod:`.serve` (latency of the annotator's API).

**One vocabulary**: backends are named as the registry names them, ``BACKEND:PRECISION``
(:func:`medsam_lite.backends.parse_choice`; ``torch:fp32`` is the exact eager reference). The one name outside
the registry is :data:`TORCHSCRIPT`: the TorchScript artifact of :mod:`medsam_lite.export.torchscript` is an
exported file, not a registry backend, and the backend comparison times it as its own row. The comparison's
former names are accepted as aliases (:data:`ALIASES`). This module imports neither torch nor a runtime, so the
CLI's ``--help`` stays fast.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ..backends import entry, format_choice, parse_choice
from ..errors import InputError

REFERENCE = "torch:fp32"
"""The exact reference every agreement is measured against: eager PyTorch at fp32."""

TORCHSCRIPT = "torchscript"
"""Row name of the TorchScript artifact in the backend comparison (an artifact, not a registry backend)."""

ALIASES: Dict[str, str] = {"eager": "torch:fp32", "onnxruntime": "onnxruntime:fp32",
                           "onnxruntime-int8": "onnxruntime:int8"}
"""The backend comparison's former names -> registry choices (``onnxruntime`` alone meant fp32 there)."""

COMPARE_DEFAULT: Tuple[str, ...] = ("torch:fp32", TORCHSCRIPT, "onnxruntime:fp32", "onnxruntime:int8")
"""Every row of the backend comparison as it was published (``--backends`` with all of them), in run order."""

INFERENCE_DEFAULT: Tuple[str, ...] = ("torch:fp32", "onnxruntime:fp32", "openvino:fp32", "openvino:bf16")
"""Configurations the inference benchmark times when none are given; missing runtimes are skipped with a note."""


def compare_choice(text: str) -> str:
    """One ``--backends`` item as its canonical row name: ``torchscript``, an alias (:data:`ALIASES`) or
    ``BACKEND:PRECISION`` (a bare backend name means its first registered precision, not ``auto``: the
    comparison's rows are fixed). Unknown names and ``auto`` raise :class:`~medsam_lite.errors.InputError`."""
    text = ALIASES.get(text, text)
    if text == TORCHSCRIPT:
        return text
    name, precision = parse_choice(text)
    if name == "auto":
        raise InputError(f"{text!r}: the backend comparison times named backends; give BACKEND:PRECISION")
    if precision == "auto":
        precision = entry(name).precisions[0]
    return format_choice(name, precision)
