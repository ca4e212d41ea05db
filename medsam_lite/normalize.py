"""Modality-aware intensity normalization to [0, 1]: the ONE lookup table for data prep.

Rules (:data:`MODALITY_TABLE`, :data:`CT_WINDOWS`):

* **CT** (grey): clip to a window ``[level - width/2, level + width/2]`` in HU, scale to [0, 1].
  Presets: abdomen L40/W400, chest (lung) L-600/W1500, brain L40/W80, bone L400/W1800, or a custom
  ``"level,width"``. Without a window the table's default (abdomen, as MedSAM's CT preprocessing)
  is used and recorded in the manifest's ``normalization`` column, so it is never silent.
  *Bone*: L400/W1800 spans [-500, 1300] HU: wide enough to keep cortical bone (~1000-1900 HU) from
  saturating early while marrow and the surrounding soft tissue stay distinguishable; the narrower
  radiology preset L300/W1500 is available as ``--window 300,1500``.
* **MR, PET, NM, ultrasound, X-ray, microscopy, OCT ... (grey)**: clip to the 0.5 and 99.5
  percentiles of the *non-zero* voxels of the whole volume / image, scale to [0, 1] and keep zero
  voxels at 0 (MedSAM's ``pre_CT_MR.py``). A constant image becomes 0.
* **Colour (H, W, 3) images, any modality**: scaled per channel. uint8 channels are divided by 255
  (the bytes are stored unchanged); other dtypes are min-max scaled channel by channel.

Unknown modality names are an :class:`InputError` listing the known ones, never a silent default.

Inference input (:func:`model_input_uint8`): the one mapping of ``medsam-lite segment`` / ``serve`` and of
``Predictor(modality=..., window=...)``: a modality -> its rule above; none -> uint8 unchanged, other dtypes by
the generic grey rule (with a notice when the values look like HU).

CT sanity check (:func:`check_ct_range`): a CT volume must hold finite values inside
[-3100, 30000] HU after the reader's rescale. -3024 / -2048 / -2000 are real "outside the scan
field" fill values and extended-scale metal reaches ~30000, but an int16 wrap-around (-32768 ...)
or negatives read as unsigned (~64000) fall outside, so the case is refused instead of producing a
black / white volume.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np

from medsam_lite.errors import InputError

Window = Tuple[float, float]
"""(level, width) in HU."""

CT_WINDOWS: Dict[str, Window] = {
    "abdomen": (40.0, 400.0),
    "chest": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}
"""CT window presets, (level, width) in HU."""

CT_HU_RANGE: Tuple[float, float] = (-3100.0, 30000.0)
"""Plausible HU values; anything outside means overflow or a wrong rescale (see module doc)."""

PERCENTILES: Tuple[float, float] = (0.5, 99.5)
"""Clip percentiles (of non-zero voxels) for grey non-CT modalities."""


@dataclass(frozen=True)
class ModalityRule:
    """How grey images of one modality are normalized (colour images are always per channel)."""

    name: str
    grey: str  # "window" or "percentile"
    default_window: Optional[str] = None
    aliases: Tuple[str, ...] = ()


MODALITY_TABLE: Tuple[ModalityRule, ...] = (
    ModalityRule("CT", "window", "abdomen", ("ct", "cta", "cect", "ncct")),
    ModalityRule("MR", "percentile", None,
                 ("mr", "mri", "t1", "t2", "t1w", "t2w", "t1gd", "t1ce", "t1c", "flair", "adc", "dwi", "pd",
                  "swi", "dce", "hbv", "cine")),
    ModalityRule("PET", "percentile", None, ("pet", "petct")),
    ModalityRule("NM", "percentile", None, ("nm", "spect", "nuclearmedicine", "scintigraphy")),
    ModalityRule("US", "percentile", None, ("us", "ultrasound", "echo", "echocardiography")),
    ModalityRule("XRay", "percentile", None,
                 ("xray", "cxr", "cr", "dx", "xa", "angiography", "radiograph", "mammography", "mammo", "mg")),
    ModalityRule("Microscopy", "percentile", None,
                 ("microscopy", "microscope", "fluorescence", "fluorescencemicroscopy", "em", "cell", "nuclei")),
    ModalityRule("OCT", "percentile", None, ("oct",)),
    ModalityRule("Endoscopy", "percentile", None, ("endoscopy", "colonoscopy", "laparoscopy")),
    ModalityRule("Dermoscopy", "percentile", None, ("dermoscopy", "dermatology", "skin")),
    ModalityRule("Fundus", "percentile", None, ("fundus", "retina", "retinal")),
    ModalityRule("Histopathology", "percentile", None, ("histopathology", "histology", "pathology", "he", "ihc")),
)
"""The one lookup table: canonical modality name, grey-image rule, default CT window, aliases."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def modality_rule(name: str, source: Optional[object] = None) -> ModalityRule:
    """The table entry for ``name`` (case / punctuation insensitive, aliases allowed).

    Raises:
        InputError: unknown modality (the message lists the known names).
    """
    key = _key(name)
    for rule in MODALITY_TABLE:
        if key == _key(rule.name) or key in rule.aliases:
            return rule
    known = ", ".join(rule.name for rule in MODALITY_TABLE)
    raise InputError(f"unknown modality {name!r} (known: {known}; give --modality or 'modality:' in the spec)",
                     source)


def canonical_modality(name: str, source: Optional[object] = None) -> str:
    """Canonical table name of a modality (``"mri"`` -> ``"MR"``); unknown names raise InputError."""
    return modality_rule(name, source).name


def parse_window(window: Union[None, str, Window]) -> Optional[Window]:
    """A preset name (``"abdomen"``), ``"level,width"`` text or a (level, width) pair -> (level, width)."""
    if window is None:
        return None
    if isinstance(window, str):
        text = window.strip().lower()
        if text in CT_WINDOWS:
            return CT_WINDOWS[text]
        parts = [p for p in re.split(r"[,/ ]+", text.replace("l", "").replace("w", "")) if p]
        try:
            level, width = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"bad CT window {window!r}: use one of {', '.join(CT_WINDOWS)} or LEVEL,WIDTH") from None
    else:
        level, width = (float(v) for v in window)
    if not width > 0:
        raise InputError(f"bad CT window {window!r}: width must be > 0")
    return (level, width)


def describe(modality: str, window: Optional[Window], is_rgb: bool, precomputed: bool = False) -> str:
    """The manifest's ``normalization`` text, e.g. ``ct[L40,W400]`` or ``percentile[0.5,99.5]``."""
    if precomputed:
        return "precomputed-uint8"
    if is_rgb:
        return "rgb-per-channel"
    rule = modality_rule(modality)
    if rule.grey == "window":
        level, width = window if window is not None else CT_WINDOWS[rule.default_window or "abdomen"]
        return f"ct[L{level:g},W{width:g}]"
    return f"percentile[{PERCENTILES[0]:g},{PERCENTILES[1]:g}]"


def check_ct_range(array: np.ndarray, source: Optional[object] = None) -> None:
    """Refuse CT data outside :data:`CT_HU_RANGE` (overflow / wrong rescale) or with NaN / inf."""
    lo, hi = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("CT volume contains NaN or infinite values", source)
    if lo < CT_HU_RANGE[0] or hi > CT_HU_RANGE[1]:
        raise InputError(
            f"CT values {lo:g}..{hi:g} lie outside the plausible range {CT_HU_RANGE[0]:g}..{CT_HU_RANGE[1]:g} HU "
            f"(integer overflow or wrong rescale slope/intercept?)", source)


def window_bounds(window: Window) -> Tuple[float, float]:
    """(level, width) -> (low, high) HU."""
    level, width = window
    return level - width / 2.0, level + width / 2.0


def percentile_bounds(array: np.ndarray) -> Optional[Tuple[float, float]]:
    """0.5 / 99.5 percentiles of the non-zero values of the whole array (a volume, not a slice);
    min / max when they coincide; None when every value is 0."""
    nonzero = array[array != 0]
    if nonzero.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(nonzero, PERCENTILES))
    if hi <= lo:
        lo, hi = float(nonzero.min()), float(nonzero.max())
    return lo, hi


def scale_to_unit(array: np.ndarray, lo: float, hi: float, keep_zero: bool) -> np.ndarray:
    """Clip to [lo, hi] and scale to [0, 1] in float64; with ``keep_zero`` zero values map to 0."""
    data = array.astype(np.float64)
    out = (np.clip(data, lo, hi) - lo) / max(hi - lo, 1e-8)
    if keep_zero:
        out[data == 0] = 0.0
    return out


def window_to_unit(array: np.ndarray, window: Window) -> np.ndarray:
    """Clip to ``[level - width/2, level + width/2]`` and scale to [0, 1] (float64, same shape)."""
    return scale_to_unit(array, *window_bounds(window), keep_zero=False)


def percentile_to_unit(array: np.ndarray) -> np.ndarray:
    """Clip to the 0.5 / 99.5 percentiles of the non-zero values, scale to [0, 1], zeros stay 0 (float64)."""
    bounds = percentile_bounds(array)
    return np.zeros(array.shape) if bounds is None else scale_to_unit(array, *bounds, keep_zero=True)


def rgb_to_unit(array: np.ndarray) -> np.ndarray:
    """(..., 3) colour -> [0, 1] per channel: uint8 / 255, other dtypes min-max per channel (float64)."""
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    data = array.astype(np.float64)
    out = np.empty_like(data)
    for c in range(data.shape[-1]):
        ch = data[..., c]
        lo, hi = float(ch.min()), float(ch.max())
        out[..., c] = (ch - lo) / max(hi - lo, 1e-8)
    return out


def _grey_bounds(array: np.ndarray, modality: str, window: Optional[Window],
                 source: Optional[object]) -> Tuple[Optional[Tuple[float, float]], bool]:
    """(low, high) to clip a grey image / volume to, and whether zeros stay 0; validates the values."""
    rule = modality_rule(modality, source)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("image contains NaN or infinite values", source)
    if rule.grey == "window":
        check_ct_range(array, source)
        return window_bounds(window if window is not None else CT_WINDOWS[rule.default_window or "abdomen"]), False
    return percentile_bounds(array), True


def normalize_to_unit(array: np.ndarray, modality: str, window: Optional[Window] = None,
                      is_rgb: bool = False, source: Optional[object] = None) -> np.ndarray:
    """Normalize an image / volume to [0, 1] by the modality table.

    Args:
        array: grey (D, H, W) / (H, W), or colour (H, W, 3) when ``is_rgb``.
        modality: any name or alias in :data:`MODALITY_TABLE`.
        window: CT (level, width); None = the table's default for CT, ignored otherwise.
        is_rgb: the last axis holds 3 colour channels.
        source: file named in errors.

    Returns:
        float64 array of the same shape in [0, 1].
    """
    modality_rule(modality, source)
    if is_rgb:
        return rgb_to_unit(array)
    bounds, keep_zero = _grey_bounds(array, modality, window, source)
    return np.zeros(array.shape) if bounds is None else scale_to_unit(array, *bounds, keep_zero=keep_zero)


def normalize_to_uint8(array: np.ndarray, modality: str, window: Optional[Window] = None,
                       is_rgb: bool = False, source: Optional[object] = None) -> np.ndarray:
    """``unit_to_uint8(normalize_to_unit(...))`` with the same values, computed slice by slice along
    axis 0 for volumes so the float64 temporaries stay one slice big. Returns uint8, same shape."""
    modality_rule(modality, source)
    if is_rgb:
        return unit_to_uint8(rgb_to_unit(array))
    bounds, keep_zero = _grey_bounds(array, modality, window, source)
    out = np.zeros(array.shape, np.uint8)
    if bounds is None:
        return out
    if array.ndim == 3:
        for i in range(array.shape[0]):
            out[i] = unit_to_uint8(scale_to_unit(array[i], *bounds, keep_zero=keep_zero))
    else:
        out[...] = unit_to_uint8(scale_to_unit(array, *bounds, keep_zero=keep_zero))
    return out


def unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 0..255, rounded half to even (``np.round``); 4x smaller than float32 on disk."""
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


GENERIC_GREY = "MR"
"""The table entry of the generic grey rule (0.5 / 99.5 percentiles of the non-zero voxels)."""

HU_HINT_MIN = -500.0
"""A grey non-uint8 input whose minimum is at or below this looks like CT in HU (notice only)."""


def model_input_uint8(array: np.ndarray, modality: Optional[str] = None, window: Optional[Window] = None,
                      is_rgb: bool = False, source: Optional[object] = None) -> Tuple[np.ndarray, str, Optional[str]]:
    """The uint8 array the model sees, its normalisation text, and a notice (or None): the one mapping
    of ``medsam-lite segment`` / ``serve`` and :class:`medsam_lite.predictor.Predictor`.

    Args:
        array: grey (D, H, W) / (H, W), or colour (H, W, 3) when ``is_rgb``, any real dtype.
        modality: a :data:`MODALITY_TABLE` name or alias; None: uint8 stays unchanged and any other dtype
            takes the generic grey rule (with a notice when its values look like CT Hounsfield units).
        window: CT (level, width); given without ``modality`` it means CT.
        source: file named in errors.
    """
    if modality is None and window is not None:
        modality = "CT"
    if modality is None:
        if array.dtype == np.uint8:
            return array, "unchanged-uint8", None
        notice = None
        low = float(np.min(array))
        if not is_rgb and low <= HU_HINT_MIN:
            notice = (f"values {low:g}..{float(np.max(array)):g} look like CT Hounsfield units; mapped by the "
                      f"generic percentile rule: give --modality CT (L40/W400, or --window) for the CT window")
        out = normalize_to_uint8(array, GENERIC_GREY, is_rgb=is_rgb, source=source)
        return out, describe(GENERIC_GREY, None, is_rgb), notice
    rule = modality_rule(modality, source)
    if window is not None and rule.grey != "window":
        raise InputError(f"--window applies to CT only, not to modality {rule.name}", source)
    out = normalize_to_uint8(array, rule.name, window, is_rgb=is_rgb, source=source)
    return out, describe(rule.name, window, is_rgb), None
