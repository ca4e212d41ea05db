"""Training data of ``medsam-lite train-prompts``: labelled training-side slices, embedded once into the one
embedding store, and their objects in the model frame.

Sources (:data:`PROMPT_SOURCES`): only the labelled training-side volumes of the shared data folder; never a
held-out one (:data:`medsam_lite.distill.fidelity.HELD_OUT`, checked). Each volume is mapped to uint8 as the
Predictor maps it (:func:`medsam_lite.normalize.model_input_uint8`: CT by the default window L40/W400, MR by
the 0.5-99.5 percentiles of the whole volume), sliced along its ``axes``, ``per_axis`` slices evenly spaced
among those showing an object, up to ``objects_per_slice`` objects each (the largest first, at least
``MIN_OBJECT_PIXELS_256`` pixels in the model frame).

Written into ``folder``: the embeddings (a :class:`~medsam_lite.embedding_cache.DiskEmbeddingStore`, keyed as
every Predictor keys them) and ``objects.npz`` (``keys`` per slice, ``slice_of`` / ``source_of`` per object,
``masks`` (K, 256, 256) packed bits in the model frame).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..embedding_cache import CachedEncoder, DiskEmbeddingStore
from ..errors import InputError
from ..imageio import read_case
from ..io_utils import atomic_path
from ..normalize import model_input_uint8
from ..transforms import IMAGE_SIZE, mask_to_model_frame, preprocess_array
from .fidelity import HELD_OUT

MIN_OBJECT_PIXELS_256 = 30
STORE_BYTES = 8 * 1024 ** 3


@dataclass(frozen=True)
class PromptSource:
    """One labelled training volume: ``image`` and ``labels`` files under the shared data folder (each
    non-zero value of each label file is an object), its modality, the slicing ``axes`` and ``per_axis``."""

    name: str
    image: str
    labels: Tuple[str, ...]
    modality: str
    axes: Tuple[int, ...]
    per_axis: int


PROMPT_SOURCES: Tuple[PromptSource, ...] = (
    PromptSource("ct_organs", "ct_organs/ct.nii.gz", ("ct_organs/labels.nii.gz",), "CT", (0,), 14),
    PromptSource("ct_aorta", "ct_aorta/ct.nii.gz", ("ct_aorta/aorta.nii.gz", "ct_aorta/lumen.nii.gz"), "CT",
                 (0, 1, 2), 2),
    PromptSource("brain_colin27", "brain_colin27/t1.nii.gz", ("brain_colin27/aal_labels.nii.gz",), "MR",
                 (0, 1, 2), 2),
    PromptSource("brain1", "lesions/brain1_image.nrrd", ("lesions/brain1_label.nrrd",), "MR", (0,), 4),
    PromptSource("lung1", "lesions/lung1_image.nrrd", ("lesions/lung1_label.nrrd",), "CT", (0,), 4),
)
"""Slice counts cut to what a shared, loaded 2-core CPU embedded in ~40 min (34 slices, LiteMedSAM's encoder at
~20-70 s a slice under load): a GPU run should raise them (docs/clicks.md); lesions only axially (6.5 / 5 mm
slices make their other axes a few pixels thick)."""


def held_out_prefixes() -> Tuple[str, ...]:
    """Path prefixes (under the shared data folder) of every held-out source: its folder, or for the lesions
    folder the case's own file stem (``lesions/breast1``), and each held-out file itself."""
    out = set()
    for h in HELD_OUT:
        if h.path.startswith("pydicom:"):
            continue
        folder, name = h.path.split("/", 1)
        out.add(h.path if folder == "unlabeled" else f"lesions/{name.split('_')[0]}" if folder == "lesions"
                else folder + "/")
    return tuple(sorted(out))


def check_not_held_out(sources: Sequence[PromptSource]) -> None:
    """InputError when a source reads a held-out file (:func:`held_out_prefixes`)."""
    prefixes = held_out_prefixes()
    for s in sources:
        for f in (s.image,) + s.labels:
            if f.startswith(prefixes):
                raise InputError(f"prompt training source {s.name} reads held-out data ({f})")


def _slices_of(source: PromptSource, shared: Path) -> List[Tuple[np.ndarray, List[np.ndarray]]]:
    """(uint8 (H, W) slice, its (H, W) bool objects) of one source, along its axes."""
    volume = model_input_uint8(read_case(shared / source.image).array, source.modality)[0]
    labels = [read_case(shared / f).array for f in source.labels]
    out = []
    for axis in source.axes:
        vol = np.moveaxis(volume, axis, 0)
        labs = [np.moveaxis(lab, axis, 0) for lab in labels]
        shows = np.nonzero(np.any([lab.any(axis=(1, 2)) for lab in labs], axis=0))[0]
        if not len(shows):
            continue
        picks = shows[np.unique(np.linspace(0, len(shows) - 1, min(source.per_axis, len(shows))).round().astype(int))]
        for z in picks:
            objects = [lab[z] == v for lab in labs for v in np.unique(lab[z]) if v]
            out.append((np.ascontiguousarray(vol[z]), objects))
    return out


def build_prompt_data(shared: Any, folder: Path, sources: Sequence[PromptSource] = PROMPT_SOURCES,
                      objects_per_slice: int = 6, log: Any = print) -> Dict[str, Any]:
    """Embed the sources' slices (LiteMedSAM, torch fp32) into ``folder``'s store and write ``objects.npz``
    (module docstring); an existing complete folder is reused. Returns the summary (also ``summary.json``)."""
    from ..predictor import Predictor

    check_not_held_out(sources)
    folder = Path(folder)
    if (folder / "summary.json").is_file() and (folder / "objects.npz").is_file():
        return json.loads((folder / "summary.json").read_text())
    if not shared or not Path(shared).is_dir():
        raise InputError("the training data folder is not built yet: give the shared data folder (--shared)", folder)
    store = DiskEmbeddingStore(folder / "embeddings", max_bytes=STORE_BYTES)
    predictor = Predictor("lite_medsam", backend="torch", embedding_cache=store)
    keyer = CachedEncoder(predictor.backend, store)
    keys: List[str] = []
    slice_of, source_of, masks = [], [], []
    counts: Dict[str, Dict[str, int]] = {}
    for si, source in enumerate(sources):
        n_slices = n_objects = 0
        for image, objects in _slices_of(source, Path(shared)):
            small = [m for m in (mask_to_model_frame(o) > 0 for o in objects) if m.sum() >= MIN_OBJECT_PIXELS_256]
            if not small:
                continue
            small = sorted(small, key=lambda m: -int(m.sum()))[:objects_per_slice]
            predictor.set_image(image)
            keys.append(keyer.key(preprocess_array(image)[0]))
            for m in small:
                slice_of.append(len(keys) - 1)
                source_of.append(si)
                masks.append(np.packbits(m.reshape(-1)))
            n_slices, n_objects = n_slices + 1, n_objects + len(small)
            log(f"{source.name}: {n_slices} slices, {n_objects} objects")
        counts[source.name] = {"slices": n_slices, "objects": n_objects}
    with atomic_path(folder / "objects.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, keys=np.array(keys), slice_of=np.array(slice_of), source_of=np.array(source_of),
                                masks=np.stack(masks), sources=np.array([s.name for s in sources]))
    summary = {"sources": counts, "slices": len(keys), "objects": len(masks), "encoder": "lite_medsam (torch fp32)",
               "frame": f"{IMAGE_SIZE}x{IMAGE_SIZE} model frame"}
    with atomic_path(folder / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


class PromptObjects:
    """The objects of a :func:`build_prompt_data` folder: ``item(i)`` -> (embedding (1, 256, 64, 64) float32,
    (256, 256) bool mask)."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        if not (folder / "objects.npz").is_file():
            raise InputError("no prompt training data here (objects.npz): run train-prompts with --data", folder)
        data = np.load(folder / "objects.npz")
        self.keys = [str(k) for k in data["keys"]]
        self.slice_of, self.source_of, self.masks = data["slice_of"], data["source_of"], data["masks"]
        self.sources = [str(s) for s in data["sources"]]
        self.store = DiskEmbeddingStore(folder / "embeddings", max_bytes=STORE_BYTES)

    def __len__(self) -> int:
        return len(self.slice_of)

    def item(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        emb = self.store.get(self.keys[int(self.slice_of[i])])
        if emb is None:
            raise InputError(f"embedding of slice {int(self.slice_of[i])} is missing from the store")
        mask = np.unpackbits(self.masks[i])[: IMAGE_SIZE * IMAGE_SIZE].reshape(IMAGE_SIZE, IMAGE_SIZE).astype(bool)
        return emb, mask
