"""The one training loop of ``train-teacher`` and ``distill``: :class:`Trainer` (and :func:`fit`).

A :class:`Task` says what is trained (``trainable``, a submodule of the saved ``model``), on which
data, with which loss. :class:`Trainer` adds everything else, in hook methods
(:meth:`Trainer.run_training` lists their order):

* AdamW(lr, weight_decay) over the trainable parameters that require grad; ReduceLROnPlateau
  (mode ``min``) stepped once per epoch on the validation loss (training loss without validation),
  or a per-step cosine decay (``TrainConfig.schedule``);
* bf16 / fp16 autocast (the task's loss function decides what runs under it) and channels_last;
  fp16 uses a GradScaler;
* DistributedDataParallel when the runtime is distributed; ``DistributedSampler`` (``set_epoch``)
  for every world size, so data order depends only on (seed, epoch);
* RNG contract (:mod:`medsam_lite.distill.state`): per epoch the python / numpy / torch RNGs are
  reseeded from (seed, epoch, rank), so a run that is killed and resumed from an epoch-end
  checkpoint repeats exactly what the uninterrupted run did; the caller's RNG states are restored
  when training returns or raises;
* files in the run folder (rank 0 only, every write atomic): ``last.pth`` (model + optimizer,
  scheduler, scaler, epoch / step, best metric, log rows, RNG states; weights-only loadable and
  read back with ``torch.load(weights_only=True)``), ``best.pth`` (model only), ``log.csv`` (epoch,
  train_loss, val_loss, lr, seconds, images_per_s), ``loss.png``, ``run.json`` (command line,
  config, data, runtime, sessions, timing). ``last.pth`` and ``best.pth`` are self-describing model
  checkpoints (``medsam_lite.checkpoint.load_model`` reads them); their ``config`` is the task's
  ``checkpoint_config`` (data normalisation and model-frame contract included by the callers).

Mid-epoch checkpoints (``checkpoint_every``) record the step; resuming skips the batches already
done and restores the RNG states. That is exact when items depend only on their index and epoch
(the teacher cache, distillation's own augmentation) and in a single process; ``SliceDataset``'s
random label / jitter / flips restart their stream at the epoch start instead.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medsam_lite.checkpoint import save_checkpoint
from medsam_lite.errors import InputError
from medsam_lite.io_utils import atomic_path

from .options import TrainConfig
from .runtime import Runtime
from .state import (derive_seed, load_weights_only, preserved_rng_state, reset_dataset_rngs, rng_state, seed_everything,
                    set_rng_state)

PathLike = Union[str, Path]
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s")
TIMING_COLUMNS = ("seconds", "images_per_s")
VAL_SALT = 99991

LossFn = Callable[[Callable[..., Any], Dict[str, Any], Runtime], torch.Tensor]
CheckpointHook = Callable[[int, int, bool], None]


@dataclass
class Task:
    """What a :class:`Trainer` trains.

    Attributes:
        name: run kind (``train-teacher``, ``distill``, ``finetune-decoder``); checked on resume.
        model: the full MedSAMLite written to every checkpoint.
        encoder: registry name of ``model``'s image encoder (checkpoint ``encoder`` field).
        trainable: the submodule of ``model`` that is optimised (wrapped by DDP when distributed).
        train_set, val_set: datasets of dict items (``val_set`` may be None).
        loss: ``loss(forward, batch, runtime) -> scalar`` mean loss of the batch; ``forward`` is the
            (DDP-wrapped) ``trainable``; the function moves the batch to the device and applies
            ``runtime.autocast()`` to what may be autocast.
        checkpoint_config: ``config`` stored in checkpoints.
        describe: extra facts for run.json (data folders, counts, teacher ...).
        frozen: submodules kept in eval mode while ``trainable`` trains.
        find_unused_parameters: DDP flag (True when some parameters get no gradient).
        set_epoch: called with the 0-based epoch before each epoch (e.g. cache variant choice).
    """

    name: str
    model: nn.Module
    encoder: str
    trainable: nn.Module
    train_set: Dataset
    val_set: Optional[Dataset]
    loss: LossFn
    checkpoint_config: Dict[str, Any] = field(default_factory=dict)
    describe: Dict[str, Any] = field(default_factory=dict)
    frozen: Sequence[nn.Module] = ()
    find_unused_parameters: bool = False
    set_epoch: Optional[Callable[[int], None]] = None


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.run_training` (paths in the run folder; rows as in log.csv)."""

    run_dir: Path
    last: Path
    best: Optional[Path]
    epochs_done: int
    rows: List[Dict[str, Any]]
    best_metric: float
    best_epoch: int


# ------------------------------------------------------------------ files
def write_log(path: Path, rows: Sequence[Dict[str, Any]], columns: Sequence[str] = LOG_COLUMNS) -> None:
    """log.csv from the rows (rewritten whole, atomically); None / missing values are written empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def read_log(path: PathLike) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_losses(path: Path, rows: Sequence[Dict[str, Any]], title: str) -> None:
    """loss.png: training and validation loss per epoch (log scale when positive)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(6, 4), dpi=100)  # no pyplot: the process's matplotlib backend stays as it is
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    val = [(r["epoch"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "s-", label="validation")
    values = [r["train_loss"] for r in rows] + [v for _, v in val]
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _write_json(path: Path, payload: Dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")


# ------------------------------------------------------------------ the loop
def _batch_len(batch: Dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
        if isinstance(value, (list, tuple)):
            return len(value)
    raise ValueError("batch holds no tensor")


def _loader(dataset: Dataset, indices: Sequence[int], cfg: TrainConfig, rt: Runtime, seed: int) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=list(indices), num_workers=cfg.workers,
                      generator=generator, pin_memory=rt.device.type == "cuda", drop_last=False)


def _train_mode(task: Task) -> None:
    task.trainable.train()
    for module in task.frozen:
        module.eval()


def validate(task: Task, cfg: TrainConfig, rt: Runtime) -> Optional[float]:
    """Mean loss over the validation set (all ranks), eval mode, no grad; same random stream every
    epoch (SliceDataset draws the label of each slice at random)."""
    if task.val_set is None or len(task.val_set) == 0:
        return None
    seed = derive_seed(cfg.seed, VAL_SALT)
    seed_everything(seed)
    reset_dataset_rngs(task.val_set)
    indices = list(range(rt.rank, len(task.val_set), rt.world_size))
    if cfg.max_steps:
        indices = indices[: cfg.max_steps * cfg.batch_size]
    task.trainable.eval()
    total = count = 0.0
    with torch.no_grad():
        for batch in _loader(task.val_set, indices, cfg, rt, seed):
            loss = task.loss(task.trainable, batch, rt)
            n = _batch_len(batch)
            total += float(loss) * n
            count += n
    total, count = rt.sum([total, count])
    return total / count if count else None


def remove_stale_temps(folder: Path, stems: Sequence[str]) -> None:
    """Delete temporary files that ``atomic_path`` leaves behind when a process is killed mid-write
    (``.<stem>.<random>.tmp<suffix>``) for the given file stems."""
    if folder.is_dir():
        for stem in stems:
            for path in folder.glob(f".{stem}.*.tmp*"):
                path.unlink(missing_ok=True)


RUN_FILES = ("last", "best", "log", "loss", "run", "student")


def check_run_folder(run_dir: PathLike, resume: bool) -> None:
    """Refuse to start over a run folder that holds ``last.pth`` unless resuming (checked early by callers)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("output path exists and is not a folder", run_dir)
    if (run_dir / "last.pth").exists() and not resume:
        raise InputError("run folder already holds last.pth: pass --resume to continue that run, or choose "
                         "another output folder", run_dir)


def steps_per_epoch(n_items: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """Optimizer steps per epoch of each process (``DistributedSampler`` pads to a multiple of the world size)."""
    steps = math.ceil(math.ceil(n_items / world_size) / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Any:
    """``cfg.schedule``: ReduceLROnPlateau (stepped per epoch on the metric) or a per-step cosine decay from
    ``cfg.lr`` to ``cfg.lr * cfg.min_lr_ratio`` over ``cfg.epochs * steps`` steps."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps)
        floor = float(cfg.min_lr_ratio)

        def factor(step: int) -> float:
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise InputError(f"--schedule must be plateau or cosine, got {cfg.schedule!r}")


def _empty_partial() -> Dict[str, float]:
    return {"loss": 0.0, "count": 0.0, "seconds": 0.0, "train_seconds": 0.0}


class Trainer:
    """Trains a :class:`Task` in a run folder (module docstring); :meth:`run_training` drives the hooks.

    Hook order (nnU-Net v2 style)::

        on_train_start()                      run folder, optimiser, scheduler, resume, DDP, run.json
        for epoch in range(start_epoch, cfg.epochs):
            on_epoch_start(epoch)             RNG contract, sampler order, train mode
            for batch in epoch_batches():
                on_step_end(train_step(batch))    mid-epoch last.pth
            if not on_epoch_end(): break      validation, scheduler, log row, best/last, plot, time limit
        on_train_end() -> FitResult           log.csv, run.json; the caller's RNG states are restored

    Subclasses may override any hook; :meth:`save_checkpoint` / :meth:`load_checkpoint` write and
    read ``last.pth`` (weights-only loadable, see :mod:`medsam_lite.distill.state`).
    """

    def __init__(self, task: Task, cfg: TrainConfig, run_dir: PathLike, rt: Runtime,
                 on_checkpoint: Optional[CheckpointHook] = None) -> None:
        self.task, self.cfg, self.rt, self.on_checkpoint = task, cfg, rt, on_checkpoint
        self.run_dir = Path(run_dir)
        self.last_path, self.best_path = self.run_dir / "last.pth", self.run_dir / "best.pth"
        self.start_epoch, self.start_step = 0, 0
        self.rows: List[Dict[str, Any]] = []
        self.best, self.best_epoch = math.inf, 0
        self.partial = _empty_partial()
        self.resumed_from: Optional[Dict[str, int]] = None
        self.stopped_early: Optional[int] = None
        self.longest_epoch = 0.0
        self.info: Dict[str, Any] = {}

    # ------------------------------------------------------------ driver
    def run_training(self) -> FitResult:
        with preserved_rng_state():
            self.on_train_start()
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.on_epoch_start(epoch)
                for batch in self.epoch_batches():
                    self.on_step_end(self.train_step(batch))
                if not self.on_epoch_end():
                    break
            return self.on_train_end()

    # ------------------------------------------------------------ start
    def on_train_start(self) -> None:
        """Run folder, optimisation objects, resume from ``last.pth``, DDP wrapper, sampler, run.json."""
        check_run_folder(self.run_dir, self.cfg.resume)
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.run_dir, RUN_FILES)
        self.rt.barrier()
        self.build_optimisation()
        if self.cfg.resume and self.last_path.exists():
            self.load_checkpoint(self.last_path)
        self.network = self.wrap_model()
        self.start_session()
        self.sampler = DistributedSampler(self.task.train_set, num_replicas=self.rt.world_size, rank=self.rt.rank,
                                          shuffle=True, seed=self.cfg.seed, drop_last=False)

    def build_optimisation(self) -> None:
        """Model on the device; AdamW, scheduler (:func:`make_scheduler`), GradScaler (fp16 only)."""
        task, cfg, rt = self.task, self.cfg, self.rt
        self.model = task.model.to(rt.device)
        if rt.channels_last:
            task.trainable.to(memory_format=torch.channels_last)
        params = [p for p in task.trainable.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"task {task.name}: nothing to train")
        self.steps = steps_per_epoch(len(task.train_set), cfg, rt.world_size)
        self.per_step = cfg.schedule == "cosine"
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.steps)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)

    def wrap_model(self) -> nn.Module:
        """``task.trainable``, wrapped in DistributedDataParallel when the runtime is distributed."""
        if not self.rt.distributed:
            return self.task.trainable
        return nn.parallel.DistributedDataParallel(
            self.task.trainable, device_ids=[self.rt.device.index] if self.rt.device.type == "cuda" else None,
            find_unused_parameters=self.task.find_unused_parameters)

    def start_session(self) -> None:
        """Append this session to run.json (rank 0)."""
        cfg, rt = self.cfg, self.rt
        self.session = {"argv": list(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "resumed_from": self.resumed_from, "config": cfg.to_dict(), "world_size": rt.world_size,
                        "device": str(rt.device), "amp": rt.amp_name, "channels_last": rt.channels_last}
        if rt.is_main:
            run_json = self.run_dir / "run.json"
            if cfg.resume and run_json.is_file():
                try:
                    self.info = json.loads(run_json.read_text())
                except ValueError:
                    self.info = {}
            self.info.update({"command": self.task.name, "encoder": self.task.encoder, "config": cfg.to_dict(),
                              **self.task.describe, "status": "running"})
            self.info["sessions"] = list(self.info.get("sessions", [])) + [self.session]
            _write_json(run_json, self.info)
        self.session_start = time.time()

    # ------------------------------------------------------------ one epoch
    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch RNG contract: reseed from (seed, epoch, rank) unless resuming mid-epoch; the
        datasets' streams restart; this process's share of the sampler order, minus steps already done."""
        from tqdm import tqdm

        cfg = self.cfg
        self.epoch = epoch
        skip = self.start_step if epoch == self.start_epoch else 0
        self.epoch_seed = derive_seed(cfg.seed, epoch, self.rt.rank)
        if skip == 0:
            seed_everything(self.epoch_seed)
            self.partial = _empty_partial()
        reset_dataset_rngs(self.task.train_set)
        if self.task.set_epoch is not None:
            self.task.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.order = list(self.sampler)[skip * cfg.batch_size: self.steps * cfg.batch_size]
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.t0 = time.time()
        self.loss_sum, self.count, self.step = self.partial["loss"], self.partial["count"], skip
        _train_mode(self.task)
        self.bar = tqdm(total=self.steps, initial=skip, desc=f"{self.task.name} epoch {epoch + 1}/{cfg.epochs}",
                        unit="step", disable=not (cfg.progress and self.rt.is_main), leave=False)

    def epoch_batches(self) -> DataLoader:
        return _loader(self.task.train_set, self.order, self.cfg, self.rt, self.epoch_seed)

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        """One optimiser step; returns ``{"loss": batch mean loss, "n": batch size}``."""
        loss = self.task.loss(self.network, batch, self.rt)
        if not torch.isfinite(loss.detach()):
            raise RuntimeError(f"{self.task.name}: non-finite loss at epoch {self.epoch + 1} step {self.step + 1}; "
                               f"{self.last_path} keeps the last good state (try a lower --lr or --amp off)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_step:
            self.scheduler.step()
        return {"loss": float(loss.detach()), "n": float(_batch_len(batch))}

    def on_step_end(self, out: Dict[str, float]) -> None:
        """Running sums, progress bar, and ``last.pth`` every ``checkpoint_every`` steps (not at the epoch end)."""
        self.loss_sum += out["loss"] * out["n"]
        self.count += out["n"]
        self.step += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{out['loss']:.4g}")
        every = self.cfg.checkpoint_every
        if every and self.step % every == 0 and self.step < self.steps:
            g_loss, g_count = self.rt.sum([self.loss_sum, self.count])
            elapsed = self.partial["seconds"] + time.time() - self.t0
            self.save_checkpoint(self.epoch, self.step, {"loss": g_loss, "count": g_count, "seconds": elapsed,
                                                         "train_seconds": elapsed})
            self.rt.barrier()
            self._notify(self.epoch + 1, self.step, False)

    def on_epoch_end(self) -> bool:
        """Validation, scheduler, log row, best / last checkpoints, log.csv, loss.png; False to stop (time limit)."""
        self.bar.close()
        row, metric, metric_name = self.epoch_row()
        self.rows.append(row)
        improved = metric < self.best
        if improved:
            self.best, self.best_epoch = metric, self.epoch + 1
        if self.rt.is_main:
            if improved:
                save_checkpoint(self.model, self.best_path, self.task.encoder, self.task.checkpoint_config,
                                epoch=self.epoch + 1, metric=metric, metric_name=metric_name)
            self.save_checkpoint(self.epoch + 1, 0, _empty_partial())
            write_log(self.run_dir / "log.csv", self.rows)
            plot_losses(self.run_dir / "loss.png", self.rows, f"{self.task.name} ({self.task.encoder})")
            self.print_row(row)
        self.rt.barrier()
        self._notify(self.epoch + 1, 0, True)
        return not self.time_is_up()

    def epoch_row(self) -> Tuple[Dict[str, Any], float, str]:
        """(log row, metric for scheduler / best, its name); steps the plateau scheduler."""
        train_seconds = self.partial["train_seconds"] + time.time() - self.t0
        loss_sum, count = self.rt.sum([self.loss_sum, self.count])
        train_loss = loss_sum / max(count, 1.0)
        val_loss = self.validate()
        seconds = self.partial["seconds"] + time.time() - self.t0
        metric = val_loss if val_loss is not None else train_loss
        if not self.per_step:
            self.scheduler.step(metric)
        row = {"epoch": self.epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": self.lr,
               "seconds": round(seconds, 3), "images_per_s": round(count / max(train_seconds, 1e-9), 3)}
        return row, metric, "val_loss" if val_loss is not None else "train_loss"

    def validate(self) -> Optional[float]:
        """Validation loss of this epoch (:func:`validate`: fixed random stream, all ranks)."""
        return validate(self.task, self.cfg, self.rt)

    def print_row(self, row: Dict[str, Any]) -> None:
        from tqdm import tqdm

        val = f"{row['val_loss']:.5g}" if row["val_loss"] is not None else "-"
        line = (f"{self.task.name} epoch {row['epoch']}/{self.cfg.epochs}: train {row['train_loss']:.5g}  val {val}  "
                f"lr {row['lr']:.3g}  {row['seconds']:.1f} s  {row['images_per_s']:.2f} img/s")
        if self.cfg.progress:
            tqdm.write(line)
        else:
            print(line, flush=True)

    def time_is_up(self) -> bool:
        """``cfg.time_limit``: True when another epoch as long as the longest one would not fit."""
        self.longest_epoch = max(self.longest_epoch, time.time() - self.t0)
        limit = self.cfg.time_limit
        if (limit is not None and self.epoch + 1 < self.cfg.epochs
                and time.time() - self.session_start + self.longest_epoch > limit * 60.0):
            self.stopped_early = self.epoch + 1
            return True
        return False

    def _notify(self, epoch: int, step: int, end_of_epoch: bool) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(epoch, step, end_of_epoch)

    # ------------------------------------------------------------ end
    def on_train_end(self) -> FitResult:
        """Final log.csv and run.json (status, epochs done, best); the result paths."""
        epochs_done = self.stopped_early or max(self.start_epoch, self.cfg.epochs)
        if self.rt.is_main:
            if self.rows:
                write_log(self.run_dir / "log.csv", self.rows)
            self.session.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                seconds=round(time.time() - self.session_start, 3))
            if self.stopped_early:
                self.session["stopped"] = f"time limit {self.cfg.time_limit:g} min after epoch {self.stopped_early}"
            self.info["sessions"][-1] = self.session
            self.info.update(status="done" if not self.stopped_early else "stopped (time limit)",
                             epochs_done=epochs_done, best_epoch=self.best_epoch,
                             best_metric=None if math.isinf(self.best) else self.best,
                             seconds_total=round(sum(float(r["seconds"]) for r in self.rows), 3))
            _write_json(self.run_dir / "run.json", self.info)
        self.rt.barrier()
        return FitResult(run_dir=self.run_dir, last=self.last_path,
                         best=self.best_path if self.best_path.exists() else None, epochs_done=epochs_done,
                         rows=self.rows, best_metric=self.best, best_epoch=self.best_epoch)

    # ------------------------------------------------------------ last.pth
    def training_state(self, epoch: int, step: int, partial: Dict[str, float]) -> Dict[str, Any]:
        """Everything an exact resume needs (plain containers and tensors only)."""
        return {"task": self.task.name, "epoch": epoch, "step": step, "partial": partial,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None, "rows": self.rows,
                "best": self.best, "best_epoch": self.best_epoch, "rng": rng_state(),
                "world_size": self.rt.world_size, "batch_size": self.cfg.batch_size, "config": self.cfg.to_dict()}

    def save_checkpoint(self, epoch: int, step: int, partial: Dict[str, float]) -> None:
        """Write ``last.pth`` (rank 0): model + training state after ``step`` steps of 0-based ``epoch``."""
        if self.rt.is_main:
            save_checkpoint(self.model, self.last_path, self.task.encoder, self.task.checkpoint_config,
                            training=self.training_state(epoch, step, partial))

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path`` (weights-only load): model, optimiser, scheduler, scaler, counters, RNGs."""
        payload = load_weights_only(path)
        state = payload.get("training") if isinstance(payload, dict) else None
        if not state:
            raise InputError("last.pth holds no training state", path)
        if state["task"] != self.task.name or payload["encoder"] != self.task.encoder:
            raise InputError(f"last.pth is a {state['task']} run of {payload['encoder']}, not {self.task.name} of "
                             f"{self.task.encoder}", path)
        if state.get("world_size", 1) != self.rt.world_size or state.get("batch_size") != self.cfg.batch_size:
            print(f"warning: resuming with world size {self.rt.world_size} / batch {self.cfg.batch_size} "
                  f"(saved: {state.get('world_size')} / {state.get('batch_size')}): not an exact continuation",
                  file=sys.stderr)
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.rows = list(state["rows"])
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        if self.start_step and self.rt.is_main:
            self.partial = dict(state["partial"])
        set_rng_state(state["rng"])
        self.resumed_from = {"epoch": self.start_epoch, "step": self.start_step}


def fit(task: Task, cfg: TrainConfig, run_dir: PathLike, rt: Runtime,
        on_checkpoint: Optional[CheckpointHook] = None) -> FitResult:
    """Train ``task`` for ``cfg.epochs`` epochs in ``run_dir``: ``Trainer(...).run_training()``.

    ``on_checkpoint(epoch, step, end_of_epoch)`` runs on every rank after each ``last.pth`` write
    (epoch 1-based; step = steps done in that epoch). With ``cfg.resume`` the run continues from
    ``run_dir/last.pth`` when it exists; without it an existing ``last.pth`` is refused.
    """
    return Trainer(task, cfg, run_dir, rt, on_checkpoint).run_training()


__all__ = ["Task", "Trainer", "FitResult", "fit", "validate", "check_run_folder", "steps_per_epoch", "make_scheduler",
           "write_log", "read_log", "plot_losses", "remove_stale_temps", "derive_seed", "seed_everything",
           "rng_state", "set_rng_state", "reset_dataset_rngs", "LOG_COLUMNS", "TIMING_COLUMNS"]
