"""Segment files or folders of cases with box prompts (the library side of ``medsam-lite segment``).

Inputs (see :mod:`medsam_lite.imageio`): challenge ``.npz`` cases carry their own boxes; NIfTI /
MHA / NRRD volumes, DICOM series folders, and PNG / JPG / TIFF / DICOM images take boxes from the
caller (same boxes for every case in a folder). Box coordinates are voxel / pixel indices of the
file's own grid: 2D ``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``.

Folders: a folder whose visible files are all DICOM is one DICOM series (one case); any other folder
is a folder of cases, each supported file (and each DICOM-series sub-folder) its own case, decided
file by file: a stray ``.dcm`` among ``.npz`` cases is one more (2D DICOM) case, not a series.

Intensities (:func:`model_input`) follow the one table of training prep, :mod:`medsam_lite.normalize`:

=============================================  =========================================================
input                                           default mapping to uint8
=============================================  =========================================================
challenge ``.npz``                              unchanged (already uint8, prepared)
uint8 PNG / JPG / BMP / TIFF / NIfTI / MHA      unchanged, unless ``--modality`` is given
DICOM (file or series)                          its Modality tag (CT: window L40/W400 or ``--window``;
                                                MR, US, XA, ...: percentiles of non-zero voxels)
other non-uint8 images / volumes                generic grey rule: 0.5 / 99.5 percentiles of the
                                                non-zero voxels (colour: per channel); a notice
                                                suggests ``--modality CT`` when values look like HU
=============================================  =========================================================

``--window`` without ``--modality`` means CT.

Outputs: every file atomically; a case that fails removes its own stale output from an earlier run;
two inputs sharing a stem (``a.png``, ``a.bmp``) get ``a_png_mask.png`` / ``a_bmp_mask.png``.
Everything that can be checked before the model loads is (inputs exist, output folder is a writable
folder, names do not collide, a single case reads and its boxes fit); after that, each case that
fails is one line in ``result.failures`` and the others go on.
"""
from __future__ import annotations

import csv
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .imageio import (GENERIC_GREY, OUTPUT_FORMATS, Case, is_dicom_series_dir, is_supported, mask_path_for,
                      read_case, suffix_of, write_mask)
from .io_utils import atomic_path, check_output_folder, remove_dead_temporaries
from .normalize import Window, canonical_modality, describe, modality_rule, normalize_to_uint8

if False:  # pragma: no cover - typing only; the predictor (torch) is imported when the model is built
    from .predictor import Predictor

HU_HINT_MIN = -500.0
"""A grey non-uint8 input whose minimum is at or below this looks like CT in HU (notice only)."""

MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass
class SegmentOptions:
    """How ``segment_paths`` reads, maps and writes.

    ``modality``: a :data:`medsam_lite.normalize.MODALITY_TABLE` name; None = default per format
    (module doc). ``window``: CT (level, width). ``fmt``: one of :data:`OUTPUT_FORMATS` (``dicom-seg``
    for DICOM series inputs). ``series_uid``: which series of a DICOM folder that holds several.
    ``overlay``: a PNG path (one case) or a folder (a folder of cases). ``labels``: segment names for
    DICOM-SEG, box i -> ``labels[i-1]``. ``dicom_series``: read the input folder as one DICOM series
    even when it holds other files too (otherwise only an all-DICOM folder is a series).
    ``backend`` / ``precision``: the inference backend (:mod:`medsam_lite.backends`; ``auto`` = the fastest
    installed, at the precision the agreement gate allows). ``threads``: threads of a non-torch runtime.
    ``embedding_cache``: folder of the persistent slice-embedding cache. ``baseline``: run the LiteMedSAM
    baseline algorithm instead (eager fp32, no slice cache; for comparisons).
    """

    overlay: Optional[Path] = None
    window: Optional[Window] = None
    modality: Optional[str] = None
    fmt: str = "auto"
    series_uid: Optional[str] = None
    labels: Optional[Sequence[str]] = None
    progress: bool = True
    dicom_series: bool = False
    backend: str = "auto"
    precision: str = "auto"
    threads: Optional[int] = None
    embedding_cache: Optional[Path] = None
    baseline: bool = False


@dataclass
class SegmentResult:
    """Outputs written, failures as (path, one-line message), warnings / notices (one line each),
    and (case, seconds, status) per case."""

    outputs: List[Path] = field(default_factory=list)
    failures: List[Tuple[Path, str]] = field(default_factory=list)
    times: List[Tuple[str, float, str]] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)


def _case_paths(input_path: Path, dicom_series: bool = False) -> List[Path]:
    """The cases of an input: itself, or for a folder of cases each supported file / series sub-folder."""
    if not input_path.exists():
        raise InputError("file not found", input_path)
    if dicom_series and not input_path.is_dir():
        raise InputError("--dicom-series needs a folder", input_path)
    if input_path.is_dir() and not dicom_series and not is_dicom_series_dir(input_path):
        paths = sorted(p for p in input_path.iterdir() if not p.name.startswith(".") and is_supported(p))
        if not paths:
            raise InputError("folder holds no supported cases (.npz, NIfTI, MHA, NRRD, images, DICOM)", input_path)
        return paths
    return [input_path]


def case_keys(paths: Sequence[Path]) -> Dict[Path, str]:
    """Output key per input: its stem, or ``<stem>_<ext>`` when two inputs share the stem.

    Raises InputError (before any work) when keys still collide (``a.png`` + ``a_png.jpg`` + ``a.jpg``)."""
    def split(p: Path) -> Tuple[str, str]:
        suffix = suffix_of(p) if p.is_file() else ""
        return p.name[: len(p.name) - len(suffix)] if suffix else p.name, suffix

    stems = Counter(split(p)[0] for p in paths)
    keys: Dict[Path, str] = {}
    for p in paths:
        stem, suffix = split(p)
        keys[p] = stem if stems[stem] == 1 or not suffix else f"{stem}_{suffix.lstrip('.').replace('.', '_')}"
    clash = [k for k, n in Counter(keys.values()).items() if n > 1]
    if clash:
        names = ", ".join(p.name for p in paths if keys[p] == clash[0])
        raise InputError(f"inputs {names} would write the same output name; rename one", paths[0].parent)
    return keys


def _possible_outputs(path: Path, key: str, out_dir: Path) -> List[Path]:
    """Every name a mask of this input could have (to remove a stale one when the case fails)."""
    if suffix_of(path) == ".npz":
        return [out_dir / path.name]
    return [out_dir / f"{key}_mask{ext}" for ext in MASK_EXTENSIONS] + [out_dir / f"{key}_seg.dcm"]


def model_input(case: Case, modality: Optional[str] = None,
                window: Optional[Window] = None) -> Tuple[np.ndarray, str, Optional[str]]:
    """The uint8 array the model sees, its normalisation text, and a notice (or None).

    Table in the module doc; every mapping goes through :func:`medsam_lite.normalize.normalize_to_uint8`.
    """
    array = case.array
    is_rgb = (not case.is_3d) and array.ndim == 3 and array.shape[-1] == 3
    if case.kind == "npz":
        return array, describe(GENERIC_GREY, None, is_rgb, precomputed=True), None
    if modality is None and window is not None:
        modality = "CT"
    if modality is None and case.meta.get("modality"):
        try:
            modality = canonical_modality(case.meta["modality"])
        except InputError:
            modality = None  # e.g. "OT" / "SC": no table entry, fall back to the per-format default
    if modality is None:
        if array.dtype == np.uint8:
            return array, "unchanged-uint8", None
        notice = None
        low = float(np.min(array))
        if not is_rgb and low <= HU_HINT_MIN:
            notice = (f"values {low:g}..{float(np.max(array)):g} look like CT Hounsfield units; mapped by the "
                      f"generic percentile rule: give --modality CT (L40/W400, or --window) for the CT window")
        out = normalize_to_uint8(array, GENERIC_GREY, is_rgb=is_rgb, source=case.path)
        return out, describe(GENERIC_GREY, None, is_rgb), notice
    rule = modality_rule(modality, case.path)
    if window is not None and rule.grey != "window":
        raise InputError(f"--window applies to CT only, not to modality {rule.name}", case.path)
    out = normalize_to_uint8(array, rule.name, window, is_rgb=is_rgb, source=case.path)
    return out, describe(rule.name, window, is_rgb), None


def resolve_boxes(case: Case, boxes: Optional[np.ndarray]) -> np.ndarray:
    """The case's own boxes (npz) or the caller's, checked against the case's dimension and extent:
    (N, 4) XYXY for 2D, (N, 6) for 3D, in the file's pixels / voxels."""
    from .validation import check_boxes_2d, check_boxes_3d, check_image, check_volume

    boxes = case.boxes if case.boxes is not None else boxes
    if boxes is None:
        raise InputError("no boxes: give --box or --boxes for non-challenge inputs", case.path)
    boxes = np.asarray(boxes, dtype=np.float64)
    width = 6 if case.is_3d else 4
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise InputError(f"a {'3D' if case.is_3d else '2D'} case needs boxes of {width} numbers, got shape "
                         f"{boxes.shape}", case.path)
    try:
        if case.is_3d:
            check_volume(case.array)  # raw values: "constant (every voxel = -1024)", not the mapped 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # clipping is reported once, by the predictor
                check_boxes_3d(boxes, case.array.shape)
        else:
            check_image(case.array)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_boxes_2d(boxes, case.array.shape[:2])
    except InputError as exc:
        raise exc.with_source(case.path)
    return boxes


def segment_case(predictor: "Predictor", case: Case, boxes: Optional[np.ndarray],
                 window: Optional[Window] = None, progress: bool = False,
                 modality: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Label map for one case; returns (mask, boxes used). Errors are InputError naming the case."""
    boxes = resolve_boxes(case, boxes)
    array, _, _ = model_input(case, modality, window)
    try:
        if case.is_3d:
            mask = predictor.predict_volume(array, boxes, progress=progress)
        else:
            predictor.set_image(array)
            mask = predictor.predict(boxes)
    except InputError as exc:
        raise exc.with_source(case.path)
    return mask, boxes


def _one_line(path: Path, exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return str(exc.with_source(path))
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return f"{path}: cannot write{target}: {exc.strerror or exc}"
    text = str(exc).strip().splitlines()
    return f"{path}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _make_folders(folders: Sequence[Path]) -> List[Path]:
    """Create the folders (and missing parents); returns the ones created, parents first.
    Raises InputError naming the folder when that fails (read-only file system, ...)."""
    created: List[Path] = []
    for folder in folders:
        missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
        for p in missing:
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                for c in reversed(created):
                    try:
                        c.rmdir()
                    except OSError:
                        pass
                raise InputError(f"cannot create output folder ({exc.strerror or exc})", folder) from None
            created.append(p)
    return created


def _unlink_quietly(paths: Sequence[Path], keep: set) -> None:
    for p in paths:
        try:
            if p.is_file() and p.resolve() not in keep:
                p.unlink()
        except OSError:
            pass


def segment_paths(
    input_path: Union[str, Path],
    out_dir: Union[str, Path],
    model: Union[str, "Predictor", None] = None,
    boxes: Optional[np.ndarray] = None,
    overlay: Optional[Union[str, Path]] = None,
    window: Optional[Window] = None,
    progress: bool = True,
    options: Optional[SegmentOptions] = None,
    on_message: Optional[Callable[[str], None]] = None,
) -> SegmentResult:
    """Segment one case or every case of a folder into ``out_dir``.

    ``options`` (when given) replaces ``overlay`` / ``window`` / ``progress``. ``on_message`` gets each
    warning / notice line as it happens (the CLI prints them on stderr); they are also in
    ``result.messages``.

    Before the model is built (``model``: a name / checkpoint path, or a ready ``Predictor``): the
    input exists, the output (and overlay) folder can be written, output names do not collide, and a
    single case is read and its boxes checked; any problem raises :class:`InputError` and nothing is
    created. Then masks are written atomically with ``timing.csv`` (case, seconds, status); a case
    that fails is one line in ``result.failures`` (its stale output removed) and the others go on.
    """
    opts = options or SegmentOptions(overlay=Path(overlay) if overlay is not None else None, window=window,
                                     progress=progress)
    if opts.fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {opts.fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    if opts.modality is not None:
        modality_rule(opts.modality)  # unknown names fail now, listing the known ones
    input_path, out_dir = Path(input_path), Path(out_dir)
    result = SegmentResult()

    def say(line: str) -> None:
        result.messages.append(line)
        if on_message is not None:
            on_message(line)

    # ---------------------------------------------------------------- checks before the model loads
    paths = _case_paths(input_path, opts.dicom_series)
    many = input_path.is_dir() and not opts.dicom_series and not is_dicom_series_dir(input_path)
    keys = case_keys(paths)
    check_output_folder(out_dir)
    overlay_path = Path(opts.overlay) if opts.overlay is not None else None
    if overlay_path is not None:
        check_output_folder(overlay_path if many else overlay_path.parent, "overlay folder")
    inputs = {p.resolve() for p in paths} | ({p.resolve() for p in input_path.iterdir()} if many else set())
    first: Optional[Case] = None
    first_input: Optional[Tuple[np.ndarray, str, Optional[str]]] = None
    if not many:
        try:
            first = read_case(paths[0], series_uid=opts.series_uid, dicom_series=opts.dicom_series)
            resolve_boxes(first, boxes)
            mask_path_for(first, out_dir, keys[paths[0]], opts.fmt)
            first_input = model_input(first, opts.modality, opts.window)
        except InputError:
            _unlink_quietly(_possible_outputs(paths[0], keys[paths[0]], out_dir), inputs)
            raise

    created = _make_folders([out_dir] + ([overlay_path if many else overlay_path.parent] if overlay_path else []))

    # ---------------------------------------------------------------- model, then cases
    try:
        if isinstance(model, (str, type(None))) and opts.baseline:
            from .baseline import BaselinePredictor
            from .checkpoint import load_model

            predictor = BaselinePredictor(load_model(model))
        elif isinstance(model, (str, type(None))):
            from .predictor import Predictor

            predictor = Predictor(model, backend=opts.backend, precision=opts.precision,
                                  embedding_cache=opts.embedding_cache, threads=opts.threads)
        else:
            predictor = model
    except BaseException:
        for folder in reversed(created):  # a model that fails to load leaves no empty output folder
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    remove_dead_temporaries(out_dir)
    if overlay_path is not None:
        remove_dead_temporaries(overlay_path if many else overlay_path.parent)

    for path in paths:
        start = time.perf_counter()
        key = keys[path]
        out: Optional[Path] = None
        ov_target = (overlay_path / f"{key}.png" if many else overlay_path) if overlay_path is not None else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                case = first if first is not None else read_case(path, series_uid=opts.series_uid)
                prepared, first, first_input = first_input, None, None
                out = mask_path_for(case, out_dir, key, opts.fmt)
                if out.resolve() in inputs:
                    raise InputError(f"output {out.name} would overwrite an input file", path)
                used = resolve_boxes(case, boxes)
                array, _, notice = prepared if prepared is not None else model_input(case, opts.modality, opts.window)
                if notice:
                    say(f"notice: {path}: {notice}")
                try:
                    if case.is_3d:
                        mask = predictor.predict_volume(array, used, progress=opts.progress)
                    else:
                        predictor.set_image(array)
                        mask = predictor.predict(used)
                except InputError as exc:
                    raise exc.with_source(path)
                write_mask(case, mask, out, opts.labels)
            for w in caught:
                say(f"warning: {path}: {w.message}")
            elapsed = time.perf_counter() - start
            if ov_target is not None:
                from .overlay import write_overlay, write_volume_overlay

                writer = write_volume_overlay if case.is_3d else write_overlay
                writer(ov_target, array, mask, used)
            result.outputs.append(out)
            result.times.append((path.name, elapsed, "ok"))
        except Exception as exc:  # one line per case; the other cases go on
            result.failures.append((path, _one_line(path, exc)))
            result.times.append((path.name, time.perf_counter() - start, "failed"))
            stale = ([out] if out is not None else []) + _possible_outputs(path, key, out_dir)
            _unlink_quietly(stale + ([ov_target] if ov_target is not None else []), inputs)
    try:
        _write_timing(out_dir / "timing.csv", result.times)
    except OSError as exc:
        result.failures.append((out_dir / "timing.csv", _one_line(out_dir / "timing.csv", exc)))
    return result


def _write_timing(path: Path, rows: List[Tuple[str, float, str]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "seconds", "status"])
            writer.writerows((name, f"{sec:.3f}", status) for name, sec, status in rows)
