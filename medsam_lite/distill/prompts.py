"""``medsam-lite train-prompts``: a prompt-in-the-loop click-trained prompt path on cached embeddings (issue 30).

LiteMedSAM's image encoder is frozen: every training slice is embedded once (:mod:`.prompt_data`, the one
embedding store). The trained module is a :class:`~medsam_lite.model.PromptPath` (prompt encoder + mask
decoder, ~4 M parameters), initialised from the released LiteMedSAM weights; the released pair stays frozen
beside it (box-only decodes never use the trained one, :mod:`medsam_lite.clicks`).

One training item is one object on one slice (SAM's interactive training, EdgeSAM's prompt-in-the-loop idea,
on the decoder only):

1. its box, jittered as a user draws it (:func:`jitter_box`: each side moved by up to ``jitter_px`` pixels,
   or with probability ``wide_prob`` by up to ``wide_frac`` of the box side, as a propagated slice's box is off);
2. the released decoder's box logits (no grad): the mask the user starts from, as at inference;
3. ``1..max_clicks`` rounds (uniform): a click from the current error (:func:`medsam_lite.clicks.next_click`),
   the trained path decodes box + every click so far, with the previous round's low-res logits as the dense
   prompt with probability ``dense_prob`` (no dense prompt otherwise); no grad flows through earlier rounds
   (their logits are detached); each round adds Dice + BCE + IoU-head MSE
   (:class:`~medsam_lite.distill.teacher.SegmentationLoss`), averaged over the rounds.

Everything else (AdamW, schedule, resume, RNG contract, log.csv, run.json, last.pth / best.pth weights-only
loadable) is the :class:`~medsam_lite.distill.loop.Trainer`'s. The checkpoints' ``config`` has
``kind = "click-prompt-path"`` (what :meth:`medsam_lite.clicks.ClickModel.from_checkpoint` checks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..clicks import CLICK_CHECKPOINT_KIND, next_click
from ..transforms import IMAGE_SIZE, box_from_mask
from .loop import FitResult, Task, fit
from .options import PromptTrainConfig, TrainConfig
from .prompt_data import PromptObjects
from .runtime import runtime_scope
from .state import preserved_rng_state

PathLike = Union[str, Path]


def jitter_box(mask: np.ndarray, rng: np.random.Generator, opt: PromptTrainConfig) -> np.ndarray:
    """(4,) float32 XYXY box of a non-empty (256, 256) bool ``mask``, each side moved independently (see
    :class:`PromptTrainConfig`), clipped to the model frame and kept at least 1 px wide."""
    box = box_from_mask(mask, shift=0).astype(np.float64)
    side = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
    if rng.random() < opt.wide_prob:
        box = box + rng.uniform(-opt.wide_frac, opt.wide_frac, 4) * side
    else:
        box = box + rng.integers(-opt.jitter_px, opt.jitter_px + 1, 4)
    box = np.clip(np.round(box), 0, IMAGE_SIZE - 1)
    x0, x1 = min(box[0], box[2]), max(box[0], box[2])
    y0, y1 = min(box[1], box[3]), max(box[1], box[3])
    return np.array([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], dtype=np.float32)


class PromptDataset(Dataset):
    """Objects ``indices`` of a :class:`PromptObjects`: item = {"embedding" (256, 64, 64), "mask" (256, 256) bool,
    "index"}."""

    def __init__(self, objects: PromptObjects, indices: List[int]) -> None:
        self.objects, self.indices = objects, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        emb, mask = self.objects.item(self.indices[i])
        return {"embedding": torch.from_numpy(emb[0]), "mask": torch.from_numpy(mask), "index": self.indices[i]}


def _round_inputs(clicks: List[Any]) -> tuple:
    pts = torch.tensor([[[c.x, c.y] for c in clicks]], dtype=torch.float32)
    labels = torch.tensor([[float(c.positive) for c in clicks]], dtype=torch.float32)
    return pts, labels


def object_loss(forward: Callable[..., Any], released: torch.nn.Module, embedding: torch.Tensor, truth: np.ndarray,
                opt: PromptTrainConfig, criterion: Any, rng: np.random.Generator) -> Optional[torch.Tensor]:
    """Mean loss of the click rounds of one object (module docstring); None when the start is already perfect."""
    box = torch.from_numpy(jitter_box(truth, rng, opt))[None]
    target = torch.from_numpy(truth.astype(np.float32))[None, None]
    with torch.no_grad():
        prev, _ = released(embedding, box)
    clicks: List[Any] = []
    losses = []
    for _ in range(int(rng.integers(1, opt.max_clicks + 1))):
        click = next_click((prev[0, 0] > 0).numpy(), truth)
        if click is None:
            break
        clicks.append(click)
        pts, labels = _round_inputs(clicks)
        dense = prev if rng.random() < opt.dense_prob else None
        logits, iou = forward(embedding, box, pts, labels, dense)
        losses.append(criterion(logits, iou, target))
        prev = logits.detach().float()
    return torch.stack(losses).mean() if losses else None


def prompt_loss_fn(released: torch.nn.Module, opt: PromptTrainConfig) -> Callable[..., torch.Tensor]:
    """The :class:`~medsam_lite.distill.loop.Task` loss: mean of :func:`object_loss` over the batch's objects
    (randomness from numpy's global RNG, which the Trainer reseeds per epoch: resumable)."""
    from .teacher import SegmentationLoss

    criterion = SegmentationLoss()

    def loss(forward: Callable[..., Any], batch: Dict[str, Any], rt: Any) -> torch.Tensor:
        rng = np.random.default_rng(int(np.random.randint(0, 2 ** 31 - 1)))
        terms = []
        for i in range(batch["embedding"].shape[0]):
            emb = rt.to_device(batch["embedding"][i:i + 1])
            term = object_loss(forward, released, emb, batch["mask"][i].numpy(), opt, criterion, rng)
            if term is not None:
                terms.append(term)
        if not terms:  # every start already perfect: a zero loss that still has a graph
            return sum(p.sum() * 0.0 for p in forward.parameters())
        return torch.stack(terms).mean()

    return loss


def prompt_task(opt: PromptTrainConfig, objects: PromptObjects) -> Task:
    """The :class:`Task`: trainable = a copy of the released prompt path, released one frozen beside it."""
    from ..checkpoint import load_lite_medsam
    from ..model import prompt_path_of

    lite = load_lite_medsam()
    trained, released = prompt_path_of(lite), prompt_path_of(lite).eval().requires_grad_(False)
    slices = objects.slice_of
    val = [i for i in range(len(objects)) if opt.val_every and slices[i] % opt.val_every == opt.val_every - 1]
    train = [i for i in range(len(objects)) if i not in set(val)]
    describe = {"data": str(opt.data), "objects": len(objects), "train_objects": len(train),
                "val_objects": len(val), "slices": len(objects.keys), "sources": objects.sources,
                "prompts": opt.to_dict()}
    return Task(name="train-prompts", model=trained, encoder="lite_medsam", trainable=trained,
                train_set=PromptDataset(objects, train), val_set=PromptDataset(objects, val) if val else None,
                loss=prompt_loss_fn(released, opt), describe=describe, frozen=(released,),
                checkpoint_config={"kind": CLICK_CHECKPOINT_KIND, "init": "lite_medsam", "prompts": opt.to_dict(),
                                   "frame": "256 x 256 model frame; clicks XY pixel indices; labels 1 / 0"})


@preserved_rng_state()
def train_prompts(opt: PromptTrainConfig, out_dir: PathLike, config: Optional[TrainConfig] = None,
                  log: Callable[[str], None] = print) -> FitResult:
    """Build (or reuse) the training data, then train the click prompt path in ``out_dir`` (module docstring)."""
    from .prompt_data import build_prompt_data

    cfg = config or TrainConfig(epochs=10, batch_size=4, lr=1e-5, schedule="cosine", amp="off",
                                channels_last=False, device="cpu")
    build_prompt_data(opt.shared, Path(opt.data), log=log)
    objects = PromptObjects(Path(opt.data))
    with runtime_scope(cfg.device, cfg.amp, cfg.channels_last) as rt:
        return fit(prompt_task(opt, objects), cfg, out_dir, rt)
