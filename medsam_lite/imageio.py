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
from typing import Any, Dict, Optional, Tuple, Union

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


def is_supported(path: Path) -> bool:
    """True for files / folders :func:`read_case` understands."""
    if path.is_dir():
        return any(p.suffix.lower() in DICOM_SUFFIXES for p in path.iterdir())
    return suffix_of(path) in (".npz",) + IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES


def read_case(path: PathLike) -> Case:
    """Read any supported input; challenge ``.npz`` cases carry their boxes."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    suffix = suffix_of(path)
    try:
        if path.is_dir():
            return _read_dicom_series(path)
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
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"expected a 3D volume, got {data.ndim}D data of shape {data.shape}")
    zooms = img.header.get_zooms()[:3]
    return Case(path, "nifti", np.ascontiguousarray(data.transpose(2, 1, 0)), True,
                (float(zooms[2]), float(zooms[1]), float(zooms[0])), meta={"affine": img.affine, "header": img.header})


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


def _read_dicom_series(path: Path) -> Case:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(path))
    if not files:
        raise InputError("folder holds no readable DICOM series")
    reader.SetFileNames(files)
    return _sitk_case(path, reader.Execute(), "dicom_series")


# ------------------------------------------------------------------ 2D
def _read_image(path: Path) -> Case:
    if suffix_of(path) in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(str(path))
    else:
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise InputError("cannot decode image (corrupt or not an image)")
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]
        if array.ndim == 3:
            array = array[:, :, ::-1].copy()  # BGR -> RGB
    array = np.squeeze(array)
    if array.ndim == 3 and array.shape[2] not in (3,) and array.shape[0] not in (3,):
        return Case(path, "image", array, True)  # multi-page grey TIFF = volume (D, H, W)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim not in (2, 3):
        raise InputError(f"unsupported image shape {array.shape}")
    return Case(path, "image", array, False)


def _read_dicom(path: Path) -> Case:
    import pydicom

    ds = pydicom.dcmread(str(path))
    array = ds.pixel_array
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        array = array.max() - array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        array = array.astype(np.float32) * slope + intercept
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    is_rgb = getattr(ds, "SamplesPerPixel", 1) == 3
    if frames > 1 and not is_rgb:
        return Case(path, "dicom", array, True)
    if frames > 1:
        raise InputError("multi-frame colour DICOM is not supported")
    return Case(path, "dicom", array, False)


# ------------------------------------------------------------------ intensity
def to_uint8(array: np.ndarray, window: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Map intensities to uint8 0..255.

    uint8 input is returned unchanged. With ``window=(level, width)`` (CT in HU) values are clipped
    to ``[level - width/2, level + width/2]``; otherwise to the 0.5 and 99.5 percentiles of the
    array, then scaled linearly.
    """
    if array.dtype == np.uint8 and window is None:
        return array
    data = array.astype(np.float64)
    if not np.isfinite(data).all():
        raise InputError("image contains NaN or infinite values")
    if window is not None:
        lo, hi = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
    else:
        lo, hi = np.percentile(data, [0.5, 99.5])
        if hi <= lo:
            lo, hi = float(data.min()), float(data.max())
    scaled = (np.clip(data, lo, hi) - lo) / max(hi - lo, 1e-8) * 255.0
    return np.round(scaled).astype(np.uint8)


# ------------------------------------------------------------------ boxes from files
def read_boxes_file(path: PathLike) -> np.ndarray:
    """Boxes from JSON (``[[...], ...]`` or ``{"boxes": [[...], ...]}``) or CSV (rows of 4 or 6 numbers,
    optional header). Returns (N, 4) or (N, 6) float64."""
    path = Path(path)
    if not path.is_file():
        raise InputError("boxes file not found", path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            rows = data["boxes"] if isinstance(data, dict) else data
        else:
            rows = []
            for line in path.read_text().splitlines():
                cells = [c.strip() for c in line.replace(";", ",").split(",") if c.strip()]
                if not cells:
                    continue
                try:
                    rows.append([float(c) for c in cells])
                except ValueError:
                    if rows:
                        raise
        arr = np.asarray(rows, dtype=np.float64)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot parse boxes ({type(exc).__name__}: {exc})", path) from exc
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise InputError(f"boxes must be rows of 4 (2D) or 6 (3D) numbers, got shape {arr.shape}", path)
    return arr


# ------------------------------------------------------------------ writing masks
def mask_path_for(case: Case, out_dir: Path) -> Path:
    """Where the mask of ``case`` goes: same name for npz, ``<stem>_mask.<ext>`` otherwise."""
    if case.kind == "npz":
        return out_dir / case.path.name
    suffix = suffix_of(case.path)
    stem = case.path.name[: len(case.path.name) - len(suffix)] if suffix else case.path.name
    if case.kind == "nifti":
        ext = suffix
    elif case.kind == "itk":
        ext = ".mha" if suffix == ".mhd" else (".nrrd" if suffix == ".nhdr" else suffix)
    elif case.kind == "dicom_series" or (case.is_3d and case.kind in ("dicom", "image")):
        ext = ".nii.gz"
    elif suffix in (".tif", ".tiff"):
        ext = suffix
    else:
        ext = ".png"  # lossless, also for JPEG and DICOM inputs
    return out_dir / f"{stem}_mask{ext}"


def write_mask(case: Case, mask: np.ndarray, path: PathLike) -> Path:
    """Write a uint8 label map (same shape as the case without channels) atomically, in the matching
    format: NIfTI keeps the input's affine and header, MHA/NRRD / DICOM series keep ITK geometry."""
    path = Path(path)
    mask = mask.astype(np.uint8)
    suffix = suffix_of(path)
    with atomic_path(path) as tmp:
        if case.kind == "npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, segs=mask)
        elif suffix in NIFTI_SUFFIXES and case.kind == "nifti":
            import nibabel as nib

            header = case.meta["header"].copy()
            header.set_data_dtype(np.uint8)
            header["scl_slope"], header["scl_inter"] = 1, 0
            nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), case.meta["affine"], header), str(tmp))
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
