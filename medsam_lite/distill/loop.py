"""The one training loop of ``train-teacher`` and ``distill``: :func:`fit`.

A :class:`Task` says what is trained (``trainable``, a submodule of the saved ``model``), on which
data, with which loss. :func:`fit` adds everything else:

* AdamW(lr, weight_decay) over the trainable parameters that require grad; ReduceLROnPlateau
  (mode ``min``) stepped once per epoch on the validation loss (training loss without validation);
* bf16 / fp16 autocast (the task's loss function decides what runs under it) and channels_last;
  fp16 uses a GradScaler;
* DistributedDataParallel when the runtime is distributed; ``DistributedSampler`` (``set_epoch``)
  for every world size, so data order depends only on (seed, epoch);
* per epoch the python / numpy / torch RNGs are reseeded from (seed, epoch, rank), so a run that is
  killed and resumed from an epoch-end checkpoint repeats exactly what the uninterrupted run did;
* files in the run folder (rank 0 only, every write atomic): ``last.pth`` (model + optimizer,
  scheduler, scaler, epoch / step, best metric, log rows, RNG states), ``best.pth`` (model only),
  ``log.csv`` (epoch, train_loss, val_loss, lr, seconds, images_per_s), ``loss.png``, ``run.json``
  (command line, config, data, runtime, sessions, timing). ``last.pth`` and ``best.pth`` are
  self-describing model checkpoints (``medsam_lite.checkpoint.load_model`` reads them).

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
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset

from medsam_lite.checkpoint import save_checkpoint
from medsam_lite.errors import InputError
from medsam_lite.io_utils import atomic_path

from .options import TrainConfig
from .runtime import Runtime

PathLike = Union[str, Path]
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s")
TIMING_COLUMNS = ("seconds", "images_per_s")
VAL_SALT = 99991

LossFn = Callable[[Callable[..., Any], Dict[str, Any], Runtime], torch.Tensor]
CheckpointHook = Callable[[int, int, bool], None]


@dataclass
class Task:
    """What :func:`fit` trains.

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
    """Outcome of :func:`fit` (paths in the run folder; rows as in log.csv)."""

    run_dir: Path
    last: Path
    best: Optional[Path]
    epochs_done: int
    rows: List[Dict[str, Any]]
    best_metric: float
    best_epoch: int


# ------------------------------------------------------------------ RNG helpers
def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1, 2 ** 31], dtype=np.uint64)))


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "torch_initial_seed": torch.initial_seed()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.manual_seed(int(state.get("torch_initial_seed", 0)))  # restores torch.initial_seed() too
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reset_dataset_rngs(dataset: Dataset) -> None:
    """Make medsam_lite.prep datasets re-seed their per-process random stream from ``torch.initial_seed()``.

    ``SliceDataset`` / ``ImageOnlyDataset`` keep one numpy Generator per process, seeded on first
    use; in the main process (``workers=0``) it would otherwise carry over between epochs and runs.
    """
    from medsam_lite.prep.dataset import _Seeded

    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            reset_dataset_rngs(part)
    elif isinstance(dataset, Subset):
        reset_dataset_rngs(dataset.dataset)
    elif isinstance(getattr(dataset, "_random", None), _Seeded):
        dataset._random = _Seeded()


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


def fit(task: Task, cfg: TrainConfig, run_dir: PathLike, rt: Runtime,
        on_checkpoint: Optional[CheckpointHook] = None) -> FitResult:
    """Train ``task`` for ``cfg.epochs`` epochs in ``run_dir`` (see module docstring).

    ``on_checkpoint(epoch, step, end_of_epoch)`` runs on every rank after each ``last.pth`` write
    (epoch 1-based; step = steps done in that epoch). With ``cfg.resume`` the run continues from
    ``run_dir/last.pth`` when it exists; without it an existing ``last.pth`` is refused.
    """
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pth", run_dir / "best.pth"
    check_run_folder(run_dir, cfg.resume)
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir, RUN_FILES)
    rt.barrier()

    model = task.model.to(rt.device)
    if rt.channels_last:
        task.trainable.to(memory_format=torch.channels_last)
    params = [p for p in task.trainable.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"task {task.name}: nothing to train")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch(len(task.train_set), cfg, rt.world_size))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)

    start_epoch, start_step = 0, 0
    rows: List[Dict[str, Any]] = []
    best, best_epoch = math.inf, 0
    partial = {"loss": 0.0, "count": 0.0, "seconds": 0.0, "train_seconds": 0.0}
    resumed_from = None
    if cfg.resume and last_path.exists():
        payload = torch.load(last_path, map_location="cpu", weights_only=False)
        state = payload.get("training") if isinstance(payload, dict) else None
        if not state:
            raise InputError("last.pth holds no training state", last_path)
        if state["task"] != task.name or payload["encoder"] != task.encoder:
            raise InputError(f"last.pth is a {state['task']} run of {payload['encoder']}, not {task.name} of "
                             f"{task.encoder}", last_path)
        if state.get("world_size", 1) != rt.world_size or state.get("batch_size") != cfg.batch_size:
            print(f"warning: resuming with world size {rt.world_size} / batch {cfg.batch_size} "
                  f"(saved: {state.get('world_size')} / {state.get('batch_size')}): not an exact continuation",
                  file=sys.stderr)
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        rows = list(state["rows"])
        best, best_epoch = float(state["best"]), int(state["best_epoch"])
        if start_step and rt.is_main:
            partial = dict(state["partial"])
        set_rng_state(state["rng"])
        resumed_from = {"epoch": start_epoch, "step": start_step}

    wrapped: nn.Module = task.trainable
    if rt.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            task.trainable, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters)

    def training_state(epoch: int, step: int, part: Dict[str, float]) -> Dict[str, Any]:
        return {"task": task.name, "epoch": epoch, "step": step, "partial": part,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rows": rows, "best": best,
                "best_epoch": best_epoch, "rng": rng_state(), "world_size": rt.world_size,
                "batch_size": cfg.batch_size, "config": cfg.to_dict()}

    def save_last(epoch: int, step: int, part: Dict[str, float]) -> None:
        if rt.is_main:
            save_checkpoint(model, last_path, task.encoder, task.checkpoint_config,
                            training=training_state(epoch, step, part))

    run_json = run_dir / "run.json"
    session = {"argv": list(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_from": resumed_from,
               "config": cfg.to_dict(), "world_size": rt.world_size, "device": str(rt.device),
               "amp": rt.amp_name, "channels_last": rt.channels_last}
    info: Dict[str, Any] = {}
    if rt.is_main:
        if cfg.resume and run_json.is_file():
            try:
                info = json.loads(run_json.read_text())
            except ValueError:
                info = {}
        info.update({"command": task.name, "encoder": task.encoder, "config": cfg.to_dict(), **task.describe,
                     "status": "running"})
        info["sessions"] = list(info.get("sessions", [])) + [session]
        _write_json(run_json, info)
    session_start = time.time()

    from tqdm import tqdm

    sampler = DistributedSampler(task.train_set, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    steps_full = math.ceil(len(sampler) / cfg.batch_size)
    steps = min(steps_full, cfg.max_steps) if cfg.max_steps else steps_full
    per_step = cfg.schedule == "cosine"
    longest_epoch = 0.0
    stopped_early: Optional[int] = None
    for epoch in range(start_epoch, cfg.epochs):
        skip = start_step if epoch == start_epoch else 0
        epoch_seed = derive_seed(cfg.seed, epoch, rt.rank)
        if skip == 0:
            seed_everything(epoch_seed)
            partial = {"loss": 0.0, "count": 0.0, "seconds": 0.0, "train_seconds": 0.0}
        reset_dataset_rngs(task.train_set)
        if task.set_epoch is not None:
            task.set_epoch(epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)[skip * cfg.batch_size: steps * cfg.batch_size]
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.time()
        loss_sum, count = partial["loss"], partial["count"]
        _train_mode(task)
        bar = tqdm(total=steps, initial=skip, desc=f"{task.name} epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (cfg.progress and rt.is_main), leave=False)
        step = skip
        for batch in _loader(task.train_set, order, cfg, rt, epoch_seed):
            loss = task.loss(wrapped, batch, rt)
            if not torch.isfinite(loss.detach()):
                raise RuntimeError(f"{task.name}: non-finite loss at epoch {epoch + 1} step {step + 1}; "
                                   f"{last_path} keeps the last good state (try a lower --lr or --amp off)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_step:
                scheduler.step()
            n = _batch_len(batch)
            loss_sum += float(loss.detach()) * n
            count += n
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps:
                g_loss, g_count = rt.sum([loss_sum, count])
                elapsed = partial["seconds"] + time.time() - t0
                save_last(epoch, step, {"loss": g_loss, "count": g_count, "seconds": elapsed,
                                        "train_seconds": elapsed})
                rt.barrier()
                if on_checkpoint is not None:
                    on_checkpoint(epoch + 1, step, False)
        bar.close()
        train_seconds = partial["train_seconds"] + time.time() - t0
        loss_sum, count = rt.sum([loss_sum, count])
        train_loss = loss_sum / max(count, 1.0)
        val_loss = validate(task, cfg, rt)
        seconds = partial["seconds"] + time.time() - t0
        metric = val_loss if val_loss is not None else train_loss
        if not per_step:
            scheduler.step(metric)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
               "seconds": round(seconds, 3), "images_per_s": round(count / max(train_seconds, 1e-9), 3)}
        rows.append(row)
        improved = metric < best
        if improved:
            best, best_epoch = metric, epoch + 1
        if rt.is_main:
            if improved:
                save_checkpoint(model, best_path, task.encoder, task.checkpoint_config, epoch=epoch + 1,
                                metric=metric, metric_name="val_loss" if val_loss is not None else "train_loss")
            save_last(epoch + 1, 0, {"loss": 0.0, "count": 0.0, "seconds": 0.0, "train_seconds": 0.0})
            write_log(run_dir / "log.csv", rows)
            plot_losses(run_dir / "loss.png", rows, f"{task.name} ({task.encoder})")
            val_text = f"{val_loss:.5g}" if val_loss is not None else "-"
            line = (f"{task.name} epoch {epoch + 1}/{cfg.epochs}: train {train_loss:.5g}  val {val_text}  "
                    f"lr {lr:.3g}  {seconds:.1f} s  {row['images_per_s']:.2f} img/s")
            if cfg.progress:
                tqdm.write(line)
            else:
                print(line, flush=True)
        rt.barrier()
        if on_checkpoint is not None:
            on_checkpoint(epoch + 1, 0, True)
        longest_epoch = max(longest_epoch, time.time() - t0)
        if (cfg.time_limit is not None and epoch + 1 < cfg.epochs
                and time.time() - session_start + longest_epoch > cfg.time_limit * 60.0):
            stopped_early = epoch + 1
            break

    epochs_done = stopped_early or max(start_epoch, cfg.epochs)
    if rt.is_main:
        if rows:
            write_log(run_dir / "log.csv", rows)
        session.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - session_start, 3))
        info["sessions"][-1] = session
        if stopped_early:
            session["stopped"] = f"time limit {cfg.time_limit:g} min after epoch {stopped_early}"
        info.update(status="done" if not stopped_early else "stopped (time limit)", epochs_done=epochs_done,
                    best_epoch=best_epoch,
                    best_metric=None if math.isinf(best) else best,
                    seconds_total=round(sum(float(r["seconds"]) for r in rows), 3))
        _write_json(run_json, info)
    rt.barrier()
    return FitResult(run_dir=run_dir, last=last_path, best=best_path if best_path.exists() else None,
                     epochs_done=epochs_done, rows=rows, best_metric=best, best_epoch=best_epoch)
