"""Reading images / volumes of medical formats and writing masks in the matching format.

Every reader returns arrays in one convention:

* 2D images: (H, W) or (H, W, 3), rows = y, columns = x;
* volumes: (D, H, W) = (z, y, x) voxel indices of the file's own grid, with ``spacing_zyx`` in mm.

Any failure to read raises :class:`InputError` naming the file. Writers are atomic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .io_utils import atomic_path

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass
class Case:
    """An image or volume with what is needed to write its mask back in the same frame.

    ``array``: (H, W[, 3]) for 2D, (D, H, W) for 3D. ``spacing_zyx``: voxel size in mm (3D) or None.
    ``meta``: reader-specific geometry (affine, ITK image, ...), used by :func:`write_mask`.
    """

    path: Path
    kind: str  # "npz", "image", "dicom", "nifti", "itk", "dicom_series"
    array: np.ndarray
    is_3d: bool
    spacing_zyx: Optional[Tuple[float, float, float]] = None
    boxes: Optional[np.ndarray] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _looks_like_dicom(path: Path) -> bool:
    """A DICOM file by suffix, or by the ``DICM`` marker at byte 128 (suffix-less series files)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _visible_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def is_dicom_series_dir(path: Path) -> bool:
    """True for a folder whose visible files are all DICOM (and there is at least one).

    A folder that also holds other files (``.npz`` cases, images, a README) is a folder of cases,
    read file by file; give ``dicom_series=True`` to :func:`read_case` to force a series read."""
    if not path.is_dir():
        return False
    files = _visible_files(path)
    return bool(files) and all(_looks_like_dicom(f) for f in files)


def is_supported(path: Path) -> bool:
    """True for files :func:`read_case` understands by suffix, and DICOM series folders."""
    if path.is_dir():
        return is_dicom_series_dir(path)
    return suffix_of(path) in (".npz",) + IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES


def read_case(path: PathLike, *, series_uid: Optional[str] = None, dicom_series: bool = False) -> Case:
    """Read any supported input; challenge ``.npz`` cases carry their boxes.

    A folder is read as one DICOM series (it must be one: :func:`is_dicom_series_dir`, or
    ``dicom_series=True``). A folder with several series is an error listing them unless
    ``series_uid`` picks one.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    suffix = suffix_of(path)
    try:
        if path.is_dir():
            if not (dicom_series or is_dicom_series_dir(path)):
                raise InputError("folder is not a DICOM series (it holds non-DICOM files)")
            return _read_dicom_series(path, series_uid)
        if suffix == ".npz":
            return read_npz_case(path)
        if suffix in NIFTI_SUFFIXES:
            return _read_nifti(path)
        if suffix in ITK_SUFFIXES:
            return _read_itk(path)
        if suffix in DICOM_SUFFIXES:
            return _read_dicom(path)
        if suffix in IMAGE_SUFFIXES:
            return _read_image(path)
    except InputError as exc:
        raise exc.with_source(path)
    except MemoryError as exc:
        raise InputError("not enough memory to read this file", path) from exc
    except Exception as exc:  # third-party readers raise many types on corrupt files
        raise InputError(f"cannot read file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                         path) from exc
    raise InputError(f"unsupported file type {suffix!r}", path)


# ------------------------------------------------------------------ challenge npz
def read_npz_case(path: Path) -> Case:
    """A challenge case: 2D ``imgs`` (H, W, 3) uint8 + ``boxes`` (N, 4); 3D (name starts with ``3D``)
    ``imgs`` (D, H, W) uint8 + ``boxes`` (N, 6) + optional ``spacing``."""
    is_3d = path.name.startswith("3D")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except Exception as exc:
        raise InputError(f"unreadable or truncated npz ({type(exc).__name__})", path) from exc
    for key in ("imgs", "boxes"):
        if key not in data:
            raise InputError(f"missing key {key!r} (has: {', '.join(sorted(data)) or 'nothing'})", path)
    imgs, boxes = data["imgs"], data["boxes"]
    if imgs.dtype != np.uint8:
        raise InputError(f"'imgs' must be uint8, got {imgs.dtype}", path)
    if is_3d and imgs.ndim != 3:
        raise InputError(f"3D case 'imgs' must be (D, H, W), got shape {imgs.shape}", path)
    if not is_3d and not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3)):
        raise InputError(f"2D case 'imgs' must be (H, W, 3), got shape {imgs.shape}", path)
    width = 6 if is_3d else 4
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise InputError(f"'boxes' must be (N, {width}) for a {'3D' if is_3d else '2D'} case, got {boxes.shape}", path)
    spacing = tuple(float(s) for s in data["spacing"]) if "spacing" in data else None
    return Case(path, "npz", imgs, is_3d, spacing, boxes.astype(np.float64))


def write_npz_segs(path: PathLike, segs: np.ndarray) -> None:
    """Write ``{"segs": uint8}`` atomically (compressed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, segs=segs.astype(np.uint8))


# ------------------------------------------------------------------ volumes
def _read_nifti(path: Path) -> Case:
    """3D NIfTI -> (z, y, x) volume. A 2D NIfTI ((x, y) or (x, y, 1)) is a 2D image (H, W) = (y, x):
    its boxes have 4 numbers, and its mask is written back as NIfTI with the input's shape and affine."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    meta = {"affine": img.affine, "header": img.header, "shape": shape}
    if data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 1):
        return Case(path, "nifti", np.ascontiguousarray(data.reshape(data.shape[:2]).T), False, meta=meta)
    if data.ndim != 3:
        raise InputError(f"expected a 2D image or 3D volume, got {data.ndim}D data of shape {data.shape}")
    zooms = img.header.get_zooms()[:3]
    return Case(path, "nifti", np.ascontiguousarray(data.transpose(2, 1, 0)), True,
                (float(zooms[2]), float(zooms[1]), float(zooms[0])), meta=meta)


def _sitk_case(path: Path, image: Any, kind: str) -> Case:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a grey volume, got {image.GetNumberOfComponentsPerPixel()} components per voxel")
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D volume, got {image.GetDimension()}D")
    sx, sy, sz = image.GetSpacing()
    return Case(path, kind, sitk.GetArrayFromImage(image), True, (sz, sy, sx), meta={"itk": image})


def _read_itk(path: Path) -> Case:
    import SimpleITK as sitk

    return _sitk_case(path, sitk.ReadImage(str(path)), "itk")


def _read_dicom_series(path: Path, series_uid: Optional[str] = None) -> Case:
    """One DICOM series -> (z, y, x) with ITK geometry; ``meta["files"]`` lists the slice files in z
    order (index z of the array is ``files[z]``) and ``meta["modality"]`` the Modality tag."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    uids = list(reader.GetGDCMSeriesIDs(str(path)))
    if not uids:
        raise InputError("folder holds no readable DICOM series")
    if series_uid is None and len(uids) > 1:
        listing = "; ".join(f"{uid} ({len(reader.GetGDCMSeriesFileNames(str(path), uid))} files)" for uid in uids)
        raise InputError(f"folder holds {len(uids)} DICOM series, choose one with --series UID: {listing}")
    uid = series_uid if series_uid is not None else uids[0]
    if uid not in uids:
        raise InputError(f"no DICOM series {uid!r} in this folder (has: {', '.join(uids)})")
    files = list(reader.GetGDCMSeriesFileNames(str(path), uid))
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    image = reader.Execute()
    case = _sitk_case(path, image, "dicom_series")
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    case.meta.update(files=[Path(f) for f in files], series_uid=uid, modality=modality or None)
    return case


# ------------------------------------------------------------------ 2D
def _read_tiff(path: Path) -> Case:
    """TIFF by its metadata: samples per pixel (3 or 4 = colour, alpha dropped) decide channels,
    pages (or a Z / T / Q axis) are slices. A grey multi-page TIFF is a volume (D, H, W); a colour
    multi-page TIFF is refused."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        page = tif.pages[0]
        samples = int(getattr(page, "samplesperpixel", 1) or 1)
        photometric = getattr(page, "photometric", None)
    if len(axes) != array.ndim:  # pragma: no cover - tifffile keeps them in step
        raise InputError(f"TIFF axes {axes!r} do not match its shape {array.shape}")
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    other = [i for i, a in enumerate(axes) if a not in "YXS"]
    depth = int(np.prod([array.shape[i] for i in other])) if other else 1
    rows, cols = array.shape[axes.index("Y")], array.shape[axes.index("X")]
    if "S" in axes:
        if samples not in (3, 4) or array.shape[-1] not in (3, 4):
            raise InputError(f"TIFF with {samples} samples per pixel is not supported (need 1, 3 or 4)")
        if depth > 1:
            raise InputError(f"colour TIFF with {depth} pages is not supported (a volume must be grey)")
        return Case(path, "image", np.ascontiguousarray(array.reshape(rows, cols, -1)[:, :, :3]), False,
                    meta={"photometric": str(photometric)})
    if depth > 1:
        return Case(path, "image", np.ascontiguousarray(array.reshape(depth, rows, cols)), True)
    image = array.reshape(rows, cols)
    if photometric is not None and int(photometric) == 0:  # MINISWHITE: 0 = white
        image = image.max() - image
    return Case(path, "image", np.ascontiguousarray(image), False)


def _read_image(path: Path) -> Case:
    if suffix_of(path) in (".tif", ".tiff"):
        return _read_tiff(path)
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError("cannot decode image (corrupt or not an image)")
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1].copy()  # BGR -> RGB
    elif array.ndim == 3 and array.shape[2] in (1, 2):
        array = array[:, :, 0].copy()  # grey (+ alpha)
    if array.ndim not in (2, 3):
        raise InputError(f"unsupported image shape {array.shape}")
    return Case(path, "image", array, False)


def _read_dicom(path: Path) -> Case:
    """One DICOM file: a 2D image, or a multi-frame grey image as a volume (frames = z).
    ``meta["modality"]`` holds the Modality tag (None when absent)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise InputError(f"DICOM file has no pixel data (SOP class {getattr(ds, 'SOPClassUID', '?')})")
    array = ds.pixel_array
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        array = array.max() - array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        array = array.astype(np.float32) * slope + intercept
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    is_rgb = getattr(ds, "SamplesPerPixel", 1) == 3
    meta = {"modality": str(getattr(ds, "Modality", "") or "").strip() or None}
    if frames > 1 and not is_rgb:
        return Case(path, "dicom", array, True, meta=meta)
    if frames > 1:
        raise InputError("multi-frame colour DICOM is not supported")
    return Case(path, "dicom", array, False, meta=meta)


# ------------------------------------------------------------------ intensity
def to_uint8(array: np.ndarray, window: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Compatibility wrapper over the one normalisation table (:mod:`medsam_lite.normalize`).

    uint8 input without a window is returned unchanged; with ``window=(level, width)`` the CT rule
    (clip to the window); otherwise (H, W, 3) colour per channel and grey by the generic rule
    (0.5 / 99.5 percentiles of the non-zero values, zeros stay 0). New code should call
    :func:`medsam_lite.normalize.normalize_to_uint8` with a modality.
    """
    from .normalize import normalize_to_uint8

    if array.dtype == np.uint8 and window is None:
        return array
    if window is not None:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError("image contains NaN or infinite values")
        return normalize_to_uint8(array, "CT", window)
    is_rgb = array.ndim == 3 and array.shape[-1] == 3
    return normalize_to_uint8(array, GENERIC_GREY, is_rgb=is_rgb)


GENERIC_GREY = "MR"
"""Table entry whose grey rule is the generic one (percentiles of non-zero values): every non-CT grey
modality of :data:`medsam_lite.normalize.MODALITY_TABLE` shares it."""


# ------------------------------------------------------------------ boxes from files
BOX_COLUMNS = {4: ("x_min", "y_min", "x_max", "y_max"), 6: ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")}
"""Canonical column order of 2D / 3D boxes."""

_HEADER_ALIASES = {"xmin": "x_min", "ymin": "y_min", "zmin": "z_min", "xmax": "x_max", "ymax": "y_max",
                   "zmax": "z_max", "x0": "x_min", "y0": "y_min", "z0": "z_min", "x1": "x_max", "y1": "y_max",
                   "z1": "z_max"}


def _header_name(cell: str) -> Optional[str]:
    key = cell.strip().strip('"').lower().replace(" ", "_")
    if key in BOX_COLUMNS[6]:
        return key
    return _HEADER_ALIASES.get(key.replace("_", ""))


def _parse_rows(rows: Sequence[Sequence[Any]], path: Path, first_row: int = 1) -> np.ndarray:
    """Rows of 4 or 6 numbers, all the same width -> (N, 4|6) float64; a bad row is named."""
    out: List[List[float]] = []
    for n, row in enumerate(rows, start=first_row):
        values = []
        for cell in row:
            try:
                value = float(cell)
            except (TypeError, ValueError):
                raise InputError(f"row {n}: {cell!r} is not a number", path) from None
            if not np.isfinite(value):
                raise InputError(f"row {n}: {cell!r} is not a finite number", path)
            values.append(value)
        if len(values) not in (4, 6):
            raise InputError(f"row {n}: {len(values)} values, a box needs 4 (2D) or 6 (3D)", path)
        if out and len(values) != len(out[0]):
            raise InputError(f"row {n}: {len(values)} values, earlier rows have {len(out[0])}", path)
        out.append(values)
    if not out:
        raise InputError("no boxes in the file", path)
    return np.asarray(out, dtype=np.float64)


def read_boxes_file(path: PathLike) -> np.ndarray:
    """Boxes from JSON or CSV; returns (N, 4) XYXY or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max].

    * JSON: ``[[...], ...]`` or ``{"boxes": [[...], ...]}``.
    * CSV: comma-, semicolon- or tab-separated rows of 4 or 6 numbers. A first row is a header only
      when every cell is a column name (``x_min, y_min, [z_min,] x_max, y_max, [z_max]``; also
      ``xmin`` / ``x0`` / ``x1`` ...), and then columns may come in any order. Any other row that is not
      all numbers is an error naming it (a typo in the first row is never taken as a header).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("boxes file not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read boxes file ({type(exc).__name__})", path) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc})", path) from None
        rows = data.get("boxes") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise InputError('JSON must be a list of boxes or {"boxes": [[...], ...]}', path)
        return _parse_rows(rows, path, first_row=0)
    import csv as _csv

    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError("no boxes in the file", path)
    delimiter = "\t" if "\t" in lines[0][1] else (";" if ";" in lines[0][1] and "," not in lines[0][1] else ",")
    parsed = [(n, [c.strip() for c in next(_csv.reader([ln], delimiter=delimiter))]) for n, ln in lines]
    parsed = [(n, [c for c in cells if c != ""] if delimiter == "\t" else cells) for n, cells in parsed]
    order: Optional[List[int]] = None
    names = [_header_name(c) for c in parsed[0][1]]
    if all(names) and len(set(names)) == len(names) and len(names) in (4, 6) \
            and set(names) == set(BOX_COLUMNS[len(names)]):
        order = [names.index(c) for c in BOX_COLUMNS[len(names)]]
        parsed = parsed[1:]
    boxes = np.zeros((0, 4))
    for n, cells in parsed:
        row = _parse_rows([cells], path, first_row=n)
        if order is not None:
            if row.shape[1] != len(order):
                raise InputError(f"row {n}: {row.shape[1]} values, the header names {len(order)}", path)
            row = row[:, order]
        if len(boxes) and row.shape[1] != boxes.shape[1]:
            raise InputError(f"row {n}: {row.shape[1]} values, earlier rows have {boxes.shape[1]}", path)
        boxes = row if not len(boxes) else np.vstack([boxes, row])
    if not len(boxes):
        raise InputError("no boxes in the file (only a header)", path)
    return boxes


# ------------------------------------------------------------------ writing masks
OUTPUT_FORMATS = ("auto", "nifti", "dicom-seg")
"""Mask formats for volumes: ``auto`` = the input's own format (NIfTI for DICOM series / TIFF stacks)."""


def mask_path_for(case: Case, out_dir: Path, key: Optional[str] = None, fmt: str = "auto") -> Path:
    """Where the mask of ``case`` goes: same name for npz, ``<key>_mask.<ext>`` otherwise.

    ``key`` defaults to the input name without its suffix; callers pass ``<stem>_<ext>`` when two
    inputs of a folder share a stem (``a.png`` + ``a.bmp`` -> ``a_png_mask.png``, ``a_bmp_mask.png``).
    ``fmt="dicom-seg"`` (DICOM series input only) gives ``<key>_seg.dcm``.
    """
    if case.kind == "npz":
        return out_dir / case.path.name
    suffix = suffix_of(case.path)
    stem = case.path.name[: len(case.path.name) - len(suffix)] if suffix else case.path.name
    key = key or stem
    if fmt == "dicom-seg":
        if case.kind != "dicom_series":
            raise InputError("--format dicom-seg needs a DICOM series folder as input", case.path)
        return out_dir / f"{key}_seg.dcm"
    if case.kind == "nifti":
        ext = suffix
    elif case.kind == "itk":
        ext = ".mha" if suffix == ".mhd" else (".nrrd" if suffix == ".nhdr" else suffix)
    elif case.kind == "dicom_series" or (case.is_3d and case.kind in ("dicom", "image")) or fmt == "nifti":
        ext = ".nii.gz"
    elif suffix in (".tif", ".tiff"):
        ext = suffix
    else:
        ext = ".png"  # lossless, also for JPEG and DICOM inputs
    return out_dir / f"{key}_mask{ext}"


def write_mask(case: Case, mask: np.ndarray, path: PathLike, labels: Optional[Sequence[str]] = None) -> Path:
    """Write a uint8 label map (same shape as the case without channels) atomically, in the format of
    ``path``: NIfTI keeps the input's affine and header (and a 2D NIfTI its 2D shape), MHA/NRRD /
    DICOM series keep ITK geometry (origin, spacing, direction); ``*_seg.dcm`` is a DICOM-SEG
    (:func:`write_dicom_seg`, ``labels`` = segment names, label i -> ``labels[i-1]``)."""
    path = Path(path)
    mask = mask.astype(np.uint8)
    suffix = suffix_of(path)
    if path.name.endswith("_seg.dcm"):
        return write_dicom_seg(case, mask, path, labels)
    with atomic_path(path) as tmp:
        if case.kind == "npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, segs=mask)
        elif suffix in NIFTI_SUFFIXES and case.kind == "nifti":
            import nibabel as nib

            header = case.meta["header"].copy()
            header.set_data_dtype(np.uint8)
            header["scl_slope"], header["scl_inter"] = 1, 0
            data = mask.transpose(2, 1, 0) if case.is_3d else mask.T
            data = data.reshape(case.meta.get("shape", data.shape)) if data.size == np.prod(
                case.meta.get("shape", data.shape)) else data
            nib.save(nib.Nifti1Image(data, case.meta["affine"], header), str(tmp))
        elif "itk" in case.meta or suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
            import SimpleITK as sitk

            image = sitk.GetImageFromArray(mask)
            if "itk" in case.meta:
                image.CopyInformation(case.meta["itk"])
            sitk.WriteImage(image, str(tmp), True)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(str(tmp), mask)
        else:
            import cv2

            if not cv2.imwrite(str(tmp), mask):
                raise InputError("could not encode PNG mask", path)
    return path


def write_dicom_seg(case: Case, mask: np.ndarray, path: PathLike, labels: Optional[Sequence[str]] = None) -> Path:
    """A binary DICOM-SEG of the (D, H, W) label map of a DICOM series case, written atomically.

    One segment per label id 1..max (a box), named ``labels[i-1]`` (default ``box <i>``), referencing
    the source series' SOP instances frame by frame (slice z of the mask is ``case.meta["files"][z]``);
    empty frames are omitted. The conventions 3D Slicer / dcmqi read: ``SegmentationType BINARY``, one
    segment per label with ``SegmentLabel``, algorithm type AUTOMATIC (medsam-lite).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from . import __version__ as version

    path = Path(path)
    files = case.meta.get("files")
    if case.kind != "dicom_series" or not files:
        raise InputError("DICOM-SEG output needs a DICOM series input", case.path)
    if mask.shape[0] != len(files):
        raise InputError(f"mask has {mask.shape[0]} slices, the series {len(files)}", case.path)
    sources = [pydicom.dcmread(str(f)) for f in files]
    n_labels = int(mask.max())
    if n_labels == 0:
        raise InputError("every mask is empty: nothing to store in a DICOM-SEG", case.path)
    names = list(labels or [])
    algorithm = hd.AlgorithmIdentificationSequence(name="medsam-lite", version=str(version),
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=names[i - 1] if i - 1 < len(names) else f"box {i}",
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for i in range(1, n_labels + 1)
    ]
    onehot = np.stack([mask == i for i in range(1, n_labels + 1)], axis=-1).astype(np.uint8)
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=onehot, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(
            getattr(first, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="medsam-lite", manufacturer_model_name="medsam-lite", software_versions=str(version),
        device_serial_number="0", series_description="medsam-lite segmentation", omit_empty_frames=True)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path
