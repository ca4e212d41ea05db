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

Volume files (NIfTI / MHA / NRRD)
---------------------------------
``--pred`` and ``--gt`` may also be volume files (``.nii``, ``.nii.gz``, ``.mha``, ``.nrrd``, read by
:func:`medsam_lite.imageio.read_case`, so in the files' own axes and spacing: no transposing, no
``3D`` prefix, no ``spacing`` key). Two files are one case. Two folders are paired by name
(:data:`PAIRING_RULE`): a ground truth ``<stem>.<ext>`` pairs with the prediction ``<stem>_mask.<ext>``
(what ``medsam-lite segment`` writes), ``<stem>_0000_mask.<ext>`` (an nnU-Net image name) or
``<stem>.<ext>``, in any of the volume formats. Labels: ``label_map`` (``--map PRED=GT,...``) maps
prediction values to ground-truth values (unmapped prediction values become background and only the
mapped ground-truth labels are scored); without it, when the prediction has a names sidecar
(``<case>.labels.json``, written by ``segment``) and the ground truth one (``<stem>.labels.json``, or
``label_names.json`` in its folder, or ``gt_names``), labels are mapped by name; otherwise values are
compared as they are. Per-label rows carry the ground-truth label name when known. A DICOM-SEG prediction
(``<stem>_seg.dcm``) is scored against a DICOM-SEG ground truth of the same series, read by highdicom
(frames aligned by their positions, segments matched by ``SegmentLabel`` unless ``label_map`` is given).

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .imageio import DEFAULT_OBJECT_NAME, NIFTI_SUFFIXES, index_to_lps, read_case, read_label_names, stem_of, suffix_of
from .io_utils import atomic_path, check_output_folder
from .metrics import NSD_MIN_DSC, LabelScore, case_scores

PathLike = Union[str, Path]
SPACING_ORDERS = ("zyx", "xyz")
METRICS_COLUMNS = ("case", "modality", "dim", "n_labels", "dsc", "nsd", "error")
PER_LABEL_COLUMNS = ("case", "label", "dsc", "nsd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + (".mha", ".nrrd", ".dcm")
PAIRING_RULE = ("a ground truth <stem>.<ext> pairs with the prediction <stem>_mask.<ext>, <stem>_0000_mask.<ext> "
                "or <stem>.<ext> (.nii, .nii.gz, .mha, .nrrd) or <stem>_seg.dcm (DICOM-SEG); a ground-truth DICOM-SEG "
                "<stem>_seg.dcm or <stem>.dcm with <stem>_seg.dcm, <stem>.dcm or <stem>_mask.<ext>; or give one file "
                "to each of --pred and --gt; "
                "challenge .npz cases pair by the same file name, and a name starting with '3D' is a volume")
LabelMap = Dict[int, int]


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
    label_names: Dict[int, str] = field(default_factory=dict)


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
                             f"{'3D' if dim == 3 else '2D'} case (challenge naming rule: a name starting with "
                             f"'3D' is a volume; NIfTI / MHA / NRRD files can be given as they are)", gt_path)
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


def _npz_cases(pred: Path, gt_files: Sequence[Path], spacing_order: str, tolerance: float,
               messages: List[str]) -> List[CaseResult]:
    """Challenge cases: the prediction of ``gt/<name>.npz`` is ``pred/<name>.npz``."""
    cases = [_score_case(g, pred / g.name, spacing_order, tolerance, messages) for g in gt_files]
    gt_names = {g.name for g in gt_files}
    extra = sorted(p.name for p in pred.glob("*.npz") if p.name not in gt_names)
    if extra:
        msg = (f"{pred}: {len(extra)} prediction file(s) without ground truth ignored "
               f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
        messages.append(msg)
        warnings.warn(msg, EvaluationWarning, stacklevel=3)
    return cases


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
        named = any(c.label_names for c in result.cases)  # a name column only where names are known
        _named(result.per_label_csv, lambda: _write_csv(
            tmp_labels, PER_LABEL_COLUMNS + (("name",) if named else ()),
            [(c.case, s.label, _fmt(s.dsc, 6), _fmt(s.nsd, 6)) + ((c.label_names.get(s.label, ""),) if named else ())
             for c in result.cases for s in c.labels]))
        _named(result.summary_md, lambda: tmp_summary.write_text(_summary_markdown(result), encoding="utf-8"))
        _named(result.boxplot_png, lambda: _write_boxplot(tmp_plot, result.cases))


def _check_options(spacing_order: str, tolerance: float) -> float:
    """The tolerance as a float, after checking both options (one-line InputError)."""
    if spacing_order not in SPACING_ORDERS:
        raise InputError(f"spacing_order must be one of {', '.join(SPACING_ORDERS)}, got {spacing_order!r}")
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tolerance {tolerance!r} is not a number") from exc
    if not math.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"tolerance must be finite and >= 0, got {tolerance}")
    return tolerance


def evaluate_dirs(pred_dir: PathLike, gt_dir: PathLike, out_dir: Optional[PathLike] = None,
                  spacing_order: str = "zyx", tolerance: float = 2.0,
                  label_map: Union[None, str, LabelMap] = None,
                  gt_names: Optional[PathLike] = None) -> EvaluationResult:
    """Score every ground-truth case in ``gt_dir`` against ``pred_dir`` and write the report.

    Args:
        pred_dir: folder of prediction ``.npz`` files (key ``segs``), named like the ground truth.
        gt_dir: folder of ground-truth ``.npz`` files (``gts``; 3D also ``spacing``).
        out_dir: report folder; default ``<pred_dir>_evaluation`` (see :func:`default_out_dir`).
        spacing_order: ``"zyx"`` uses the stored 3D spacing as (z, y, x); ``"xyz"`` reverses it.
        tolerance: NSD tolerance, mm for 3D cases and pixels for 2D cases.
        label_map: volume files only: prediction value -> ground-truth value (``"1=1,2=5"`` or a dict);
            None: by the names sidecars when both exist, else values as they are (module doc).
        gt_names: volume files only: JSON names of the ground-truth labels (default: the sidecar beside it).

    Returns:
        The :class:`EvaluationResult`; ``result.ok`` is False when a case failed (its error is in
        ``result.failures`` and in ``metrics.csv``). Missing predictions are scored 0, listed in
        ``result.warnings`` and emitted as :class:`EvaluationWarning`.

    Raises:
        InputError: a folder is missing, no ground-truth case is found, or an option is invalid.

    ``pred_dir`` / ``gt_dir`` may be NIfTI / MHA / NRRD files or folders of them (module doc, :data:`PAIRING_RULE`).
    """
    tolerance = _check_options(spacing_order, tolerance)
    pred = Path(pred_dir)
    gt = Path(gt_dir)
    if not (gt.is_dir() or _is_volume(gt)):
        raise InputError("ground-truth folder does not exist" if not gt.exists() else
                         f"ground truth is neither a folder nor a volume file ({PAIRING_RULE})", gt)
    if not (pred.is_dir() or _is_volume(pred)):
        raise InputError("prediction folder does not exist" if not pred.exists() else
                         f"prediction is neither a folder nor a volume file ({PAIRING_RULE})", pred)
    out = Path(out_dir) if out_dir is not None else default_out_dir(pred)
    check_output_folder(out, "report folder")  # before scoring: --out FILE / read-only is one line
    gt_files = sorted(p for p in gt.glob("*.npz") if p.is_file()) if gt.is_dir() else []
    messages: List[str] = []
    mapping = parse_label_map(label_map)
    if gt_files:
        if not pred.is_dir():
            raise InputError(f"the ground truth is challenge .npz cases, so --pred must be a folder ({PAIRING_RULE})",
                             pred)
        cases = _npz_cases(pred, gt_files, spacing_order, tolerance, messages)
    else:
        cases = _volume_cases(pred, gt, tolerance, mapping, Path(gt_names) if gt_names else None, messages)

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


# ------------------------------------------------------------------ volume files (NIfTI / MHA / NRRD)
def parse_label_map(text: Union[None, str, LabelMap]) -> Optional[LabelMap]:
    """``"1=1,2=5"`` (prediction value = ground-truth value, comma separated) -> {1: 1, 2: 5}."""
    if text is None or isinstance(text, dict):
        return text
    out: LabelMap = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            pred, gt = (int(v) for v in item.split("="))
        except ValueError:
            raise InputError(f"--map item {item!r} is not PRED=GT (two label values, e.g. 1=5)") from None
        if pred <= 0 or gt <= 0 or pred in out:
            raise InputError(f"--map item {item!r}: values must be > 0 and each prediction value mapped once")
        out[pred] = gt
    if not out:
        raise InputError("--map is empty: give PRED=GT,...")
    return out


def _is_volume(path: Path) -> bool:
    return path.is_file() and suffix_of(path) in VOLUME_SUFFIXES


def _names_beside(path: Path, extra: Sequence[str] = ()) -> Optional[Path]:
    """The names sidecar of a label file: ``<stem>.labels.json`` (also without ``_mask``), then ``extra`` names."""
    stem = stem_of(path)
    candidates = [f"{stem}.labels.json"] + ([f"{stem[:-5]}.labels.json"] if stem.endswith("_mask") else [])
    for name in candidates + list(extra):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _norm_name(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _names_of(path: Path, table: Optional[Path] = None, given_only: bool = False,
              extra: Sequence[str] = ()) -> Dict[int, str]:
    """Label value -> name of a label file: ``table`` when given; a DICOM-SEG's segment labels (``given_only``:
    without default ``object_<i>`` labels); else its names sidecar (:func:`_names_beside`, ``given_only``: without
    entries marked ``auto_name``); {} when there is none."""
    if table is not None:
        return read_label_names(table)
    if suffix_of(path) == ".dcm":
        names = _read_dicom_seg(path)[2]
        return {v: n for v, n in names.items() if not (given_only and n == DEFAULT_OBJECT_NAME.format(v))}
    sidecar = _names_beside(path, extra)
    return read_label_names(sidecar, given_only=given_only) if sidecar is not None else {}


def _mapping_for(pred_path: Path, gt_path: Path, label_map: Optional[LabelMap], gt_names_file: Optional[Path],
                 ) -> Tuple[Optional[LabelMap], Dict[int, str]]:
    """(prediction value -> ground-truth value, or None = as is; ground-truth value -> name). Without
    ``label_map``, labels pair by name when the prediction has given names (not only default ``object_<i>``
    ones) and the ground truth has names; a prediction name the ground truth lacks is one line."""
    gt_names = _names_of(gt_path, gt_names_file, extra=("label_names.json",))
    if label_map is not None:
        return label_map, gt_names
    if not gt_names or not _names_of(pred_path, given_only=True):
        return None, gt_names
    by_name = {_norm_name(n): v for v, n in gt_names.items()}
    mapping: LabelMap = {}
    for value, name in _names_of(pred_path).items():
        if _norm_name(name) not in by_name:
            where = gt_names_file.name if gt_names_file else f"the names of {gt_path.name}"
            raise InputError(f"label {value} '{name}' has no ground-truth label of that name in {where}; "
                             f"give --map PRED=GT", pred_path)
        mapping[value] = by_name[_norm_name(name)]
    return mapping, gt_names


def apply_label_map(segs: np.ndarray, gts: np.ndarray, mapping: LabelMap) -> Tuple[np.ndarray, np.ndarray]:
    """Prediction values renumbered to ground-truth values (unmapped -> 0); ground truth kept only at the
    mapped values (the others -> 0), so only the mapped objects are scored."""
    out = np.zeros(segs.shape, dtype=np.int32)
    for pred, gt in mapping.items():
        out[segs == pred] = gt
    kept = np.where(np.isin(gts, list(mapping.values())), gts, 0).astype(np.int32)
    return out, kept


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.array_equal(labels, np.round(labels)):
            raise InputError("holds non-integer values: not a label map", path)
        labels = labels.astype(np.int32)
    return labels


def _read_labels(path: Path) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """Integer label map of a volume file (or DICOM-SEG) in its own (z, y, x) voxel order, and its spacing (mm)."""
    if suffix_of(path) == ".dcm":
        labels, affine, _ = _read_dicom_seg(path)
        return labels, tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    case = read_case(path)
    labels = _integer_labels(case.array, path)
    spacing = case.spacing_zyx if case.is_3d and case.spacing_zyx is not None else (1.0,) * labels.ndim
    return labels, tuple(float(s) for s in spacing)


def _read_dicom_seg(path: Path) -> Tuple[np.ndarray, np.ndarray, Dict[int, str]]:
    """A DICOM-SEG as (label map (slices, rows, cols), 4x4 index -> patient LPS affine, segment number -> label)."""
    from .extras import require

    require("highdicom", "dicom-seg", f"scoring the DICOM-SEG {path.name}")
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        volume = seg.get_volume(combine_segments=True)
    except Exception as exc:  # noqa: BLE001 - pydicom / highdicom raise many types for a bad file
        raise InputError(f"cannot read DICOM-SEG as a volume ({type(exc).__name__}: {exc})", path) from None
    names = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    return np.asarray(volume.array).astype(np.int32), np.asarray(volume.affine, dtype=np.float64), names


def _grid_of(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(label map, 4x4 array index -> patient LPS mm) of a DICOM-SEG or a NIfTI / MHA / NRRD label file."""
    if suffix_of(path) == ".dcm":
        return _read_dicom_seg(path)[:2]
    case = read_case(path)
    affine = index_to_lps(case)
    if affine is None:
        raise InputError("stores no 3D patient geometry to align with a DICOM-SEG", path)
    return _integer_labels(case.array, path), affine


def align_on_grid(segs: np.ndarray, affine_p: np.ndarray, gts: np.ndarray, affine_g: np.ndarray,
                  source: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Two 3D label maps with their (4, 4) index -> patient affines, put on one voxel grid: the ground truth's
    axes, grown where the prediction reaches beyond it (empty DICOM-SEG frames may be omitted in either).
    The prediction's axes may be a permutation / flip of the ground truth's (a DICOM series and its NIfTI);
    another orientation, spacing or a sub-voxel shift is one line naming ``source``. Returns (segs, gts)."""
    m = np.linalg.solve(affine_g, affine_p)  # prediction index -> ground-truth index
    rot = m[:3, :3]
    perm = np.abs(rot).argmax(axis=0)  # prediction axis a lies along ground-truth axis perm[a]
    signs = np.sign(rot[perm, np.arange(3)])
    expected = np.zeros((3, 3))
    expected[perm, np.arange(3)] = signs
    if sorted(perm.tolist()) != [0, 1, 2] or not np.allclose(rot, expected, atol=1e-3):
        raise InputError("prediction and ground truth are not on one voxel grid (orientation or spacing differ; "
                         "resample one onto the other)", source)
    start = rot @ np.where(signs < 0, np.array(segs.shape) - 1, 0) + m[:3, 3]
    if not np.allclose(start, np.round(start), atol=1e-2):
        raise InputError("prediction voxels do not fall on the ground truth's voxels (origins differ by part of a "
                         "voxel)", source)
    order = np.argsort(perm)
    moved = np.transpose(segs, order)[tuple(slice(None, None, -1) if signs[a] < 0 else slice(None) for a in order)]
    off = np.round(start).astype(int)
    lo = np.minimum(0, off)
    hi = np.maximum(gts.shape, off + np.array(moved.shape))
    canvas_p, canvas_g = np.zeros(hi - lo, np.int32), np.zeros(hi - lo, np.int32)
    canvas_g[tuple(slice(-a, -a + n) for a, n in zip(lo, gts.shape))] = gts
    canvas_p[tuple(slice(o - a, o - a + n) for o, a, n in zip(off, lo, moved.shape))] = moved
    return canvas_p, canvas_g


def _load_pair(pred_path: Path, gt_path: Path) -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...]]:
    """(segs, gts, spacing (z, y, x) mm) of a prediction and its ground truth on one grid: two NIfTI / MHA / NRRD
    files of the same shape and spacing, or, when either is a DICOM-SEG, aligned by their patient geometry
    (:func:`align_on_grid`)."""
    if ".dcm" in (suffix_of(pred_path), suffix_of(gt_path)):
        segs, affine_p = _grid_of(pred_path)
        gts, affine_g = _grid_of(gt_path)
        segs, gts = align_on_grid(segs, affine_p, gts, affine_g, pred_path)
        return segs, gts, tuple(float(np.linalg.norm(affine_g[:3, i])) for i in range(3))
    gts, spacing = _read_labels(gt_path)
    segs, pred_spacing = _read_labels(pred_path)
    if segs.shape != gts.shape:
        raise InputError(f"prediction shape {segs.shape} (z, y, x) does not match the ground truth's "
                         f"{gts.shape}", pred_path)
    if not np.allclose(pred_spacing, spacing, rtol=1e-3):
        raise InputError(f"prediction spacing {pred_spacing} (z, y, x) mm does not match the ground "
                         f"truth's {spacing}: not the same grid", pred_path)
    return segs, gts, spacing


def _score_volume_case(gt_path: Path, pred_path: Optional[Path], tolerance: float, label_map: Optional[LabelMap],
                       gt_names_file: Optional[Path], messages: List[str]) -> CaseResult:
    """One NIfTI / MHA / NRRD / DICOM-SEG case; ``pred_path`` None = missing prediction (scored 0,
    :data:`PAIRING_RULE`)."""
    result = CaseResult(case=gt_path.name, modality=modality_of(gt_path.name), dim=3)
    try:
        if pred_path is None:
            gts, spacing = _read_labels(gt_path)
            msg = f"{gt_path}: no prediction file found ({PAIRING_RULE}); case scored DSC 0, NSD 0"
            messages.append(msg)
            warnings.warn(msg, EvaluationWarning, stacklevel=3)
            segs = np.zeros(gts.shape, dtype=np.uint8)
            result.missing_prediction, result.error = True, "missing prediction (scored 0)"
            mapping, names = _mapping_for(gt_path, gt_path, label_map, gt_names_file)
        else:
            segs, gts, spacing = _load_pair(pred_path, gt_path)
            mapping, names = _mapping_for(pred_path, gt_path, label_map, gt_names_file)
        result.dim = gts.ndim
        if mapping is not None:
            segs, gts = apply_label_map(segs, gts, mapping)
        try:
            dsc, nsd_value, per_label = case_scores(segs, gts, spacing, tolerance)
        except InputError as exc:
            raise exc.with_source(gt_path) from None
    except InputError as exc:
        result.error, result.failed, result.missing_prediction = str(exc), True, False
        return result
    result.n_labels, result.dsc, result.nsd, result.labels = len(per_label), dsc, nsd_value, per_label
    result.label_names = {s.label: names[s.label] for s in per_label if s.label in names}
    return result


def pair_volume_files(pred: Path, gt: Path) -> List[Tuple[Path, Optional[Path]]]:
    """(ground truth, prediction or None) pairs by :data:`PAIRING_RULE`; two files are one pair."""
    if gt.is_file():
        if not pred.is_file():
            raise InputError(f"--gt is a file, so --pred must be one too ({PAIRING_RULE})", pred)
        return [(gt, pred)]
    gts = sorted(p for p in gt.iterdir() if _is_volume(p))
    preds = {}
    for p in sorted(pred.iterdir()):
        if _is_volume(p):
            preds.setdefault(stem_of(p), p)
    pairs = []
    for g in gts:
        stem = stem_of(g)
        bare = stem[:-4] if stem.endswith("_seg") else stem
        names = (f"{stem}_mask", f"{stem}_0000_mask", stem, f"{bare}_seg", bare, f"{bare}_mask")
        match = next((preds[s] for s in names if s in preds), None)
        pairs.append((g, match))
    return pairs


def _volume_cases(pred: Path, gt: Path, tolerance: float, label_map: Optional[LabelMap],
                  gt_names: Optional[Path], messages: List[str]) -> List[CaseResult]:
    pairs = pair_volume_files(pred, gt)
    if not pairs:
        raise InputError(f"no ground-truth .npz cases found, nor .nii(.gz) / .mha / .nrrd files ({PAIRING_RULE})", gt)
    if all(p is None for _, p in pairs):
        raise InputError(f"no prediction pairs with any ground truth: {PAIRING_RULE}", pred)
    return [_score_volume_case(g, p, tolerance, label_map, gt_names, messages) for g, p in pairs]
