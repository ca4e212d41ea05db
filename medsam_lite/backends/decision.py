"""The gate decision: which OpenVINO precision ``auto`` runs, per kind of CPU, from agreement AND speed.

A decision file (:data:`GATE_FILE`, committed package data, and the user's own measurement
:func:`user_gate_file`, written by ``medsam-lite gate``) holds one entry per CPU kind
(:func:`medsam_lite.backends.cpu.cpu_kind`, e.g. ``AuthenticAMD/avx2``)::

    {"format": 2, "thresholds": {...}, "speed_margin": 0.05,
     "kinds": {"AuthenticAMD/avx2": {
         "cpu": "AMD EPYC", "date": "2026-...", "openvino": "2026.4.1", "threads": 2,
         "fp32": {"encoder_ms": 310.0, "decoder_ms": 9.9},
         "precisions": {"int8": {"passes": false, "box_iou_mean": 0.92, ..., "encoder_ms": 160.0,
                                 "decoder_ms": 9.8},
                        "bf16": {"skipped": "no native bf16 on this CPU"}}}}}

``auto`` (:func:`auto_precision`) looks up this CPU's kind in the user's file first, then in the committed
one, and picks :func:`choose` of that entry; a kind in neither runs fp32. The files are read, never written,
here; :mod:`medsam_lite.bench.gate` measures and writes them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

GATE_FILE = Path(__file__).with_name("gate.json")
"""The committed decision (package data; written by ``medsam-lite benchmark gate --decide``)."""

USER_GATE_NAME = "gate.json"
"""File name of the user's decision in the cache root (:func:`user_gate_file`)."""

FORMAT = 2
"""Version of the decision file layout above."""

AUTO_CANDIDATES: Tuple[str, ...] = ("bf16", "bf16-encoder", "int8")
"""The reduced OpenVINO precisions ``auto`` may ever run (when they pass and are faster). The per-stage mixes
``bf16-mixed`` / ``bf16-mixed3`` are never chosen by ``auto``, whatever the gate says: on the AMD EPYC
(avx512_bf16) both passed the gate's subsampled cases, but in the benchmark run (docs/benchmark_inference)
``bf16-mixed3`` was only 5 % faster in the encoder than fp32 (271 vs 286 ms: splitting the graph into stages
costs most of what bf16 saves) and lowered the bundled CT's ground-truth DSC through the whole 3D propagation
by 0.022 (0.6281 vs 0.6501), far outside the 0.005 budget. They stay available as ``--precision bf16-mixed``."""

BF16_PRECISIONS: Tuple[str, ...] = ("bf16", "bf16-encoder", "bf16-mixed", "bf16-mixed3")
"""Precisions that compute in bf16: run only where the CPU does so natively (OpenVINO falls back to f32
silently elsewhere, so measuring them there would time fp32 twice)."""

SPEED_MARGIN = 0.05
"""A reduced precision must be at least this much faster than fp32 (relative, in :func:`image_ms`) to be
chosen: timings on a shared 2-core machine move by a few percent between runs, and a precision that is not
clearly faster only costs agreement."""


def image_ms(speed: Dict[str, Any]) -> float:
    """The speed a choice is ranked by: one encoder call plus one decoded box (``encoder_ms + decoder_ms``),
    i.e. one slice of a 3D propagation with one object."""
    return float(speed["encoder_ms"]) + float(speed["decoder_ms"])


def _timed(speed: Any) -> bool:
    return isinstance(speed, dict) and all(isinstance(speed.get(k), (int, float)) for k in ("encoder_ms", "decoder_ms"))


def eligible(entry: Dict[str, Any], precision: str, margin: float = SPEED_MARGIN) -> bool:
    """Whether ``auto`` may run ``precision`` on the kind of ``entry``: it passed the agreement rule, and it
    is faster than fp32 by ``margin`` per image (:func:`image_ms`) without a decoder slower by more than
    ``margin`` (the decoder dominates many-box 2D images). Unmeasured speed is never eligible."""
    measured = entry.get("precisions", {}).get(precision)
    fp32 = entry.get("fp32")
    if not isinstance(measured, dict) or measured.get("passes") is not True or not _timed(measured) or not _timed(fp32):
        return False
    return (image_ms(measured) <= (1.0 - margin) * image_ms(fp32)
            and float(measured["decoder_ms"]) <= (1.0 + margin) * float(fp32["decoder_ms"]))


def choose(entry: Dict[str, Any], candidates: Iterable[str] = AUTO_CANDIDATES, margin: float = SPEED_MARGIN,
           native_bf16: bool = True) -> str:
    """The fastest :func:`eligible` precision of ``candidates`` in ``entry`` (bf16 ones only with
    ``native_bf16``), else ``fp32``."""
    ok = [p for p in candidates if eligible(entry, p, margin) and (native_bf16 or p not in BF16_PRECISIONS)]
    return min(ok, key=lambda p: image_ms(entry["precisions"][p])) if ok else "fp32"


def read_decision(path: Path) -> Dict[str, Any]:
    """A decision file's content (``{}`` when it is missing, unreadable or not of :data:`FORMAT`)."""
    try:
        decision = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(decision, dict) or decision.get("format") != FORMAT or not isinstance(decision.get("kinds"), dict):
        return {}
    return decision


def user_gate_file(cache_dir: Optional[Path] = None) -> Path:
    """The user's own decision: ``gate.json`` in the cache root (:func:`medsam_lite.backends.artifacts.cache_root`:
    ``cache_dir``, ``$MEDSAM_LITE_CACHE`` or the user cache folder); never inside the installed package."""
    from .artifacts import cache_root

    return cache_root(cache_dir) / USER_GATE_NAME


def kind_entry(kind: str, files: Iterable[Path]) -> Tuple[Optional[Dict[str, Any]], Optional[Path]]:
    """(the entry of ``kind``, its file) from the first of ``files`` that has one, else (None, None)."""
    for path in files:
        found = read_decision(path).get("kinds", {}).get(kind)
        if isinstance(found, dict):
            return found, Path(path)
    return None, None


def auto_precision(files: Optional[Iterable[Path]] = None, kind: Optional[str] = None,
                   native_bf16: Optional[bool] = None) -> str:
    """The OpenVINO precision ``auto`` runs at: :func:`choose` of the entry of this CPU's kind (``kind``:
    :func:`medsam_lite.backends.cpu.this_cpu_kind`) in the user's file, else the committed one (``files``:
    :func:`user_gate_file`, :data:`GATE_FILE`); ``fp32`` for a kind measured in neither."""
    from . import cpu

    kind = cpu.this_cpu_kind() if kind is None else kind
    entry, _ = kind_entry(kind, (user_gate_file(), GATE_FILE) if files is None else files)
    if entry is None:
        return "fp32"
    return choose(entry, native_bf16=cpu.native_bf16() if native_bf16 is None else native_bf16)
