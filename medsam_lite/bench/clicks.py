"""Held-out click protocol (issue 30): ``medsam-lite benchmark --interactive --clicks N``.

Per object of a held-out labelled volume (:func:`medsam_lite.bench.fidelity.volume_cases`: ``mr_organs_3d``,
``breast1_lesion_3d``; never trained or tuned on): the 3D box (:func:`~medsam_lite.bench.fidelity.volume_box`)
through :meth:`Session.add_object` (LiteMedSAM's propagation, bit for bit), then ``clicks`` clicks, each on the
slice with the most wrong voxels now (clicks may land on the same slice again: they accumulate there), at the
interior-most pixel of that slice's largest error component (:func:`medsam_lite.clicks.next_click`), positive
on a miss, negative on a spill; each click refines its slice and re-propagates from it (the session's rule).
DSC of the object's voxels after 0..``clicks`` clicks, for each :class:`~medsam_lite.clicks.ClickModel`
(the trained path and the released decoder fed the same prompts). Each object is measured alone.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..clicks import ClickModel, next_click
from ..metrics import dice
from ..session import Session


def worst_slice_any(pred: np.ndarray, truth: np.ndarray) -> Optional[int]:
    """The slice of (D, H, W) bool ``pred`` vs ``truth`` with the most wrong voxels (lowest z on ties); None when
    they are equal."""
    wrong = np.count_nonzero(pred ^ truth, axis=(1, 2))
    return None if not wrong.any() else int(np.argmax(wrong))


def click_object(session: Session, truth: np.ndarray, box: Sequence[float], clicks: int = 5) -> List[float]:
    """DSC after the 3D box and after each of ``clicks`` simulated clicks (module docstring); the object is removed
    afterwards."""
    label = session.add_object(tuple(int(v) for v in box))
    scores = [dice(session.labels == label, truth)]
    for _ in range(clicks):
        pred = session.labels == label
        z = worst_slice_any(pred, truth)
        click = None if z is None else next_click(pred[z], truth[z])
        if click is None:
            scores.append(scores[-1])
            continue
        session.correct(label, z, point=(click.x, click.y), positive=click.positive)
        scores.append(dice(session.labels == label, truth))
    session.remove(label)
    return scores


def run_clicks(predictor: Any, cases: Dict[str, Any], models: Dict[str, ClickModel], clicks: int = 5,
               log: Any = None) -> Dict[str, Any]:
    """Per model, per case, per object: the DSC curve (:func:`click_object`); ``cases``: name ->
    :class:`~medsam_lite.bench.fidelity.VolumeCase`. Returns {"curves": {model: {case: [[...]]}}, "summary":
    {model: {case / "overall": mean curve}}, "seconds": {model: s}}."""
    curves: Dict[str, Dict[str, List[List[float]]]] = {}
    seconds: Dict[str, float] = {}
    for model_name, model in models.items():
        start = time.time()
        curves[model_name] = {}
        for case_name, case in cases.items():
            session = predictor.session(case.volume)
            session.segmenter.click_model = model
            rows = []
            for truth, box in zip(case.objects, case.boxes):
                rows.append(click_object(session, truth, box, clicks))
                if log is not None:
                    log(f"{model_name} {case_name} object {len(rows)}/{len(case.objects)}: "
                        + " ".join(f"{v:.3f}" for v in rows[-1]))
            curves[model_name][case_name] = rows
        seconds[model_name] = round(time.time() - start, 1)
    return {"curves": curves, "summary": {m: summarize(c) for m, c in curves.items()}, "seconds": seconds}


def summarize(curves: Dict[str, List[List[float]]]) -> Dict[str, List[float]]:
    """Mean DSC after 0..n clicks per case and ``"overall"`` (mean over every object)."""
    out = {name: np.mean(np.asarray(c), axis=0).tolist() for name, c in curves.items() if c}
    out["overall"] = np.mean(np.asarray([row for c in curves.values() for row in c]), axis=0).tolist()
    return out


def passes(curve: Sequence[float], gain: float = 0.05, drop: float = 0.005) -> bool:
    """The issue's bar on a mean curve: last - first >= ``gain`` and no step lowers it by more than ``drop``."""
    steps = np.diff(np.asarray(curve, dtype=np.float64))
    return bool(curve[-1] - curve[0] >= gain and (steps >= -drop).all())


def markdown(report: Dict[str, Any]) -> str:
    """Mean DSC after 0..n clicks per model and case, with the object counts and the bar's verdict."""
    lines = []
    for model, summary in report["summary"].items():
        n = len(summary["overall"])
        lines += [f"**{model}** ({report['seconds'][model]:.0f} s; bar: "
                  f"{'passes' if passes(summary['overall']) else 'fails'})", "",
                  "| case | objects | " + " | ".join(f"{i} clicks" for i in range(n)) + " |",
                  "|---|---|" + "---|" * n]
        curves = report["curves"][model]
        for name, values in summary.items():
            count = sum(len(c) for c in curves.values()) if name == "overall" else len(curves[name])
            lines.append(f"| {name} | {count} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
        lines.append("")
    return "\n".join(lines)


HELD_OUT_CASES = ("mr_organs_3d", "breast1_lesion_3d")
"""The held-out labelled volumes of the protocol (``mni152_gm_wm_3d`` is optional: WM / GM are poor box targets)."""


def held_out_report(shared: Any, models: Dict[str, ClickModel], clicks: int = 5,
                    embedding_cache: Any = None, names: Sequence[str] = HELD_OUT_CASES,
                    log: Any = None) -> Dict[str, Any]:
    """:func:`run_clicks` on the held-out volumes ``names`` with a torch fp32 Predictor (slices embedded once,
    in ``embedding_cache``: a folder or store, default in memory); adds the CPU model."""
    from ..embedding_cache import MemoryEmbeddingStore
    from ..predictor import Predictor
    from .fidelity import volume_cases
    from .interactive import cpu_model

    predictor = Predictor("lite_medsam", backend="torch", embedding_cache=embedding_cache or MemoryEmbeddingStore())
    report = run_clicks(predictor, volume_cases(shared, names), models, clicks, log)
    report["cpu"] = cpu_model()
    report["clicks"] = clicks
    return report
