"""Evaluate challenge-format predictions against ground truth: per-case DSC / NSD and a report.

Case format (CVPR24 "MedSAM on Laptop")
---------------------------------------
Every case is one ``.npz`` file; the same file name appears in the ground-truth folder and in
the prediction folder. Names starting with ``3D`` are volumes, all others 2D images; the
modality is the second ``_``-separated token of the name (``3DBox_CT_0001.npz`` -> ``CT``).

* ground truth: ``gts`` integer label map, ``(H, W)`` (2D) or ``(D, H, W)`` = ``(z, y, x)`` (3D);
  3D cases also ``spacing`` (3,) in mm.
* prediction: ``segs`` integer (uint8) label map of the same shape.

Spacing order: the arrays are ``(z, y, x)``. ``spacing_order="zyx"`` (default) uses the stored
spacing as it is, i.e. as ``(sz, sy, sx)``; this is what the challenge's own script does.
``spacing_order="xyz"`` declares the stored spacing to be SimpleITK ``(x, y, z)`` order (how the
challenge data preparation wrote it) and reverses it before use. 2D cases use spacing (1, 1),
so their NSD tolerance is in pixels.

Scoring rules: see :func:`medsam_lite.metrics.case_scores`. A missing prediction file scores
DSC = NSD = 0 with a warning (:class:`EvaluationWarning`). Cases that cannot be scored (shape
mismatch, unreadable or truncated file, missing key, bad spacing) are *failed*: their one-line
error is recorded, they are left out of the means, and :attr:`EvaluationResult.ok` is False.

Outputs in ``out_dir`` (default: ``<pred_dir>_evaluation`` beside the prediction folder), each
written atomically: ``metrics.csv``, ``per_label.csv``, ``summary.md``, ``dsc_boxplot.png``.
"""
from __future__ import annotations

import contextlib
import csv
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .io_utils import atomic_path, check_output_folder
from .metrics import NSD_MIN_DSC, LabelScore, case_scores

PathLike = Union[str, Path]
SPACING_ORDERS = ("zyx", "xyz")
METRICS_COLUMNS = ("case", "modality", "dim", "n_labels", "dsc", "nsd", "error")
PER_LABEL_COLUMNS = ("case", "label", "dsc", "nsd")


class EvaluationWarning(UserWarning):
    """A case was scored with a caveat (e.g. its prediction file is missing and scored 0)."""


@dataclass
class CaseResult:
    """Scores of one case. ``dsc``/``nsd`` are NaN for a failed case (``error`` set, ``failed``)."""

    case: str
    modality: str
    dim: int
    n_labels: int = 0
    dsc: float = math.nan
    nsd: float = math.nan
    error: str = ""
    failed: bool = False
    missing_prediction: bool = False
    labels: List[LabelScore] = field(default_factory=list)


@dataclass
class ModalitySummary:
    """Statistics of the scored (non-failed) cases of one modality; std is the population std."""

    modality: str
    n_cases: int
    n_failed: int
    n_missing: int
    dsc_mean: float
    dsc_std: float
    nsd_mean: float
    nsd_std: float


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_dirs` computed and where it wrote the report."""

    pred_dir: Path
    gt_dir: Path
    out_dir: Path
    spacing_order: str
    tolerance: float
    cases: List[CaseResult]
    modalities: List[ModalitySummary]
    #: unweighted mean over modalities of the per-modality means (challenge leaderboard style)
    dsc_mean_over_modalities: float
    nsd_mean_over_modalities: float
    warnings: List[str]

    @property
    def failures(self) -> List[str]:
        """One line per failed case: ``<file>: <problem>``."""
        return [c.error for c in self.cases if c.failed]

    @property
    def all_missing(self) -> bool:
        """True when no case had a prediction file (every case scored 0): a wrong --pred folder."""
        return bool(self.cases) and all(c.missing_prediction for c in self.cases)

    @property
    def ok(self) -> bool:
        """True when no case failed (missing predictions are scored, not failures)."""
        return not self.failures

    @property
    def metrics_csv(self) -> Path:
        return self.out_dir / "metrics.csv"

    @property
    def per_label_csv(self) -> Path:
        return self.out_dir / "per_label.csv"

    @property
    def summary_md(self) -> Path:
        return self.out_dir / "summary.md"

    @property
    def boxplot_png(self) -> Path:
        return self.out_dir / "dsc_boxplot.png"


def modality_of(name: str) -> str:
    """Modality from a case file name: second ``_`` token (``2DBox_US_x.npz`` -> ``US``), else ``unknown``."""
    tokens = Path(name).name.split("_")
    return tokens[1] if len(tokens) >= 3 and tokens[1] else "unknown"


def default_out_dir(pred_dir: PathLike) -> Path:
    """Default report folder: ``<pred_dir>_evaluation``, beside the prediction folder."""
    pred = Path(pred_dir).resolve()
    return pred.with_name(pred.name + "_evaluation")


def _load_key(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of the npz at ``path``; any read problem is an :class:`InputError` naming ``path``."""
    try:
        with open(path, "rb") as fh:  # our own handle, closed on any error (np.load can leak its own)
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputError("not an .npz archive (holds a single .npy array)", path)
            with data:
                if key not in data.files:
                    have = ", ".join(data.files) or "none"
                    raise InputError(f"missing key '{key}' (keys: {have})", path)
                return np.asarray(data[key])
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises many types (BadZipFile, zlib.error, ...)
        kind = type(exc).__name__
        if type(exc).__module__ not in ("builtins", "__main__"):
            kind = f"{type(exc).__module__.split('.')[0]}.{kind}"
        detail = " ".join(str(exc).split()) or "no detail"
        raise InputError(f"cannot read npz ({kind}: {detail})", path) from exc


def _case_spacing(gt_path: Path, dim: int, spacing_order: str) -> Tuple[float, ...]:
    if dim == 2:
        return (1.0, 1.0)
    raw = _load_key(gt_path, "spacing")
    try:
        spacing = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"spacing {raw!r} is not numeric", gt_path) from exc
    if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spacing {spacing.tolist()} must be 3 finite positive values", gt_path)
    if spacing_order == "xyz":
        spacing = spacing[::-1]
    return tuple(float(s) for s in spacing)


def _score_case(gt_path: Path, pred_path: Path, spacing_order: str, tolerance: float,
                messages: List[str]) -> CaseResult:
    name = gt_path.name
    dim = 3 if name.startswith("3D") else 2
    result = CaseResult(case=name, modality=modality_of(name), dim=dim)
    try:
        gts = _load_key(gt_path, "gts")
        if gts.ndim != dim:
            raise InputError(f"gts has shape {gts.shape}, expected {dim}D for a "
                             f"{'3D' if dim == 3 else '2D'} case", gt_path)
        spacing = _case_spacing(gt_path, dim, spacing_order)
        if pred_path.is_file():
            segs = _load_key(pred_path, "segs")
            if segs.shape != gts.shape:
                raise InputError(f"segs shape {segs.shape} does not match gts shape {gts.shape}",
                                 pred_path)
        else:
            msg = f"{pred_path}: prediction file missing, case scored DSC 0, NSD 0"
            messages.append(msg)
            warnings.warn(msg, EvaluationWarning, stacklevel=3)
            segs = np.zeros(gts.shape, dtype=np.uint8)
            result.missing_prediction = True
            result.error = "missing prediction (scored 0)"
        try:
            dsc, nsd_value, per_label = case_scores(segs, gts, spacing, tolerance)
        except InputError as exc:
            raise exc.with_source(pred_path if "segs" in exc.problem else gt_path) from None
    except InputError as exc:
        result.error = str(exc)
        result.failed = True
        result.missing_prediction = False
        return result
    result.n_labels = len(per_label)
    result.dsc, result.nsd, result.labels = dsc, nsd_value, per_label
    return result


def _summaries(cases: Sequence[CaseResult]) -> List[ModalitySummary]:
    out = []
    for modality in sorted({c.modality for c in cases}):
        group = [c for c in cases if c.modality == modality]
        scored = [c for c in group if not c.failed]
        d = np.array([c.dsc for c in scored], dtype=np.float64)
        n = np.array([c.nsd for c in scored], dtype=np.float64)
        out.append(ModalitySummary(
            modality=modality, n_cases=len(scored), n_failed=len(group) - len(scored),
            n_missing=sum(c.missing_prediction for c in group),
            dsc_mean=float(d.mean()) if d.size else math.nan,
            dsc_std=float(d.std()) if d.size else math.nan,
            nsd_mean=float(n.mean()) if n.size else math.nan,
            nsd_std=float(n.std()) if n.size else math.nan))
    return out


def _fmt(value: float, digits: int = 4) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


def _summary_markdown(result: EvaluationResult) -> str:
    order_note = ("stored spacing used as (z, y, x), as the challenge script does"
                  if result.spacing_order == "zyx"
                  else "stored spacing read as SimpleITK (x, y, z) and reversed to (z, y, x)")
    lines = ["# Evaluation summary", ""]
    if result.failures:
        lines += [f"> **Incomplete:** {len(result.failures)} case(s) could not be scored and are left "
                  "out of the means; see *Failed cases* below.", ""]
    lines += [
        f"- ground truth: `{result.gt_dir}`",
        f"- predictions: `{result.pred_dir}`",
        f"- spacing order: `{result.spacing_order}` ({order_note}); 2D cases use spacing (1, 1)",
        f"- NSD tolerance: {result.tolerance:g} (mm for 3D, pixels for 2D); NSD = 0 for a label "
        f"whose DSC <= {NSD_MIN_DSC:g}",
        "- case score = unweighted mean over the label ids present in the ground truth; "
        "std = population std over cases",
        "",
        "| modality | n cases | DSC mean | DSC std | NSD mean | NSD std | missing pred. (scored 0) "
        "| failed (not scored) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result.modalities:
        lines.append(f"| {m.modality} | {m.n_cases} | {_fmt(m.dsc_mean)} | {_fmt(m.dsc_std)} | "
                     f"{_fmt(m.nsd_mean)} | {_fmt(m.nsd_std)} | {m.n_missing} | {m.n_failed} |")
    lines.append(f"| **mean over modalities** | {sum(m.n_cases for m in result.modalities)} | "
                 f"**{_fmt(result.dsc_mean_over_modalities)}** | | "
                 f"**{_fmt(result.nsd_mean_over_modalities)}** | | | |")
    lines += ["", "The last row is the unweighted mean of the per-modality means "
              "(as on the challenge leaderboard)."]
    if result.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    if result.failures:
        lines += ["", f"## Failed cases ({len(result.failures)}): not included in the means", ""]
        lines += [f"- {f}" for f in result.failures]
    return "\n".join(lines) + "\n"


def _write_boxplot(path: Path, cases: Sequence[CaseResult]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modalities = sorted({c.modality for c in cases if not c.failed})
    data = [[c.dsc for c in cases if c.modality == m and not c.failed] for m in modalities]
    fig = Figure(figsize=(max(4.0, 1.1 * len(modalities) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if data:
        ax.boxplot(data, showfliers=False)
        rng = np.random.default_rng(0)  # fixed jitter: the same report gives the same image
        for i, values in enumerate(data, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(values)), values, "o", ms=3, alpha=0.5, color="tab:blue")
        ax.set_xticks(range(1, len(modalities) + 1))
        ax.set_xticklabels([f"{m}\n(n={len(d)})" for m, d in zip(modalities, data)])
    else:
        ax.text(0.5, 0.5, "no scored cases", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("DSC per case")
    ax.set_title("DSC per modality")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def _named(target: Path, write: Callable[[], None]) -> None:
    """Run ``write``; an OSError without a file name (ENOSPC from ``write()``) is raised naming ``target``."""
    try:
        write()
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
        raise


def write_report(result: EvaluationResult) -> None:
    """Write ``metrics.csv``, ``per_label.csv``, ``summary.md`` and ``dsc_boxplot.png``.

    All four are first written to temporary files beside their targets and renamed only once
    every one of them was written, so a failure leaves no partial or mixed report behind (and no
    report folder this call created). A write error (full disk) is an OSError naming the file.
    """
    created = not result.out_dir.exists()
    try:
        result.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create report folder ({exc.strerror or exc})", result.out_dir) from None
    try:
        _write_report_files(result)
    except OSError:
        if created:
            shutil.rmtree(result.out_dir, ignore_errors=True)
        raise


def _write_report_files(result: EvaluationResult) -> None:
    with contextlib.ExitStack() as stack:
        tmp_metrics = stack.enter_context(atomic_path(result.metrics_csv))
        tmp_labels = stack.enter_context(atomic_path(result.per_label_csv))
        tmp_summary = stack.enter_context(atomic_path(result.summary_md))
        tmp_plot = stack.enter_context(atomic_path(result.boxplot_png))
        _named(result.metrics_csv, lambda: _write_csv(
            tmp_metrics, METRICS_COLUMNS, [(c.case, c.modality, c.dim, c.n_labels, _fmt(c.dsc, 6), _fmt(c.nsd, 6),
                                            c.error) for c in result.cases]))
        _named(result.per_label_csv, lambda: _write_csv(
            tmp_labels, PER_LABEL_COLUMNS, [(c.case, s.label, _fmt(s.dsc, 6), _fmt(s.nsd, 6))
                                            for c in result.cases for s in c.labels]))
        _named(result.summary_md, lambda: tmp_summary.write_text(_summary_markdown(result), encoding="utf-8"))
        _named(result.boxplot_png, lambda: _write_boxplot(tmp_plot, result.cases))


def evaluate_dirs(pred_dir: PathLike, gt_dir: PathLike, out_dir: Optional[PathLike] = None,
                  spacing_order: str = "zyx", tolerance: float = 2.0) -> EvaluationResult:
    """Score every ground-truth case in ``gt_dir`` against ``pred_dir`` and write the report.

    Args:
        pred_dir: folder of prediction ``.npz`` files (key ``segs``), named like the ground truth.
        gt_dir: folder of ground-truth ``.npz`` files (``gts``; 3D also ``spacing``).
        out_dir: report folder; default ``<pred_dir>_evaluation`` (see :func:`default_out_dir`).
        spacing_order: ``"zyx"`` uses the stored 3D spacing as (z, y, x); ``"xyz"`` reverses it.
        tolerance: NSD tolerance, mm for 3D cases and pixels for 2D cases.

    Returns:
        The :class:`EvaluationResult`; ``result.ok`` is False when a case failed (its error is in
        ``result.failures`` and in ``metrics.csv``). Missing predictions are scored 0, listed in
        ``result.warnings`` and emitted as :class:`EvaluationWarning`.

    Raises:
        InputError: a folder is missing, no ground-truth case is found, or an option is invalid.
    """
    if spacing_order not in SPACING_ORDERS:
        raise InputError(f"spacing_order must be one of {', '.join(SPACING_ORDERS)}, got {spacing_order!r}")
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tolerance {tolerance!r} is not a number") from exc
    if not math.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"tolerance must be finite and >= 0, got {tolerance}")
    pred = Path(pred_dir)
    gt = Path(gt_dir)
    if not gt.is_dir():
        raise InputError("ground-truth folder does not exist", gt)
    if not pred.is_dir():
        raise InputError("prediction folder does not exist", pred)
    out = Path(out_dir) if out_dir is not None else default_out_dir(pred)
    check_output_folder(out, "report folder")  # before scoring: --out FILE / read-only is one line
    gt_files = sorted(p for p in gt.glob("*.npz") if p.is_file())
    if not gt_files:
        raise InputError("no ground-truth .npz cases found", gt)

    messages: List[str] = []
    cases = [_score_case(g, pred / g.name, spacing_order, tolerance, messages) for g in gt_files]
    gt_names = {g.name for g in gt_files}
    extra = sorted(p.name for p in pred.glob("*.npz") if p.name not in gt_names)
    if extra:
        msg = (f"{pred}: {len(extra)} prediction file(s) without ground truth ignored "
               f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
        messages.append(msg)
        warnings.warn(msg, EvaluationWarning, stacklevel=2)

    modalities = _summaries(cases)
    scored = [m for m in modalities if m.n_cases]
    result = EvaluationResult(
        pred_dir=pred, gt_dir=gt, out_dir=out, spacing_order=spacing_order, tolerance=tolerance,
        cases=cases, modalities=modalities,
        dsc_mean_over_modalities=float(np.mean([m.dsc_mean for m in scored])) if scored else math.nan,
        nsd_mean_over_modalities=float(np.mean([m.nsd_mean for m in scored])) if scored else math.nan,
        warnings=messages)
    write_report(result)
    return result
