"""Convert datasets into normalized per-slice ``.npy`` files with a manifest: :func:`prep_dataset`.

Output folder::

    imgs/<dataset>__<case>_<axis><index>.npy   (H, W, 3) uint8 = round(255 * normalized [0, 1] value)
    gts/<same name>                            (H, W) uint8 label map (uint16 when a case has ids > 255)
    records/<dataset>__<case>.json             per-case done-marker + its slice rows (resume)
    manifest.csv                               one row per slice, rebuilt from all records
    summary.md                                 modality / slices / share table (seed paper Table 1)
    failures.txt                               one line per failed case (only when some failed)

2D images give one file ``<dataset>__<case>.npy`` (axis ``2d``). Images are stored as uint8: 4x
smaller than float32 and the baseline's own storage format; the [0, 1] value is ``file / 255``.

Per case, in order: read image and label(s) -> checks (shape / spacing match, non-empty labels,
integer ids, CT range) -> normalize the whole volume (:mod:`medsam_lite.normalize`) -> remove 3D
connected components (26-connectivity, per label) under ``min_voxels`` -> cut slices along the
requested axes (voxel grid, not resampled) -> per slice drop labels under ``min_pixels`` pixels ->
drop slices without any label left -> write files atomically -> write the record.

Resume: a case whose record exists with the same settings is skipped; a killed run leaves no
record for its unfinished case, so the rerun redoes it, giving byte-identical files. One run per
output folder at a time.

Split: by ``group`` (a case, or all channels of one nnU-Net case), ``val_fraction`` of the groups
(at least 1 when there are >= 2 groups, never all of them), allocated to datasets by largest
remainder and drawn with ``numpy.random.default_rng(seed)`` over the sorted group names, so it
depends only on the set of groups, not on the order of processing.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from medsam_lite.errors import InputError
from medsam_lite.io_utils import atomic_path
from medsam_lite.transforms import to_three_channels

from .layouts import CaseFailure, CaseSpec, DatasetSpec, Discovery, LabelSource, Overrides, discover, discover_spec
from ..normalize import canonical_modality, describe, normalize_to_uint8, parse_window

PathLike = Union[str, Path]
RECORD_VERSION = 1
AXES = ("z", "y", "x")
MANIFEST_COLUMNS = ("file", "dataset", "case", "group", "modality", "normalization", "axis", "slice",
                    "original_shape", "spacing_zyx", "labels", "split", "source")


@dataclass(frozen=True)
class PrepConfig:
    """Settings of one :func:`prep_dataset` run.

    Attributes:
        axes: slice volumes along these of ``"z"``, ``"y"``, ``"x"``.
        min_pixels: per slice, labels with fewer pixels are dropped.
        min_voxels: per label, 3D connected components with fewer voxels are removed.
        val_fraction, seed: case-level split (see :func:`assign_split`).
        workers: processes converting cases in parallel (1 = in this process).
        progress: show a tqdm bar.
        overrides: flags applied to folder sources (``images``, ``labels``, ``modality``, ``window`` ...).

    ``axes``, ``min_pixels`` and ``min_voxels`` change a case's output and are part of each
    record's :func:`fingerprint`; the others do not.
    """

    axes: Tuple[str, ...] = ("z",)
    min_pixels: int = 20
    min_voxels: int = 100
    val_fraction: float = 0.05
    seed: int = 0
    workers: int = 1
    progress: bool = True
    overrides: Optional[Overrides] = None

    def checked(self) -> "PrepConfig":
        """The same settings with ``axes`` normalised (lower case, no repeats); InputError when invalid."""
        axes = tuple(dict.fromkeys(a.strip().lower() for a in self.axes))
        if not axes or any(a not in AXES for a in axes):
            raise InputError(f"axes must be among z, y, x, got {','.join(axes) or 'none'}")
        if self.min_pixels < 0 or self.min_voxels < 0:
            raise InputError("min_pixels and min_voxels must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.overrides is not None and self.overrides.modality:
            canonical_modality(self.overrides.modality, "--modality")  # once, up front: not once per case
        if self.overrides is not None and self.overrides.window is not None:
            parse_window(self.overrides.window)
        return replace(self, axes=axes, min_pixels=int(self.min_pixels), min_voxels=int(self.min_voxels))


@dataclass
class PrepResult:
    """What :func:`prep_dataset` produced. ``failures``: one-line messages naming each failed case."""

    out_dir: Path
    manifest: Path
    summary: Path
    summary_markdown: str
    cases: int = 0
    slices: int = 0
    converted: int = 0
    skipped: int = 0
    failures: List[CaseFailure] = field(default_factory=list)
    empty_cases: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    """Run-level problems that are no case (manifest / summary could not be written), one line each."""

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------ reading
def read_npz_pair(path: Path, labeled: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[Tuple[float, ...]], bool]:
    """A challenge training case: ``imgs`` ((D, H, W) for names starting with ``3D``, else (H, W, 3)
    or (H, W)) and ``gts`` (same spatial shape), optional ``spacing`` (z, y, x).

    (``medsam_lite.imageio.read_npz_case`` needs ``boxes``, which training cases do not have.)
    """
    is_3d = path.name.startswith("3D")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files if key in ("imgs", "gts", "spacing")}
    except Exception as exc:
        raise InputError(f"unreadable or truncated npz ({type(exc).__name__})", path) from exc
    if "imgs" not in data or (labeled and "gts" not in data):
        raise InputError(f"npz needs 'imgs'{' and gts' if labeled else ''} (has: {', '.join(sorted(data)) or 'nothing'})",
                         path)
    imgs = data["imgs"]
    if is_3d and imgs.ndim != 3:
        raise InputError(f"3D case 'imgs' must be (D, H, W), got shape {imgs.shape}", path)
    if not is_3d and not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3)):
        raise InputError(f"2D case 'imgs' must be (H, W) or (H, W, 3), got shape {imgs.shape}", path)
    if imgs.dtype != np.uint8:
        raise InputError(f"'imgs' must be uint8 (challenge-normalized), got {imgs.dtype}", path)
    spacing = tuple(float(s) for s in np.ravel(data["spacing"])) if "spacing" in data else None
    return imgs, data.get("gts") if labeled else None, spacing, is_3d


def _label_array(array: np.ndarray, source: LabelSource, is_3d: bool) -> np.ndarray:
    """One label file's contribution as a uint16 label map (spatial shape of ``array``)."""
    if not is_3d and array.ndim == 3 and array.shape[2] in (3, 4):
        if not (array[..., :3] == array[..., :1]).all():
            raise InputError("label image has differing colour channels (expected a grey label map)", source.path)
        array = array[..., 0]
    if array.dtype.kind not in "uifb":
        raise InputError(f"label map has unsupported dtype {array.dtype}", source.path)
    if source.label_id is not None:
        mask = array >= source.threshold if source.threshold is not None else array > 0
        return mask.astype(np.uint16) * np.uint16(source.label_id)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError("label map has non-integer values (a probability map? give a threshold)", source.path)
    if array.size and array.min() < 0:
        raise InputError(f"label map has negative ids (min {array.min():g})", source.path)
    if array.size and array.max() > 65535:
        raise InputError(f"label ids up to {array.max():g} exceed 65535", source.path)
    return array.astype(np.uint16)


def _spatial(array: np.ndarray, is_3d: bool, is_rgb: bool) -> Tuple[int, ...]:
    return tuple(array.shape[:2]) if (is_rgb and not is_3d) else tuple(array.shape)


def load_case(case: CaseSpec) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[Tuple[float, ...]], bool, bool]:
    """Read a case's image and merged label map, checking that they match.

    Returns:
        image: (D, H, W) for volumes, (H, W) or (H, W, 3) for 2D, as stored.
        labels: uint16 label map of the spatial shape, or None for image-only cases.
        spacing_zyx: mm, or None; is_3d; is_rgb.
    """
    from medsam_lite.imageio import read_case

    if case.kind == "npz":
        image, gts, spacing, is_3d = read_npz_pair(case.image, case.labeled)
        is_rgb = not is_3d and image.ndim == 3
        if gts is None:
            return image, None, spacing, is_3d, is_rgb
        if gts.shape != _spatial(image, is_3d, is_rgb):
            raise InputError(f"'gts' shape {gts.shape} does not match 'imgs' shape {image.shape}", case.image)
        return image, _label_array(gts, LabelSource(case.image), is_3d), spacing, is_3d, is_rgb

    img_case = read_case(case.image)
    image, is_3d, spacing = img_case.array, img_case.is_3d, img_case.spacing_zyx
    if image.dtype.kind not in "uifb":
        raise InputError(f"image has unsupported dtype {image.dtype}", case.image)
    if image.dtype.kind == "b":
        image = image.astype(np.uint8)
    is_rgb = not is_3d and image.ndim == 3
    if is_rgb and image.shape[2] != 3:
        raise InputError(f"2D image must be (H, W) or (H, W, 3), got {image.shape}", case.image)
    if not case.labeled:
        return image, None, spacing, is_3d, is_rgb
    shape = _spatial(image, is_3d, is_rgb)
    merged: Optional[np.ndarray] = None
    for source in case.labels:
        lab_case = read_case(source.path)
        lab = lab_case.array
        if lab_case.is_3d != is_3d:
            raise InputError(f"label is {'3D' if lab_case.is_3d else '2D'} but the image is "
                             f"{'3D' if is_3d else '2D'} ({case.image.name})", source.path)
        lab = _label_array(lab, source, is_3d)
        if lab.shape != shape:
            raise InputError(f"label shape {lab.shape} does not match image shape {shape} ({case.image.name})",
                             source.path)
        if spacing is not None and lab_case.spacing_zyx is not None and not np.allclose(
                spacing, lab_case.spacing_zyx, rtol=1e-3, atol=1e-4):
            raise InputError(f"label spacing {_fmt_tuple(lab_case.spacing_zyx)} does not match image spacing "
                             f"{_fmt_tuple(spacing)} mm ({case.image.name})", source.path)
        if merged is None:
            merged = lab
        elif source.label_id is None:
            merged = np.where(lab > 0, lab, merged)
        else:
            merged[lab > 0] = lab[lab > 0]
    return image, merged, spacing, is_3d, is_rgb


# ------------------------------------------------------------------ label cleaning
def remove_small_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Zero (in place) the 3D connected components (26-connectivity) of each label under ``min_voxels``."""
    if min_voxels <= 1 or not labels.any():
        return labels
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        sub = labels[box]  # a view: edits land in ``labels``
        components, count = ndimage.label(sub == index + 1, structure)
        if count == 0:
            continue
        small = np.bincount(components.ravel()) < min_voxels
        small[0] = False
        if small.any():
            sub[small[components]] = 0
    return labels


def filter_slice(labels: np.ndarray, min_pixels: int) -> Tuple[np.ndarray, Dict[int, int]]:
    """Drop (zero) each label with fewer than ``min_pixels`` pixels in this (H, W) slice.

    Returns the cleaned slice (a copy when changed) and ``{label id: pixel count}`` of what is left.
    """
    counts = np.bincount(labels.ravel())
    ids = np.nonzero(counts)[0]
    ids = ids[ids > 0]
    drop = ids[counts[ids] < min_pixels]
    if drop.size:
        labels = np.where(np.isin(labels, drop), 0, labels).astype(labels.dtype)
    return labels, {int(i): int(counts[i]) for i in ids if counts[i] >= min_pixels}


def _slices(volume: np.ndarray, axis: str) -> Iterable[Tuple[int, np.ndarray]]:
    ax = AXES.index(axis)
    for i in range(volume.shape[ax]):
        yield i, np.take(volume, i, axis=ax)


# ------------------------------------------------------------------ one case
def _fmt_tuple(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def fingerprint(case: CaseSpec, config: PrepConfig) -> Dict[str, Any]:
    """Everything that decides a case's output; a record with another fingerprint is redone."""
    return {
        "version": RECORD_VERSION, "image": str(case.image), "kind": case.kind, "modality": case.modality,
        "window": list(case.window) if case.window else None, "axes": list(config.axes),
        "min_pixels": config.min_pixels, "min_voxels": config.min_voxels,
        "labels": [[str(s.path), s.label_id, s.threshold] for s in case.labels],
    }


def convert_case(case: CaseSpec, out_dir: Path, config: PrepConfig) -> Dict[str, Any]:
    """Convert one case: write its slices, then its record (the done-marker). Returns the record.

    Raises:
        InputError: bad input; the message is one line naming the file.
    """
    image, labels, spacing, is_3d, is_rgb = load_case(case)
    if labels is not None and not labels.any():
        raise InputError("label map is empty (no labelled voxel)", case.labels[0].path)
    if case.kind == "npz":
        image_u8 = image
    else:
        image_u8 = normalize_to_uint8(image, case.modality, case.window, is_rgb, case.image)
    normalization = describe(case.modality, case.window, is_rgb, precomputed=case.kind == "npz")

    if labels is not None and is_3d:
        remove_small_components(labels, config.min_voxels)
    gt_dtype = np.uint8 if labels is None or labels.max() <= 255 else np.uint16

    def pieces() -> Iterable[Tuple[str, int, np.ndarray, Optional[np.ndarray]]]:
        if not is_3d:
            yield "2d", 0, image_u8, labels
            return
        for axis in config.axes:
            for index, img_slice in _slices(image_u8, axis):
                yield axis, index, img_slice, None if labels is None else np.take(labels, index, AXES.index(axis))

    rows: List[Dict[str, Any]] = []
    for axis, index, img_slice, lab_slice in pieces():
        counts: Dict[int, int] = {}
        if lab_slice is not None:
            if not lab_slice.any():
                continue
            lab_slice, counts = filter_slice(lab_slice, config.min_pixels)
            if not counts:
                continue
        elif img_slice.min() == img_slice.max():
            continue  # image-only: constant slices carry nothing
        if is_3d:
            width = max(3, len(str(image_u8.shape[AXES.index(axis)] - 1)))
            name = f"{case.key}_{axis}{index:0{width}d}.npy"
        else:
            name = f"{case.key}.npy"
        _save_npy(out_dir / "imgs" / name, to_three_channels(img_slice))
        if lab_slice is not None:
            _save_npy(out_dir / "gts" / name, lab_slice.astype(gt_dtype))
        rows.append({"file": name, "axis": axis, "slice": index, "labels": {str(k): v for k, v in counts.items()}})

    record = {
        "key": case.key, "dataset": case.dataset, "case": case.case_id, "group": case.group,
        "modality": case.modality, "normalization": normalization, "source": str(case.image),
        "original_shape": list(image.shape), "spacing_zyx": list(spacing) if spacing else None,
        "labeled": case.labeled, "fingerprint": fingerprint(case, config), "slices": rows,
    }
    with atomic_path(out_dir / "records" / f"{case.key}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    return record


def _convert_safely(case: CaseSpec, out_dir: Path, config: PrepConfig) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """:func:`convert_case` for a worker: returns (record, None) or (None, one-line error)."""
    try:
        return convert_case(case, out_dir, config), None
    except InputError as exc:
        return None, str(exc.with_source(case.image))
    except OSError as exc:  # a full disk: name the file that could not be written
        return None, f"{case.image}: cannot write {exc.filename or out_dir}: {exc.strerror or exc}"
    except Exception as exc:  # a bug or a reader crash must not stop the other cases
        text = " ".join(str(exc).split()) or "no message"
        return None, f"{case.image}: unexpected {type(exc).__name__}: {text}"


# ------------------------------------------------------------------ split, manifest, summary
def assign_split(groups: Iterable[Tuple[str, str]], val_fraction: float = 0.05, seed: int = 0) -> Dict[Tuple[str, str], str]:
    """``{(dataset, group): "train" | "val"}``; see the module doc for the rule."""
    groups = sorted(set(groups))
    split = {g: "train" for g in groups}
    n = len(groups)
    if n < 2 or val_fraction <= 0:
        return split
    n_val = min(n - 1, max(1, int(math.floor(val_fraction * n + 0.5))))
    by_dataset: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
    for g in groups:
        by_dataset[g[0]].append(g)
    rng = np.random.default_rng(seed)
    names = sorted(by_dataset)
    quota = {d: n_val * len(by_dataset[d]) / n for d in names}
    take = {d: min(int(math.floor(quota[d])), max(len(by_dataset[d]) - 1, 0)) for d in names}
    tie = dict(zip(names, rng.permutation(len(names))))
    order = sorted(names, key=lambda d: (-(quota[d] - take[d]), len(by_dataset[d]) == 1, tie[d]))
    while sum(take.values()) < n_val:
        room = [d for d in order if take[d] < len(by_dataset[d])]
        take[room[0]] += 1
        order = room[1:] + room[:1]
    for d in names:
        members = by_dataset[d]
        for i in rng.permutation(len(members))[: take[d]]:
            split[members[i]] = "val"
    return split


def _load_records(records_dir: Path) -> Dict[str, Dict[str, Any]]:
    records = {}
    for path in sorted(records_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # treated as not done
        records[path.stem] = record
    return records


def manifest_rows(records: Iterable[Dict[str, Any]], split: Dict[Tuple[str, str], str]) -> List[Dict[str, str]]:
    """Manifest rows (strings) of all records' slices, sorted by file name."""
    rows = []
    for rec in records:
        shape = "x".join(str(int(v)) for v in rec["original_shape"])
        spacing = _fmt_tuple(rec["spacing_zyx"]) if rec.get("spacing_zyx") else ""
        for s in rec["slices"]:
            labels = ";".join(f"{k}:{v}" for k, v in sorted(s["labels"].items(), key=lambda kv: int(kv[0])))
            rows.append({
                "file": s["file"], "dataset": rec["dataset"], "case": rec["case"], "group": rec["group"],
                "modality": rec["modality"], "normalization": rec["normalization"], "axis": s["axis"],
                "slice": str(s["slice"]), "original_shape": shape, "spacing_zyx": spacing, "labels": labels,
                "split": split.get((rec["dataset"], rec["group"]), "train"), "source": rec["source"],
            })
    rows.sort(key=lambda r: r["file"])
    return rows


def summary_table(rows: Sequence[Dict[str, str]]) -> str:
    """Markdown table like the seed paper's Table 1: per modality datasets, cases, slices, share."""
    stats: Dict[str, Dict[str, Any]] = defaultdict(lambda: {"datasets": set(), "cases": set(), "slices": 0,
                                                            "train": 0, "val": 0})
    for r in rows:
        s = stats[r["modality"]]
        s["datasets"].add(r["dataset"])
        s["cases"].add((r["dataset"], r["case"]))
        s["slices"] += 1
        s["val" if r["split"] == "val" else "train"] += 1
    total = max(len(rows), 1)
    lines = ["| Modality | Datasets | Cases | Slices | Share | Train slices | Val slices |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for modality in sorted(stats, key=lambda m: (-stats[m]["slices"], m)):
        s = stats[modality]
        lines.append(f"| {modality} | {len(s['datasets'])} | {len(s['cases'])} | {s['slices']} | "
                     f"{100.0 * s['slices'] / total:.1f}% | {s['train']} | {s['val']} |")
    datasets = {r["dataset"] for r in rows}
    cases = {(r["dataset"], r["case"]) for r in rows}
    train = sum(1 for r in rows if r["split"] != "val")
    lines.append(f"| **Total** | {len(datasets)} | {len(cases)} | {len(rows)} | 100.0% | {train} | "
                 f"{len(rows) - train} |")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_manifest(path: Path, rows: Sequence[Dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _clean_temporaries(out_dir: Path) -> None:
    """Remove temp files a killed run left behind (``atomic_path`` names them ``.<stem>.*.tmp*``)."""
    for sub in ("imgs", "gts", "records", "."):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.glob(".*.tmp*"):
                path.unlink(missing_ok=True)


def _remove_outputs(out_dir: Path, record: Dict[str, Any]) -> None:
    for s in record.get("slices", []):
        for sub in ("imgs", "gts"):
            (out_dir / sub / s["file"]).unlink(missing_ok=True)
    (out_dir / "records" / f"{record['key']}.json").unlink(missing_ok=True)


# ------------------------------------------------------------------ driver
def _worker_context() -> Any:
    """Process start method for workers: a fork server that has imported this module once (fast: each
    worker forks from it without re-importing torch / readers, and never forks the caller's threads);
    ``spawn`` where fork servers do not exist. The caller's ``__main__`` is not re-imported."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def check_output_folder(out_dir: PathLike) -> Path:
    """``out_dir`` as a Path; InputError when it exists and is not a folder (checked before any work)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    return out


def collect_cases(sources: Sequence[Union[PathLike, DatasetSpec]], overrides: Optional[Overrides]
                  ) -> Tuple[List[CaseSpec], List[CaseFailure]]:
    """Cases of all sources (duplicate case keys become failures) and the problems found while pairing."""
    found = Discovery()
    for source in sources:
        found.extend(discover_spec(source) if isinstance(source, DatasetSpec) else discover(source, overrides))
    seen: Dict[str, CaseSpec] = {}
    cases: List[CaseSpec] = []
    for case in found.cases:
        if case.key in seen:
            found.failures.append(CaseFailure(case.key, f"{case.image}: case id {case.key} also comes from "
                                                        f"{seen[case.key].image} (give the datasets distinct names)"))
            continue
        seen[case.key] = case
        cases.append(case)
    if not cases and not found.failures:
        raise InputError("no case found in the given sources")
    return cases, list(found.failures)


def plan_cases(out: Path, cases: Sequence[CaseSpec], config: PrepConfig) -> List[CaseSpec]:
    """Create the output folders, drop temporaries and outputs of records with other settings; the cases to do."""
    for sub in ("imgs", "gts", "records"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    existing = _load_records(out / "records")
    todo: List[CaseSpec] = []
    for case in cases:
        record = existing.get(case.key)
        if record is not None and record.get("fingerprint") == fingerprint(case, config):
            continue
        if record is not None:
            _remove_outputs(out, record)
        todo.append(case)
    return todo


def convert_cases(todo: Sequence[CaseSpec], out: Path, config: PrepConfig,
                  on_case_done: Optional[Callable[[str], None]] = None) -> List[CaseFailure]:
    """Convert ``todo`` (in ``config.workers`` processes); the failed cases' one-line messages."""
    from tqdm import tqdm

    failures: List[CaseFailure] = []
    bar = tqdm(total=len(todo), desc="prep", unit="case", disable=not config.progress)

    def finish(case: CaseSpec, outcome: Tuple[Optional[Dict[str, Any]], Optional[str]]) -> None:
        if outcome[1] is not None:
            failures.append(CaseFailure(case.key, outcome[1]))
        bar.update(1)
        if on_case_done is not None:
            on_case_done(case.key)

    try:
        if config.workers <= 1 or len(todo) <= 1:
            for case in todo:
                finish(case, _convert_safely(case, out, config))
        else:
            with ProcessPoolExecutor(max_workers=min(config.workers, len(todo)), mp_context=_worker_context()) as pool:
                pending: Dict[Future, CaseSpec] = {pool.submit(_convert_safely, c, out, config): c for c in todo}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for future in sorted(done, key=lambda f: pending[f].key):
                            finish(pending.pop(future), future.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return failures


def write_summary(out: Path, rows: Sequence[Dict[str, str]], split: Dict[Tuple[str, str], str],
                  records: Dict[str, Dict[str, Any]], config: PrepConfig, failures: Sequence[CaseFailure]
                  ) -> Tuple[str, List[str]]:
    """summary.md (and failures.txt when some case failed); returns (its text, cases left without slices)."""
    empty = sorted(k for k, r in records.items() if r.get("labeled") and not r["slices"])
    text = ["# Data prep summary\n", summary_table(rows), "",
            f"Split: by case, val_fraction={config.val_fraction:g}, seed={config.seed}; "
            f"{sum(1 for v in split.values() if v == 'val')} of {len(split)} case groups in validation.",
            f"Filters: min_pixels={config.min_pixels} per label per slice, min_voxels={config.min_voxels} per 3D "
            f"component; axes={','.join(config.axes)}."]
    if empty:
        text.append(f"Cases with no slice left after filtering: {', '.join(empty)}.")
    if failures:
        text.append(f"\nFailed cases ({len(failures)}):\n")
        text.extend(f"- {f.case}: {f.message}" for f in failures)
        _write_text(out / "failures.txt", "".join(f"{f.case}: {f.message}\n" for f in failures))
    else:
        (out / "failures.txt").unlink(missing_ok=True)
    summary_md = "\n".join(text) + "\n"
    _write_text(out / "summary.md", summary_md)
    return summary_md, empty


def prep_dataset(
    sources: Union[PathLike, DatasetSpec, Sequence[Union[PathLike, DatasetSpec]]],
    out_dir: PathLike,
    config: Optional[PrepConfig] = None,
    *,
    on_case_done: Optional[Callable[[str], None]] = None,
) -> PrepResult:
    """Convert datasets into ``out_dir`` (layout in the module doc); resumable.

    Steps: check settings and output path -> :func:`collect_cases` -> :func:`plan_cases` (skip
    finished cases) -> :func:`convert_cases` -> split, manifest.csv -> :func:`write_summary`.

    Args:
        sources: folders (nnU-Net / MSD, challenge npz, folder with ``prep.yaml``, or any folder with
            ``config.overrides.images``), spec files, or :class:`~medsam_lite.prep.layouts.DatasetSpec` objects.
        out_dir: output folder (created; an existing file there is refused before any work).
        config: :class:`PrepConfig` (default: all defaults).
        on_case_done: called with each finished case's key in this process (progress hooks; an
            exception raised there stops the run like a crash, leaving finished cases resumable).

    Returns:
        :class:`PrepResult`; failed cases are listed in ``failures``, the others are converted.

    Raises:
        InputError: invalid settings, an output path that is a file, or a source that cannot be read
            as a whole (missing folder, undetectable layout, bad spec, no case at all).
    """
    config = (config or PrepConfig()).checked()
    out = check_output_folder(out_dir)
    if isinstance(sources, (str, Path, DatasetSpec)):
        sources = [sources]
    cases, failures = collect_cases(sources, config.overrides)
    skeleton = [p for p in (out, out / "imgs", out / "gts", out / "records") if not p.exists()]
    todo = plan_cases(out, cases, config)
    failures += convert_cases(todo, out, config, on_case_done)
    return _finish(out, cases, todo, failures, config, skeleton)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders this run created when they stayed empty (deepest first)."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def _finish(out: Path, cases: Sequence[CaseSpec], todo: Sequence[CaseSpec], failures: List[CaseFailure],
            config: PrepConfig, skeleton: Sequence[Path]) -> PrepResult:
    """Split, manifest.csv and summary.md from every record; a write error (full disk) is one line in
    ``errors`` naming the file, and leaves no empty folder skeleton behind."""
    records = _load_records(out / "records")
    groups = {(r["dataset"], r["group"]) for r in records.values()} | {(c.dataset, c.group) for c in cases}
    split = assign_split(groups, config.val_fraction, config.seed)
    rows = manifest_rows(records.values(), split)
    failures.sort(key=lambda f: f.case)
    errors: List[str] = []
    summary_md, empty = "", []
    try:
        _write_manifest(out / "manifest.csv", rows)
        summary_md, empty = write_summary(out, rows, split, records, config, failures)
    except OSError as exc:
        errors.append(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    if errors:
        _remove_empty(skeleton)
    return PrepResult(out_dir=out, manifest=out / "manifest.csv", summary=out / "summary.md",
                      summary_markdown=summary_md, cases=len({(r["dataset"], r["case"]) for r in rows}),
                      slices=len(rows), converted=sum(1 for c in todo if c.key in records),
                      skipped=len(cases) - len(todo), failures=failures, empty_cases=empty, errors=errors)
