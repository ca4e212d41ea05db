"""Training state that must survive a kill: RNG states in a weights-only form, and safe checkpoint loading.

RNG contract of the trainer (:mod:`medsam_lite.distill.loop`): at every epoch start the python /
numpy / torch RNGs are seeded from ``derive_seed(seed, epoch, rank)`` (:func:`seed_everything`),
validation seeds them from ``derive_seed(seed, VAL_SALT)``; ``last.pth`` stores the states
(:func:`rng_state`) so that a mid-epoch resume continues the same streams. The caller's states are
restored when training ends (:func:`preserved_rng_state`). Nothing else in the training code seeds the global RNGs.

Every training file is read with ``torch.load(weights_only=True)`` (:func:`load_weights_only`), so
the RNG states are stored as ints, floats, lists and tensors only (never numpy arrays or tuples of
them) and restored bit for bit.
"""
from __future__ import annotations

import contextlib
import pickle
import random
from pathlib import Path
from typing import Any, Dict, Iterator, Union

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from medsam_lite.errors import InputError


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1, 2 ** 31], dtype=np.uint64)))


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA): the trainer's per-epoch step."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA when present), weights-only loadable.

    ``{"python": {"version", "internal": [625 ints], "gauss": float | None},
    "numpy": {"key": [624 ints], "pos", "has_gauss", "gauss"}, "torch": ByteTensor,
    "torch_initial_seed": int[, "cuda": [ByteTensor, ...]]}``
    """
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state: Dict[str, Any] = {
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": gauss},
        "numpy": {"key": [int(v) for v in legacy["state"]["key"]], "pos": int(legacy["state"]["pos"]),
                  "has_gauss": int(legacy["has_gauss"]), "gauss": float(legacy["gauss"])},
        "torch": torch.get_rng_state(), "torch_initial_seed": int(torch.initial_seed()),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (``torch.initial_seed()`` included)."""
    torch.manual_seed(int(state.get("torch_initial_seed", 0)))  # restores torch.initial_seed() too
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np.asarray(nps["key"], dtype=np.uint32), "pos": int(nps["pos"])},
                         "has_gauss": int(nps["has_gauss"]), "gauss": float(nps["gauss"])})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block and then put the python / numpy / torch (and CUDA) RNG states back as they were,
    also when it raises: training functions leave the caller's random streams untouched."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run a block (building initial weights) with torch's CPU RNG seeded from ``seed``, in a forked RNG:
    the weights depend only on ``seed`` and the caller's torch stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def reset_dataset_rngs(dataset: Dataset) -> None:
    """Call ``reset_random()`` of every dataset that has one (``SliceDataset``, ``ImageOnlyDataset``),
    looking through ``ConcatDataset`` and ``Subset``: their per-process stream re-seeds from
    ``torch.initial_seed()`` on next use."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            reset_dataset_rngs(part)
    elif isinstance(dataset, Subset):
        reset_dataset_rngs(dataset.dataset)
    elif callable(getattr(dataset, "reset_random", None)):
        dataset.reset_random()


def load_weights_only(path: Union[str, Path]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; never runs pickled code.

    Raises:
        InputError: one line naming ``path``: missing, unreadable, or holding objects other than
            tensors and plain containers (a pickle payload, or a file not written by medsam-lite).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError("refused: the file holds pickled objects other than tensors and plain containers "
                         "(not written by medsam-lite, or tampered with); it was not unpickled", path) from exc
    except Exception as exc:  # torch raises many types for corrupt / truncated files
        raise InputError(f"not a readable PyTorch checkpoint ({type(exc).__name__})", path) from exc


__all__ = ["derive_seed", "seed_everything", "rng_state", "set_rng_state", "preserved_rng_state", "seeded_init",
           "reset_dataset_rngs", "load_weights_only"]
