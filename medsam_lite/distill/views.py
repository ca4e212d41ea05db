"""Fresh views for online distillation (``distill --online-views``): every item is a view no step saw before.

Sources (:data:`TRAINING_SOURCES`) are the files of the shared data folder that the distillation data
list (``docs/distill/data_list.csv``) was cut from; the held-out files of
:mod:`medsam_lite.distill.fidelity` never appear (a test checks). They are read either from the
shared data folder or from a *pack* (:func:`write_pack`: one compressed ``.npz`` per source, a
``views_pack.json`` manifest with SHA-256s, at most 64 MiB) so that a lent machine needs only the pack.

A view (:meth:`ViewSampler.view`) is determined by integer keys (seed, epoch, index); it is drawn as

* modality uniformly among the sources' modalities, then a source uniformly within it;
* volume (D, H, W) with ``spacing_zyx`` in mm: a plane through a random point near the centre, normal
  either near a volume axis (p = 0.5, tilt up to 20 degrees) or uniform on the sphere, field of view
  40-100 % of the volume's largest physical extent, aspect 3/4-4/3, sampled with
  ``scipy.ndimage.map_coordinates`` (linear) at isotropic in-plane pixels (physical spacing respected);
  with p = 0.3 a thin slab: the mean of 2-4 parallel planes one voxel apart;
* multi-frame images (X-ray angiography): a random frame, then as a 2D image;
* intensity: CT a random preset of :data:`medsam_lite.normalize.CT_WINDOWS` (abdomen, chest = lung,
  bone, brain) with level +-10 % and width x 0.8-1.25 jitter (:func:`normalize.window_to_unit`);
  other grey modalities percentile clipping with jittered percentiles (low 0-2 %, high 98-100 % of the
  source's non-zero values, zeros stay 0, :func:`normalize.scale_to_unit`); colour per channel
  (:func:`normalize.rgb_to_unit`); then uint8 (:func:`normalize.unit_to_uint8`) as at inference;
* 2D images (and the volume planes): albumentations random resized crop (area 25-100 %), rotation
  (+-30 degrees) and rot90, flips, gamma, Gaussian noise, Gaussian blur;
* grey -> RGB and the exact model-frame transform :func:`medsam_lite.transforms.preprocess_image`
  (longest side 256, min-max, zero pad bottom / right).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from medsam_lite.encoders.weights import sha256_of
from medsam_lite.errors import InputError
from medsam_lite.normalize import (CT_WINDOWS, canonical_modality, rgb_to_unit, scale_to_unit, unit_to_uint8,
                                   window_to_unit)

PathLike = Union[str, Path]
PACK_MANIFEST = "views_pack.json"
PACK_LIMIT_BYTES = 64 * 1024 * 1024
VIEWS_VERSION = 1
CT_PRESETS = ("abdomen", "chest", "bone", "brain")
"""CT windows drawn for views (keys of ``normalize.CT_WINDOWS``; ``chest`` is the lung window)."""


@dataclass(frozen=True)
class ViewSource:
    """One training source: ``path`` relative to the shared data folder, modality, kind
    (``volume``: (D, H, W) with spacing; ``frames``: a multi-frame 2D series; ``image``: one 2D image)."""

    name: str
    modality: str
    path: str
    kind: str


#: The files ``docs/distill/data_list.csv`` was made from (``scripts/recipe/prep_{volumes,images}.yaml``).
TRAINING_SOURCES: Tuple[ViewSource, ...] = (
    ViewSource("ct_organs", "CT", "ct_organs/ct.nii.gz", "volume"),
    ViewSource("ct_aorta", "CT", "ct_aorta/ct.nii.gz", "volume"),
    ViewSource("lung1", "CT", "lesions/lung1_image.nrrd", "volume"),
    ViewSource("brain1", "MR", "lesions/brain1_image.nrrd", "volume"),
    ViewSource("colin27", "MR", "brain_colin27/t1.nii.gz", "volume"),
    ViewSource("mr_brain_pd", "MR", "unlabeled/mr_brain_pd_series", "volume"),
    ViewSource("xa_angio", "XRay", "unlabeled/xa_coronary_angio.dcm", "frames"),
    ViewSource("xray", "XRay", "unlabeled/xray_chest_cr.dcm", "image"),
    ViewSource("ct_abdomen_slice", "CT", "unlabeled/ct_abdomen_slice.dcm", "image"),
    ViewSource("ct_chest_slice", "CT", "unlabeled/ct_chest_slice.dcm", "image"),
    ViewSource("ct_small", "CT", "unlabeled/ct_small.dcm", "image"),
    ViewSource("mr_shoulder", "MR", "unlabeled/mr_shoulder.dcm", "image"),
    ViewSource("fundus", "Fundus", "unlabeled/fundus_retina.jpg", "image"),
    ViewSource("histology_he", "Histopathology", "unlabeled/histology_he.png", "image"),
    ViewSource("histology_ihc", "Histopathology", "unlabeled/microscopy_ihc.png", "image"),
    ViewSource("microscopy", "Microscopy", "unlabeled/microscopy_cell.png", "image"),
)


@dataclass
class SourceArray:
    """A loaded source. ``array``: (D, H, W) volume / frames, (H, W) grey or (H, W, 3) colour image, in the
    file's values (CT in HU); ``spacing_zyx`` in mm for volumes; ``bounds``: percentiles 0..3 and 97..100
    (step 0.5) of the non-zero values for percentile jitter (grey non-CT)."""

    name: str
    modality: str
    kind: str
    array: np.ndarray
    spacing_zyx: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    bounds: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_rgb(self) -> bool:
        return self.kind == "image" and self.array.ndim == 3 and self.array.shape[-1] == 3


# ------------------------------------------------------------------ reading sources
def _percentile_table(array: np.ndarray) -> Dict[str, np.ndarray]:
    values = array[array != 0]
    if values.size > 2_000_000:  # a fixed subsample: the table is a property of the file, not of the run
        values = values[np.random.default_rng(0).choice(values.size, 2_000_000, replace=False)]
    if values.size == 0:
        values = np.zeros(1)
    return {"low": np.percentile(values, np.arange(0.0, 3.01, 0.5)),
            "high": np.percentile(values, np.arange(97.0, 100.01, 0.5))}


def _finish(name: str, modality: str, kind: str, array: np.ndarray, spacing: Optional[Sequence[float]]) -> SourceArray:
    modality = canonical_modality(modality)
    source = SourceArray(name, modality, kind, array, tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0))))
    if modality != "CT" and not source.is_rgb:
        source.bounds = _percentile_table(array)
    return source


def read_source(shared: PathLike, source: ViewSource) -> SourceArray:
    """Read one :class:`ViewSource` from the shared data folder (``medsam_lite.imageio.read_case``)."""
    from medsam_lite.imageio import read_case

    case = read_case(Path(shared) / source.path)
    array = np.asarray(case.array)
    if source.kind == "volume" and array.ndim != 3:
        raise InputError(f"expected a volume for view source {source.name}, got shape {array.shape}", source.path)
    spacing = case.spacing_zyx if source.kind == "volume" else None
    return _finish(source.name, source.modality, source.kind, array, spacing)


def held_out_paths() -> List[str]:
    """Shared-data paths the fidelity report holds out (``fidelity.HELD_OUT``) and the folders its
    labelled object cases read (nuclei2d, mni152, mr_organs, lesions/breast1)."""
    from .fidelity import HELD_OUT

    paths = [h.path for h in HELD_OUT if not h.path.startswith("pydicom:")]
    return paths + ["nuclei2d/", "mni152/", "mr_organs/", "lesions/breast1"]


def check_not_held_out(path: str) -> None:
    """InputError when a shared-data relative ``path`` is (inside) a held-out source."""
    norm = path.replace(os.sep, "/")
    for held in held_out_paths():
        if norm == held or norm.startswith(held.rstrip("/") + "/") or (held.endswith("breast1") and held in norm):
            raise InputError("is a held-out evaluation source and must never be distilled on", path)


# ------------------------------------------------------------------ packs
def write_pack(sources: Sequence[SourceArray], out_dir: PathLike, limit_bytes: int = PACK_LIMIT_BYTES,
               origin: Optional[Dict[str, str]] = None) -> Path:
    """Write a view pack: ``<name>.npz`` (compressed ``array``, ``spacing_zyx``) per source and
    ``views_pack.json`` (name, modality, kind, file, bytes, sha256 per source; total bytes). Built in a
    temporary folder beside ``out_dir`` and renamed into place; over ``limit_bytes`` in all -> InputError
    and nothing is left behind. An existing non-empty ``out_dir`` is refused."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError("pack folder exists and is not empty", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        entries, total = [], 0
        for src in sources:
            path = tmp / f"{src.name}.npz"
            np.savez_compressed(path, array=src.array, spacing_zyx=np.asarray(src.spacing_zyx, np.float64))
            size = path.stat().st_size
            total += size
            if total > limit_bytes:
                raise InputError(f"pack would exceed {limit_bytes / 2 ** 20:.0f} MiB (at {src.name}: "
                                 f"{total / 2 ** 20:.1f} MiB); pack fewer sources", out)
            entries.append({"name": src.name, "modality": src.modality, "kind": src.kind, "file": path.name,
                            "bytes": size, "sha256": sha256_of(path), "shape": list(src.array.shape),
                            "dtype": str(src.array.dtype), "origin": (origin or {}).get(src.name)})
        manifest = {"format": "medsam-lite views pack", "version": VIEWS_VERSION, "total_bytes": total,
                    "limit_bytes": limit_bytes, "sources": entries}
        (tmp / PACK_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def pack_shared(shared: PathLike, out_dir: PathLike, sources: Sequence[ViewSource] = TRAINING_SOURCES,
                limit_bytes: int = PACK_LIMIT_BYTES) -> Path:
    """Pack the training sources of the shared data folder (held-out paths refused)."""
    for s in sources:
        check_not_held_out(s.path)
    arrays = [read_source(shared, s) for s in sources]
    return write_pack(arrays, out_dir, limit_bytes, origin={s.name: s.path for s in sources})


def is_pack(path: PathLike) -> bool:
    return (Path(path) / PACK_MANIFEST).is_file()


def read_pack(path: PathLike) -> List[SourceArray]:
    """Load every source of a pack, checking each file's SHA-256 (InputError naming the file)."""
    root = Path(path)
    try:
        manifest = json.loads((root / PACK_MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable views pack ({exc})", root / PACK_MANIFEST) from None
    out = []
    for entry in manifest.get("sources", []):
        file = root / entry["file"]
        if not file.is_file():
            raise InputError("pack file missing", file)
        if sha256_of(file) != entry["sha256"]:
            raise InputError("SHA-256 does not match the pack manifest (corrupt or changed file)", file)
        with np.load(file, allow_pickle=False) as z:
            array, spacing = z["array"], tuple(float(s) for s in z["spacing_zyx"])
        out.append(_finish(entry["name"], entry["modality"], entry["kind"], array, spacing))
    if not out:
        raise InputError("views pack lists no sources", root / PACK_MANIFEST)
    return out


def open_sources(path: PathLike) -> List[SourceArray]:
    """Sources of a views pack, or :data:`TRAINING_SOURCES` read from a shared data folder."""
    root = Path(path)
    if is_pack(root):
        return read_pack(root)
    if root.is_dir() and (root / "unlabeled").is_dir():
        return [read_source(root, s) for s in TRAINING_SOURCES]
    raise InputError(f"--online-views needs a views pack ({PACK_MANIFEST}) or the shared data folder", root)


# ------------------------------------------------------------------ drawing views
@dataclass
class ViewConfig:
    """Probabilities and ranges of :class:`ViewSampler` (module docstring)."""

    axis_aligned_p: float = 0.5
    max_tilt_deg: float = 20.0
    fov_range: Tuple[float, float] = (0.4, 1.0)
    slab_p: float = 0.3
    max_plane_px: int = 320
    crop_scale: Tuple[float, float] = (0.25, 1.0)
    rotate_deg: float = 30.0
    noise_p: float = 0.3
    blur_p: float = 0.2
    gamma_p: float = 0.5

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _plane_normal(rng: np.random.Generator, cfg: ViewConfig) -> np.ndarray:
    """Unit normal (z, y, x): near a random axis (tilted) or uniform on the sphere."""
    if rng.random() < cfg.axis_aligned_p:
        axis = np.eye(3)[int(rng.integers(3))]
        tilt = math.radians(rng.uniform(0.0, cfg.max_tilt_deg))
        other = _unit(np.cross(axis, _unit(rng.normal(size=3))))
        return _unit(math.cos(tilt) * axis + math.sin(tilt) * other)
    return _unit(rng.normal(size=3))


def oblique_plane(volume: np.ndarray, spacing_zyx: Sequence[float], rng: np.random.Generator,
                  cfg: ViewConfig = ViewConfig()) -> np.ndarray:
    """A random (h, w) float32 plane (or thin-slab mean) through a (D, H, W) volume, in physical space.

    Points are placed in mm (``spacing_zyx``), converted to voxel indices and interpolated linearly;
    outside the volume the volume's minimum is used. Pixel size: field of view / output side."""
    from scipy.ndimage import map_coordinates

    spacing = np.asarray(spacing_zyx, np.float64)
    extent = np.asarray(volume.shape, np.float64) * spacing
    normal = _plane_normal(rng, cfg)
    u = _unit(np.cross(normal, _unit(rng.normal(size=3))))
    v = np.cross(normal, u)
    centre = extent / 2.0 + rng.uniform(-0.3, 0.3, 3) * extent
    fov = rng.uniform(*cfg.fov_range) * float(extent.max())
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(4 / 3)))
    side = min(cfg.max_plane_px, max(32, int(round(fov / float(spacing.min())))))
    h, w = (side, max(16, int(side / aspect))) if aspect > 1 else (max(16, int(side * aspect)), side)
    px = fov / side
    ii = (np.arange(h) - h / 2.0) * px
    jj = (np.arange(w) - w / 2.0) * px
    grid = centre[:, None, None] + u[:, None, None] * ii[None, :, None] + v[:, None, None] * jj[None, None, :]
    layers = int(rng.integers(2, 5)) if rng.random() < cfg.slab_p else 1
    offsets = (np.arange(layers) - (layers - 1) / 2.0) * float(spacing.min())
    fill = float(volume.min())
    planes = [map_coordinates(volume, (grid + normal[:, None, None] * off) / spacing[:, None, None] - 0.5,
                              order=1, mode="constant", cval=fill, output=np.float32) for off in offsets]
    return np.mean(planes, axis=0).astype(np.float32)


def _intensity(image: np.ndarray, source: SourceArray, rng: np.random.Generator) -> np.ndarray:
    """Grey / colour values -> uint8 with a random CT window or jittered percentiles (module docstring)."""
    if source.is_rgb:
        return unit_to_uint8(rgb_to_unit(image))
    if source.modality == "CT":
        level, width = CT_WINDOWS[CT_PRESETS[int(rng.integers(len(CT_PRESETS)))]]
        level += rng.uniform(-0.1, 0.1) * width
        width *= math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        return unit_to_uint8(window_to_unit(image, (level, width)))
    lo = float(source.bounds["low"][int(rng.integers(len(source.bounds["low"])))])
    hi = float(source.bounds["high"][int(rng.integers(len(source.bounds["high"])))])
    if hi <= lo:
        hi = lo + 1.0
    return unit_to_uint8(scale_to_unit(image, lo, hi, keep_zero=True))


def _augment_2d(image: np.ndarray, rng: np.random.Generator, cfg: ViewConfig) -> np.ndarray:
    import albumentations as A

    h, w = image.shape[:2]
    pipeline = A.Compose([
        A.RandomResizedCrop(size=(h, w), scale=cfg.crop_scale, ratio=(0.75, 4 / 3), p=0.7),
        A.Affine(rotate=(-cfg.rotate_deg, cfg.rotate_deg), p=0.5),
        A.RandomRotate90(p=0.5),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomGamma(gamma_limit=(70, 150), p=cfg.gamma_p),
        A.GaussNoise(std_range=(0.01, 0.05), p=cfg.noise_p),
        A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur_p),
    ], seed=int(rng.integers(2 ** 31)))
    return pipeline(image=np.ascontiguousarray(image))["image"]


class ViewSampler:
    """Draws model-frame views from loaded sources, balanced per modality (module docstring).

    Args:
        sources: loaded sources (:func:`open_sources`).
        cfg: view settings.
    """

    def __init__(self, sources: Sequence[SourceArray], cfg: Optional[ViewConfig] = None) -> None:
        if not sources:
            raise InputError("no view sources")
        self.sources, self.cfg = list(sources), cfg or ViewConfig()
        self.modalities = sorted({s.modality for s in self.sources})
        self.by_modality = {m: [s for s in self.sources if s.modality == m] for m in self.modalities}

    def describe(self) -> Dict[str, Any]:
        return {"version": VIEWS_VERSION, "config": self.cfg.to_dict(),
                "sources": {m: [s.name for s in v] for m, v in self.by_modality.items()}}

    def draw(self, *keys: int) -> Tuple[np.ndarray, str]:
        """((h, w[, 3]) uint8 normalised view before the model-frame transform, source name) for ``keys``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))
        group = self.by_modality[self.modalities[int(rng.integers(len(self.modalities)))]]
        source = group[int(rng.integers(len(group)))]
        if source.kind == "volume":
            image = oblique_plane(source.array, source.spacing_zyx, rng, self.cfg)
        elif source.kind == "frames":
            image = source.array[int(rng.integers(source.array.shape[0]))]
        else:
            image = source.array
        image = _intensity(image, source, rng)
        return _augment_2d(image, rng, self.cfg), source.name

    def view(self, *keys: int) -> np.ndarray:
        """(3, 256, 256) float32 [0, 1] padded model-frame input (``transforms.preprocess_image``) for ``keys``."""
        from medsam_lite.transforms import preprocess_image

        image, _ = self.draw(*keys)
        tensor, _ = preprocess_image(image)
        return tensor[0].numpy()


__all__ = ["ViewSource", "TRAINING_SOURCES", "SourceArray", "ViewConfig", "ViewSampler", "read_source", "write_pack",
           "pack_shared", "read_pack", "open_sources", "is_pack", "held_out_paths", "check_not_held_out",
           "oblique_plane", "PACK_MANIFEST", "PACK_LIMIT_BYTES", "CT_PRESETS"]
