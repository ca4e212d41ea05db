"""Files shipped inside the package (read through :mod:`importlib.resources`, so a wheel install works).

* ``examples/*.npz``: the bundled real cases (challenge format, with ground truth ``gts``).
* ``weights/*.pth``: the shipped student checkpoint.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Dict, List

import numpy as np

EXAMPLE_NAMES = ("2DBox_Microscopy_nuclei.npz", "3DBox_CT_abdomen.npz", "3DBox_MR_brain_tumour.npz")
"""The bundled example cases."""


def package_file(*parts: str) -> Path:
    """Path of a file shipped in the ``medsam_lite`` package (it need not exist)."""
    return Path(str(importlib.resources.files("medsam_lite").joinpath(*parts)))


def example_path(name: str) -> Path:
    """Path of a bundled example case, e.g. ``example_path("3DBox_CT_abdomen.npz")``."""
    if name not in EXAMPLE_NAMES:
        raise ValueError(f"unknown example {name!r}; bundled: {', '.join(EXAMPLE_NAMES)}")
    return package_file("examples", name)


def example_paths() -> List[Path]:
    """All bundled example cases."""
    return [example_path(name) for name in EXAMPLE_NAMES]


def load_example(name: str) -> Dict[str, np.ndarray]:
    """A bundled example case: ``imgs``, ``boxes`` and, when the file has them, ``gts`` and ``spacing``."""
    with np.load(example_path(name), allow_pickle=False) as case:
        return {k: case[k] for k in ("imgs", "boxes", "gts", "spacing") if k in case.files}
