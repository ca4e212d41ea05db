"""Segment files or folders of cases with box prompts (the library side of ``medsam-lite segment``).

Inputs (see :mod:`medsam_lite.imageio`): challenge ``.npz`` cases carry their own boxes; NIfTI /
MHA / NRRD volumes, DICOM series folders, and PNG / JPG / TIFF / DICOM images take boxes from the
caller (same boxes for every case in a folder). Box coordinates are voxel / pixel indices of the
file's own grid: 2D ``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``.

Folders: a folder whose visible files are all DICOM (by content: any name, see
:func:`medsam_lite.imageio.is_dicom_file`), or that holds a ``DICOMDIR``, is one DICOM series (one case);
any other folder is a folder of cases, each supported file (and each DICOM-series sub-folder) its own
case, decided file by file: a stray ``.dcm`` among ``.npz`` cases is one more (2D DICOM) case, not a series.

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
two inputs sharing a stem (``a.png``, ``a.bmp``) get ``a_png_mask.png`` / ``a_bmp_mask.png``; every mask (but a
challenge ``.npz``, unless names were given) gets its label table ``<key>.labels.json`` beside it (label value ->
name, colour; default names ``object_<i>`` marked ``auto_name``; :func:`medsam_lite.imageio.write_label_table`).

The shape is nnU-Net v2's predictor (``predict_from_files`` -> ``_manage_input_and_output_lists`` ->
``predict_from_data_iterator`` -> ``export_prediction``): :func:`segment_paths` first resolves every input
and output and checks everything that can be checked (inputs exist and are no link loops, the output
folders are writable folders, no output path equals an input or another output of the run (mask,
overlay, ``timing.csv``), the caller's boxes fit (at most 255: one uint8 label each), a single case
reads and its boxes fit) and raises :class:`InputError` before anything is created or the model loads;
then it builds the model, runs the cases one by one (each case that fails is one line in
``result.failures`` and the others go on) and writes each prediction.
"""
from __future__ import annotations

import csv
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .errors import InputError
from .imageio import (GENERIC_GREY, OUTPUT_FORMATS, Case, expected_mask_paths, is_dicom_series_dir, is_supported,
                      label_table_path, mask_path_for, read_case, stem_of, suffix_of, write_label_table, write_mask)
from .io_utils import atomic_path, check_output_folder, link_problem, real_path, remove_dead_temporaries
from .normalize import HU_HINT_MIN  # noqa: F401 - re-exported (its home was here)
from .normalize import Window, canonical_modality, describe, model_input_uint8, modality_rule

if False:  # pragma: no cover - typing only; the predictor (torch) is imported when the model is built
    from .predictor import Predictor
    from .prompts import Prompts

MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass
class SegmentOptions:
    """How ``segment_paths`` reads, maps and writes.

    ``modality``: a :data:`medsam_lite.normalize.MODALITY_TABLE` name; None = default per format
    (module doc). ``window``: CT (level, width). ``fmt``: one of :data:`OUTPUT_FORMATS` (``dicom-seg``
    for DICOM series inputs). ``series_uid``: which series of a DICOM folder that holds several.
    ``overlay``: a PNG path (one case) or a folder (a folder of cases). ``labels``: object names, box i ->
    ``labels[i-1]`` (DICOM-SEG segment labels, and the ``<key>.labels.json`` table written beside each mask:
    label value -> name, colour; default ``object_<i>``); ``colors``: their ``"#rrggbb"`` colours in that table
    (None: the overlay's). ``dicom_series``: read the input folder as one DICOM series
    even when it holds other files too (otherwise only an all-DICOM folder is a series).
    ``backend`` / ``precision``: the inference backend (:mod:`medsam_lite.backends`; ``auto`` = the fastest
    installed, at the precision the agreement gate allows). ``threads``: threads of a non-torch runtime.
    ``embedding_cache``: folder of the persistent slice-embedding cache. ``baseline``: run the LiteMedSAM
    baseline algorithm instead (eager fp32, no slice cache; for comparisons). ``boxes_file``: the file the
    boxes came from (an input too: no output may overwrite it). ``prompts``: a prompt script
    (:mod:`medsam_lite.prompts`) replayed on one case through a :class:`~medsam_lite.session.Session` instead of
    segmenting the boxes (its boxes are the case's; checked against the case before the model loads).
    """

    overlay: Optional[Path] = None
    window: Optional[Window] = None
    modality: Optional[str] = None
    fmt: str = "auto"
    series_uid: Optional[str] = None
    labels: Optional[Sequence[Optional[str]]] = None
    colors: Optional[Sequence[Optional[str]]] = None
    progress: bool = True
    dicom_series: bool = False
    backend: str = "auto"
    precision: str = "auto"
    threads: Optional[int] = None
    embedding_cache: Optional[Path] = None
    baseline: bool = False
    boxes_file: Optional[Path] = None
    prompts: Optional["Prompts"] = None


@dataclass
class SegmentResult:
    """Outputs written, failures of cases as (path, one-line message), warnings / notices (one line
    each), (case, seconds, status) per case, and ``errors``: run-level problems that are no case
    (``timing.csv`` could not be written), one line each. ``tables``: the label tables written;
    ``overlays``: (overlay PNG, what it shows: for a volume which slice and in which orientation)."""

    outputs: List[Path] = field(default_factory=list)
    tables: List[Path] = field(default_factory=list)
    overlays: List[Tuple[Path, str]] = field(default_factory=list)
    failures: List[Tuple[Path, str]] = field(default_factory=list)
    times: List[Tuple[str, float, str]] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


@dataclass
class CaseTask:
    """One case of a run, planned before the model loads: its input, output key, the mask path(s) it
    can get, its overlay target; ``case`` / ``prepared`` when it was already read (single-case mode)."""

    path: Path
    key: str
    outputs: List[Path]
    overlay: Optional[Path] = None
    case: Optional[Case] = None
    prepared: Optional[Tuple[np.ndarray, str, Optional[str]]] = None


@dataclass
class RunPlan:
    """Everything :func:`predict_from_data_iterator` needs, resolved and checked up front: the tasks, the
    output folder, the folders to create, the (resolved) input files no output may touch, the boxes."""

    tasks: List[CaseTask]
    out_dir: Path
    folders: List[Path]
    inputs: Set[Path]
    boxes: Optional[np.ndarray] = None


def _case_paths(input_path: Path, dicom_series: bool = False) -> List[Path]:
    """The cases of an input: itself, or for a folder of cases each supported file / series sub-folder
    (a link there that cannot be followed is a case too, which fails with one line)."""
    problem = link_problem(input_path)
    if problem is not None:
        raise InputError(problem, input_path)
    if not input_path.exists():
        raise InputError("file not found", input_path)
    if dicom_series and not input_path.is_dir():
        raise InputError("--dicom-series needs a folder", input_path)
    if input_path.is_dir() and not dicom_series and not is_dicom_series_dir(input_path):
        try:
            paths = sorted(p for p in input_path.iterdir() if not p.name.startswith(".") and is_supported(p))
        except OSError as exc:
            raise InputError(f"cannot list the folder ({exc.strerror or exc})", input_path) from None
        if not paths:
            raise InputError("folder holds no supported cases (.npz, NIfTI, MHA, NRRD, images, DICOM)", input_path)
        return paths
    return [input_path]


def case_keys(paths: Sequence[Path]) -> Dict[Path, str]:
    """Output key per input: its stem, or ``<stem>_<ext>`` when two inputs share the stem.

    Raises InputError (before any work) when keys still collide (``a.png`` + ``a_png.jpg`` + ``a.jpg``)."""
    def split(p: Path) -> Tuple[str, str]:
        stem = stem_of(p) if p.is_file() else p.name
        return stem, p.name[len(stem):]

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
        return [out_dir / path.name, label_table_path(out_dir, key)]
    return [out_dir / f"{key}_mask{ext}" for ext in MASK_EXTENSIONS] + [out_dir / f"{key}_seg.dcm",
                                                                        label_table_path(out_dir, key)]


def model_input(case: Case, modality: Optional[str] = None,
                window: Optional[Window] = None) -> Tuple[np.ndarray, str, Optional[str]]:
    """The uint8 array the model sees, its normalisation text, and a notice (or None).

    Table in the module doc; the mapping is :func:`medsam_lite.normalize.model_input_uint8` (the Predictor's too).
    """
    array = case.array
    is_rgb = (not case.is_3d) and array.ndim == 3 and array.shape[-1] == 3
    if case.kind == "npz":
        return array, describe(GENERIC_GREY, None, is_rgb, precomputed=True), None
    if modality is None and window is None and case.meta.get("modality"):
        try:
            modality = canonical_modality(case.meta["modality"])
        except InputError:
            modality = None  # e.g. "OT" / "SC": no table entry, fall back to the per-format default
    return model_input_uint8(array, modality, window, is_rgb=is_rgb, source=case.path)


def resolve_boxes(case: Case, boxes: Optional[np.ndarray], own: bool = True) -> np.ndarray:
    """The case's own boxes (npz; ``own=False``: never) or the caller's, checked against the case's dimension and
    extent: (N, 4) XYXY for 2D, (N, 6) for 3D, in the file's pixels / voxels."""
    from .validation import check_boxes_2d, check_boxes_3d, check_image, check_volume

    boxes = case.boxes if own and case.boxes is not None else boxes
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


def _case_boxes(case: Case, boxes: Optional[np.ndarray], opts: SegmentOptions) -> np.ndarray:
    """:func:`resolve_boxes`; with a prompt script, the script checked against the case first (one line with
    the JSON path of a bad field) and its boxes used, also for a challenge ``.npz`` that carries its own."""
    if opts.prompts is None:
        return resolve_boxes(case, boxes)
    from .prompts import check_prompts

    check_prompts(opts.prompts, case.array.shape, case.is_3d)
    return resolve_boxes(case, opts.prompts.boxes, own=False)


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
            if p.is_file() and real_path(p) not in keep:
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
    """Segment one case or every case of a folder into ``out_dir`` (nnU-Net's ``predict_from_files``).

    ``options`` (when given) replaces ``overlay`` / ``window`` / ``progress``. ``on_message`` gets each
    warning / notice line as it happens (the CLI prints them on stderr); they are also in
    ``result.messages``. ``boxes``: (N, 4) or (N, 6) in the file's pixels / voxels, for inputs that do
    not carry their own.

    Before the model is built (``model``: a name / checkpoint path, or a ready ``Predictor``),
    :func:`_manage_input_and_output_lists` checks inputs, outputs and boxes; any problem raises
    :class:`InputError` and nothing is created. Then :func:`predict_from_data_iterator` writes the masks
    atomically with ``timing.csv`` (case, seconds, status); a case that fails is one line in
    ``result.failures`` (its stale output removed) and the others go on.
    """
    opts = options or SegmentOptions(overlay=Path(overlay) if overlay is not None else None, window=window,
                                     progress=progress)
    plan = _manage_input_and_output_lists(Path(input_path), Path(out_dir), boxes, opts, model)
    created = _make_folders(plan.folders)
    predictor = _build_predictor(model, opts, created)
    for folder in plan.folders:
        remove_dead_temporaries(folder)
    return predict_from_data_iterator(predictor, plan, opts, on_message)


predict_from_files = segment_paths
"""nnU-Net's name for the entry point."""


def _check_options(opts: SegmentOptions) -> None:
    if opts.fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {opts.fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    if opts.modality is not None:
        modality_rule(opts.modality)  # unknown names fail now, listing the known ones


def check_caller_boxes(boxes: Optional[np.ndarray], source: Optional[Path] = None) -> Optional[np.ndarray]:
    """The caller's boxes as (N, 4) or (N, 6) float64, or None; InputError (before any work) when they are
    not numbers, not finite, or more than :data:`medsam_lite.validation.MAX_LABELS` (one uint8 label
    each). Their fit to each image is checked per case (:func:`resolve_boxes`)."""
    from .validation import MAX_LABELS

    if boxes is None:
        return None
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"boxes are not numbers ({exc})", source) from None
    if arr.ndim != 2 or arr.shape[1] not in (4, 6) or len(arr) == 0:
        raise InputError(f"boxes must be (N, 4) for 2D or (N, 6) for 3D, got shape {arr.shape}", source)
    if len(arr) > MAX_LABELS:
        raise InputError(f"{len(arr)} boxes given: at most {MAX_LABELS} fit a uint8 label map (one label per box)",
                         source)
    if not np.isfinite(arr).all():
        raise InputError("boxes contain NaN or infinite values", source)
    return arr


def _series_root(input_path: Path) -> Path:
    """A ``DICOMDIR`` file stands for its folder (the series it indexes)."""
    if input_path.name.upper() == "DICOMDIR" and input_path.is_file() and link_problem(input_path) is None:
        return input_path.parent
    return input_path


def _input_files(input_path: Path, paths: Sequence[Path], opts: SegmentOptions, model: object) -> Set[Path]:
    """Resolved paths no output may overwrite or remove: the inputs, every file of an input folder, the
    boxes file, a checkpoint file."""
    files = {real_path(p) for p in paths}
    if input_path.is_dir():
        files |= {real_path(p) for p in input_path.iterdir()}
    if opts.boxes_file is not None:
        files.add(real_path(opts.boxes_file))
    if isinstance(model, (str, Path)) and Path(model).is_file():
        files.add(real_path(model))
    return files


def _plan_tasks(input_path: Path, out_dir: Path, opts: SegmentOptions) -> Tuple[List[CaseTask], List[Path], bool]:
    """The cases, their keys, mask paths and overlay targets; the folders the run writes; folder mode."""
    paths = _case_paths(input_path, opts.dicom_series)
    many = input_path.is_dir() and not opts.dicom_series and not is_dicom_series_dir(input_path)
    keys = case_keys(paths)
    check_output_folder(out_dir)
    overlay = Path(opts.overlay) if opts.overlay is not None else None
    folders = [out_dir]
    if overlay is not None:
        folders.append(overlay if many else overlay.parent)
        check_output_folder(folders[-1], "overlay folder")
    tasks = [CaseTask(p, keys[p], expected_mask_paths(p, out_dir, keys[p], opts.fmt) + [label_table_path(out_dir, keys[p])],
                      (overlay / f"{keys[p]}.png" if many else overlay) if overlay is not None else None)
             for p in paths]
    return tasks, folders, many


def _check_collisions(tasks: Sequence[CaseTask], out_dir: Path, inputs: Set[Path]) -> None:
    """No output path of the run (masks, overlays, ``timing.csv``) is an input or another output."""
    claimed: Dict[Path, str] = {real_path(out_dir / "timing.csv"): "timing.csv"}
    for task in tasks:
        targets = [(p, f"the mask of {task.path.name}") for p in task.outputs]
        if task.overlay is not None:
            targets.append((task.overlay, f"--overlay of {task.path.name}"))
        for target, what in targets:
            real = real_path(target)
            if real in inputs:
                raise InputError(f"{what} would overwrite the input file {real.name}; choose another output path",
                                 target)
            if real in claimed:
                raise InputError(f"{what} and {claimed[real]} would be the same file; choose another path", target)
            claimed[real] = what


def _manage_input_and_output_lists(input_path: Path, out_dir: Path, boxes: Optional[np.ndarray],
                                   opts: SegmentOptions, model: object = None) -> RunPlan:
    """Resolve and check everything before the model loads (module doc); raises InputError, creates
    nothing. In single-case mode the case is read here, and its boxes checked against it."""
    _check_options(opts)
    boxes = check_caller_boxes(boxes, opts.boxes_file)
    input_path = _series_root(input_path)
    tasks, folders, many = _plan_tasks(input_path, out_dir, opts)
    if many and opts.prompts is not None:
        raise InputError("--prompts replays one case: give a file (or one DICOM series), not a folder of cases",
                         input_path)
    inputs = _input_files(input_path, [t.path for t in tasks], opts, model)
    _check_collisions(tasks, out_dir, inputs)
    plan = RunPlan(tasks, out_dir, folders, inputs, boxes)
    if not many:
        task = tasks[0]
        try:
            task.case = read_case(task.path, series_uid=opts.series_uid, dicom_series=opts.dicom_series)
            _case_boxes(task.case, boxes, opts)
            mask_path_for(task.case, out_dir, task.key, opts.fmt)
            task.prepared = model_input(task.case, opts.modality, opts.window)
        except InputError:
            _unlink_quietly(_possible_outputs(task.path, task.key, out_dir), inputs)
            raise
    return plan


def _build_predictor(model: Union[str, "Predictor", None], opts: SegmentOptions,
                     created: Sequence[Path]) -> "Predictor":
    """``model`` itself when it is a ready predictor, else the one it names on ``opts.backend``; a model
    that fails to load leaves no empty output folder (``created``, removed deepest first)."""
    try:
        if isinstance(model, (str, type(None))) and opts.baseline:
            from .baseline import BaselinePredictor
            from .checkpoint import load_model

            return BaselinePredictor(load_model(model))
        if isinstance(model, (str, type(None))):
            from .predictor import Predictor

            return Predictor(model, backend=opts.backend, precision=opts.precision,
                             embedding_cache=opts.embedding_cache, threads=opts.threads)
        return model
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def predict_from_data_iterator(predictor: "Predictor", plan: RunPlan, opts: SegmentOptions,
                               on_message: Optional[Callable[[str], None]] = None) -> SegmentResult:
    """Run every planned case (one failing case is one line, the others go on), then write ``timing.csv``."""
    result = SegmentResult()

    def say(line: str) -> None:
        result.messages.append(line)
        if on_message is not None:
            on_message(line)

    for task in plan.tasks:
        _run_task(predictor, task, plan, opts, result, say)
    _write_timing_safely(plan.out_dir / "timing.csv", result)
    return result


def _load_task(task: CaseTask, plan: RunPlan, opts: SegmentOptions,
               say: Callable[[str], None]) -> Tuple[Case, Path, np.ndarray, np.ndarray]:
    """(case, mask path, model input, boxes) of a task; reads it unless the plan already did."""
    case = task.case if task.case is not None else read_case(task.path, series_uid=opts.series_uid)
    prepared, task.case, task.prepared = task.prepared, None, None  # free the memory as the run goes on
    out = mask_path_for(case, plan.out_dir, task.key, opts.fmt)
    if real_path(out) in plan.inputs:
        raise InputError(f"output {out.name} would overwrite an input file", task.path)
    used = _case_boxes(case, plan.boxes, opts)
    array, _, notice = prepared if prepared is not None else model_input(case, opts.modality, opts.window)
    if notice:
        say(f"notice: {task.path}: {notice}")
    return case, out, array, used


def _predict(predictor: "Predictor", case: Case, array: np.ndarray, boxes: np.ndarray,
             opts: SegmentOptions) -> np.ndarray:
    """The (H, W) or (D, H, W) uint8 label map of one case (value i = box i; a prompt script: object i)."""
    try:
        if opts.prompts is not None:
            from .prompts import replay

            session = predictor.session(array, lock_previous=False)  # the script decides the locks
            replay(session, opts.prompts)
            return np.array(session.labels, dtype=np.uint8)
        progress = opts.progress
        if case.is_3d:
            return predictor.predict_volume(array, boxes, progress=progress)
        predictor.set_image(array)
        return predictor.predict(boxes)
    except InputError as exc:
        raise exc.with_source(case.path)


def export_prediction(case: Case, mask: np.ndarray, out: Path, labels: Optional[Sequence[str]] = None) -> Path:
    """Write one case's label map to ``out`` (atomically, in the format of its name; :func:`write_mask`)."""
    return write_mask(case, mask, out, labels)


def _export_overlay(target: Path, case: Case, array: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> str:
    """Write the overlay PNG; returns what it shows (a volume: which slice, radiological for files with an
    orientation, :func:`medsam_lite.overlay.write_volume_overlay`)."""
    from .imageio import index_axes_lps
    from .overlay import write_overlay, write_volume_overlay

    if case.is_3d:
        return write_volume_overlay(target, array, mask, boxes, index_axes_lps(case))[1]
    write_overlay(target, array, mask, boxes)
    return "the image as stored"


def _run_task(predictor: "Predictor", task: CaseTask, plan: RunPlan, opts: SegmentOptions,
              result: SegmentResult, say: Callable[[str], None]) -> None:
    """One case: read, predict, export (mask, then overlay); a failure is one line and removes its outputs."""
    start = time.perf_counter()
    out: Optional[Path] = None
    table: List[Path] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case, out, array, used = _load_task(task, plan, opts, say)
            mask = _predict(predictor, case, array, used, opts)
            export_prediction(case, mask, out, opts.labels)
            if case.kind != "npz" or opts.labels or opts.colors or opts.prompts is not None:  # the challenge format names nothing itself
                table.append(write_label_table(label_table_path(plan.out_dir, task.key), len(used), opts.labels,
                                               opts.colors))
            else:  # no stale table of an earlier named run beside this mask
                _unlink_quietly([label_table_path(plan.out_dir, task.key)], plan.inputs)
        for w in caught:
            say(f"warning: {task.path}: {w.message}")
        elapsed = time.perf_counter() - start
        if task.overlay is not None:
            result.overlays.append((task.overlay, _export_overlay(task.overlay, case, array, mask, used)))
        result.outputs.append(out)
        result.tables.extend(table)
        result.times.append((task.path.name, elapsed, "ok"))
    except Exception as exc:  # one line per case; the other cases go on
        result.failures.append((task.path, _one_line(task.path, exc)))
        result.times.append((task.path.name, time.perf_counter() - start, "failed"))
        stale = ([out] if out is not None else []) + _possible_outputs(task.path, task.key, plan.out_dir)
        _unlink_quietly(stale + ([task.overlay] if task.overlay is not None else []), plan.inputs)


def _write_timing_safely(path: Path, result: SegmentResult) -> None:
    """``timing.csv`` of this run; when it cannot be written, its stale copy from an earlier run (which may
    say ``ok`` for a case that just failed) is removed and the problem is one line in ``result.errors``."""
    try:
        _write_timing(path, result.times)
    except OSError as exc:
        stale = ""
        try:
            if path.is_file():
                path.unlink()
                stale = " (its copy from an earlier run was removed)"
        except OSError:
            stale = " (its copy from an earlier run could not be removed and is stale)"
        result.errors.append(f"cannot write {exc.filename or path}: {exc.strerror or exc}{stale}")


def _write_timing(path: Path, rows: List[Tuple[str, float, str]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "seconds", "status"])
            writer.writerows((name, f"{sec:.3f}", status) for name, sec, status in rows)
