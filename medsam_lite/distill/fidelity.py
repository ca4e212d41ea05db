"""The held-out set: sources distillation never trains on, on which a student's fidelity is measured.

The measurement itself is an app: :mod:`medsam_lite.bench.fidelity` (``medsam-lite benchmark fidelity``).
The list lives here, beside the distillation data list it is excluded from (``distill/recipe``; a test checks),
so distillation can read it without depending on the benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union


@dataclass(frozen=True)
class HeldOut:
    """One held-out source: ``path`` relative to the shared data folder (or absolute, or ``pydicom:NAME``), its
    modality, and for volumes which (z) slices to use (``slices``: fractions of the depth in [0, 1])."""

    name: str
    modality: str
    path: str
    slices: Tuple[float, ...] = ()


def _pydicom_file(name: str) -> str:
    """Absolute path of a test file that pydicom ships (never used for training)."""
    import pydicom

    return str(Path(pydicom.__file__).parent / "data" / "test_files" / name)


def held_out_file(item: HeldOut, shared: Union[str, Path]) -> str:
    """The file of ``item``: a pydicom test file for ``pydicom:NAME``, else ``item.path`` under ``shared``."""
    if item.path.startswith("pydicom:"):
        return _pydicom_file(item.path.split(":", 1)[1])
    return str(Path(shared) / item.path)


#: The held-out set. Shared-data files here are excluded from the distillation data list
#: (``distill/recipe``); the pydicom files are sample images of a package outside that list.
#: Held-out modalities: ultrasound and nuclear medicine (no image of either is distilled on).
HELD_OUT: Tuple[HeldOut, ...] = (
    HeldOut("nuclei2d", "Microscopy", "nuclei2d/image.tif"),
    HeldOut("mni152_t1", "MR", "mni152/t1.nii.gz", (0.3, 0.4, 0.5, 0.6, 0.7)),
    HeldOut("mr_organs", "MR", "mr_organs/mr.nii.gz", (0.2, 0.35, 0.5, 0.65, 0.8)),
    HeldOut("breast1", "MR", "lesions/breast1_image.nrrd", (0.3, 0.5, 0.7)),
    HeldOut("us_lymph_node", "US", "unlabeled/us_lymph_node_doppler.dcm"),
    HeldOut("nm_bone_scan", "NM", "unlabeled/nm_bone_scan.dcm"),
    HeldOut("pydicom_mr_small", "MR", "pydicom:MR_small.dcm"),
    HeldOut("pydicom_ct_liver", "CT", "pydicom:liver_1frame.dcm"),
)
