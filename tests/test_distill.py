"""train-teacher / distill: end to end through the CLI, exact resume, teacher cache, torchrun, bad input.

Data: a tiny prep output made from the bundled CT example (3 cases x 2 slices, one case for
validation). Cheap teacher for most tests: conftest's random RepViT checkpoint.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from medsam_lite.checkpoint import load_model
from medsam_lite.cli.main import main
from medsam_lite.errors import InputError
from medsam_lite.prep.dataset import MODEL_FRAME
from tests.conftest import EXAMPLES, REPO

TINY = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--no-progress", "--seed", "0"]


class Interrupt(Exception):
    """Stands in for a kill."""


def _run(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def prepped(tmp_path_factory) -> Path:
    """`medsam-lite prep` over 3 two-slice CT cases cut from examples/3DBox_CT_abdomen.npz."""
    src = tmp_path_factory.mktemp("npz")
    with np.load(EXAMPLES / "3DBox_CT_abdomen.npz") as z:
        imgs, gts, spacing = z["imgs"], z["gts"], z["spacing"]
    for name, z0 in (("a", 80), ("b", 90), ("c", 100)):
        np.savez(src / f"3DBox_CT_{name}.npz", imgs=imgs[z0:z0 + 2], gts=gts[z0:z0 + 2], spacing=spacing)
    out = tmp_path_factory.mktemp("prepped")
    assert main(["prep", str(src), "-o", str(out), "--val-fraction", "0.34", "--min-voxels", "0",
                 "--workers", "1", "--no-progress"]) == 0
    return out


def _state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log_rows(path: Path) -> List[Dict[str, str]]:
    from medsam_lite.distill.loop import TIMING_COLUMNS, read_log

    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in read_log(path)]


# ------------------------------------------------------------------ 1. end to end through the CLI
@pytest.mark.slow
def test_teacher_distill_segment_end_to_end(prepped, tmp_path, capsys) -> None:
    teacher_dir = tmp_path / "teacher"
    code, out, err = _run(capsys, "train-teacher", "--data", prepped, "-o", teacher_dir, "--encoder", "swin_t",
                          "--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--no-progress")
    assert code == 0, err
    for name in ("last.pth", "best.pth", "log.csv", "loss.png", "run.json"):
        assert (teacher_dir / name).is_file(), name
    rows = _log_rows(teacher_dir / "log.csv")
    assert len(rows) == 1 and np.isfinite(float(rows[0]["train_loss"])) and np.isfinite(float(rows[0]["val_loss"]))
    run = json.loads((teacher_dir / "run.json").read_text())
    assert run["status"] == "done" and run["encoder"] == "swin_t" and run["sessions"][0]["amp"] == "bf16"
    teacher = load_model(str(teacher_dir / "best.pth"))
    assert type(teacher.image_encoder).__name__ == "SwinEncoder"
    manifest = list(csv.DictReader(open(prepped / "manifest.csv")))
    expected_norm = {r["modality"]: r["normalization"] for r in manifest}
    assert expected_norm == {"CT": "precomputed-uint8"}  # the npz cases were challenge-normalised already
    for name in ("last.pth", "best.pth"):  # 5. checkpoints describe the preprocessing of their data
        config = torch.load(teacher_dir / name, map_location="cpu", weights_only=True)["config"]
        assert config["normalization"] == expected_norm and config["model_frame"] == MODEL_FRAME

    run_dir, cache = tmp_path / "student", tmp_path / "cache"
    code, out, err = _run(capsys, "distill", "--data", prepped, "-o", run_dir, "--teacher", teacher_dir / "best.pth",
                          "--cache-dir", cache, *TINY)
    assert code == 0, err
    for name in ("student.pth", "last.pth", "best.pth", "log.csv", "loss.png", "run.json"):
        assert (run_dir / name).is_file(), name
    assert np.isfinite(float(_log_rows(run_dir / "log.csv")[0]["train_loss"]))
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["variants"] == 1 and index["rows"] == {"train": 4, "val": 2}

    payload = torch.load(run_dir / "student.pth", map_location="cpu", weights_only=True)
    assert payload["encoder"] == "repvit_m0_6" and payload["config"]["teacher_sha256"] == index["teacher_sha256"]
    assert payload["config"]["normalization"] == expected_norm and payload["config"]["model_frame"] == MODEL_FRAME
    student = load_model(str(run_dir / "student.pth"))
    assert _same_state(student.prompt_encoder.state_dict(), teacher.prompt_encoder.state_dict())
    assert _same_state(student.mask_decoder.state_dict(), teacher.mask_decoder.state_dict())
    assert any(".bn." in k for k in payload["state_dict"])  # RepViT saved unfused

    case = tmp_path / "cases" / "2DBox_Microscopy_one.npz"  # 2D: one encoder call keeps this cheap
    case.parent.mkdir()
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(case, imgs=z["imgs"], boxes=z["boxes"][:2])
    code, out, err = _run(capsys, "segment", case, "-o", tmp_path / "seg", "--model", run_dir / "student.pth",
                          "--no-progress")
    assert code == 0, err
    segs = np.load(tmp_path / "seg" / case.name)["segs"]
    assert segs.shape == (512, 512) and segs.dtype == np.uint8 and segs.max() <= 2


# ------------------------------------------------------------------ teacher cache (shared by tests 2 and 3)
@pytest.fixture(scope="module")
def built_cache(prepped, tmp_path_factory, fast_checkpoint) -> dict:
    """A K = 2 cache of the random RepViT teacher, built with a kill after the first batch and a rerun."""
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    cache = tmp_path_factory.mktemp("cache") / "c"
    kwargs = dict(options=DistillConfig(teacher=str(fast_checkpoint), cache_dir=cache, aug_variants=2, cache_only=True),
                  config=TrainConfig(batch_size=2, progress=False))

    def stop_after_first_batch(done: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        distill([prepped], cache.parent / "unused", on_cache_batch=stop_after_first_batch, **kwargs)
    partial = {"index": json.loads((cache / "index.json").read_text()),
               "train_done": np.load(cache / "train_done.npy").copy()}
    counts: List[int] = []
    distill([prepped], cache.parent / "unused", on_cache_batch=counts.append, **kwargs)
    return {"cache": cache, "kwargs": kwargs, "partial": partial, "resumed_rows": counts[-1]}


def test_cache_build_resume_reuse_and_mismatch(prepped, built_cache, fast_checkpoint) -> None:
    from medsam_lite.distill import distill
    from medsam_lite.distill.augment import augment, to_model_input
    from medsam_lite.distill.cache import CacheSpec, prepare, teacher_embed
    from medsam_lite.distill.data import image_lists, load_model_frame

    cache, kwargs = built_cache["cache"], built_cache["kwargs"]
    assert not built_cache["partial"]["index"]["complete"]
    assert built_cache["partial"]["train_done"].tolist() == [1, 1] + [0] * 6  # killed after one batch of 2
    assert built_cache["resumed_rows"] == 4 * 2 + 2 - 2  # the rerun computed only the missing rows
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["rows"] == {"train": 8, "val": 2}

    counts: List[int] = []
    distill([prepped], cache.parent / "unused", on_cache_batch=counts.append, **kwargs)
    assert counts == []  # reused as is

    # every row is what an uninterrupted build defines: input = (augmented) model frame, embedding = teacher(input)
    train_refs, val_refs, _ = image_lists([prepped])
    inputs = np.load(cache / "train_inputs.npy")
    embeddings = np.load(cache / "train_embeddings.npy")
    assert inputs.shape == (8, 256, 256, 3) and embeddings.shape == (8, 256, 64, 64) and embeddings.dtype == np.float16
    for i, ref in enumerate(train_refs):
        image = load_model_frame(ref)
        assert np.array_equal(inputs[2 * i], to_model_input(image))  # variant 0 = plain
        assert np.array_equal(inputs[2 * i + 1], to_model_input(augment(image, 0, i, 1)))
        assert not np.array_equal(inputs[2 * i + 1], inputs[2 * i])
    assert np.array_equal(np.load(cache / "val_inputs.npy")[1], to_model_input(load_model_frame(val_refs[1])))
    teacher = load_model(str(fast_checkpoint))
    rows = [0, 1, 7]  # before and after the interruption
    expected = teacher_embed(teacher.image_encoder, torch.from_numpy(inputs[rows]), torch.device("cpu")).numpy()
    got = embeddings[rows].astype(np.float32)
    assert np.all(np.abs(got - expected) <= np.abs(expected) * 2 ** -10 + 1e-6)  # float16 rounding

    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.model import build_medsam

    other = cache.parent / "other.pth"
    torch.manual_seed(1)
    save_checkpoint(build_medsam("repvit_m0_6"), other, "repvit_m0_6")
    with pytest.raises(InputError, match="another teacher.*--rebuild-cache"):
        distill([prepped], cache.parent / "unused", **{**kwargs, "options": replace(kwargs["options"], teacher=str(other))})
    with pytest.raises(InputError, match="2 variant.*--rebuild-cache"):
        distill([prepped], cache.parent / "unused", **{**kwargs, "options": replace(kwargs["options"], aug_variants=3)})
    assert json.loads((cache / "index.json").read_text()) == index  # refused: untouched

    copy = cache.parent / "copy"
    copy.mkdir()
    for p in cache.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    spec = CacheSpec(teacher="x", teacher_sha="0" * 64, items={"train": train_refs, "val": val_refs})
    prepare(copy, spec, rebuild=True)
    assert sorted(p.name for p in copy.iterdir()) == ["index.json"]
    assert not json.loads((copy / "index.json").read_text())["complete"]


# ------------------------------------------------------------------ 2. exact resume
@pytest.mark.slow
def test_resume_after_kill_is_exact(prepped, tmp_path, fast_checkpoint, built_cache) -> None:
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    cache = built_cache["cache"]

    def cfg(**kw) -> TrainConfig:
        return TrainConfig(**{"epochs": 2, "max_steps": 2, "batch_size": 1, "progress": False, "seed": 3, **kw})

    def run(out: Path, config: TrainConfig, hook=None):
        return distill([prepped], out, DistillConfig(teacher=str(fast_checkpoint), cache_dir=cache, aug_variants=2),
                       config, on_checkpoint=hook)

    full = run(tmp_path / "full", cfg())

    def kill_after_epoch_1(epoch: int, step: int, end: bool) -> None:
        if epoch == 1 and end:
            raise Interrupt

    def kill_mid_epoch_2(epoch: int, step: int, end: bool) -> None:
        if epoch == 2 and step == 1 and not end:
            raise Interrupt

    out = tmp_path / "killed"
    with pytest.raises(Interrupt):
        run(out, cfg(), kill_after_epoch_1)
    saved = torch.load(out / "last.pth", map_location="cpu", weights_only=True)["training"]  # 4. weights-only form
    assert isinstance(saved["rng"]["numpy"]["key"], list) and len(saved["rng"]["python"]["internal"]) == 625
    assert not (out / "student.pth").exists() and len(_log_rows(out / "log.csv")) == 1
    with pytest.raises(InputError, match="--resume"):
        run(out, cfg())
    with pytest.raises(Interrupt):
        run(out, cfg(resume=True, checkpoint_every=1), kill_mid_epoch_2)
    loads: List[tuple] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        loads.append((Path(f).name if isinstance(f, (str, Path)) else f, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    torch.load = spy
    try:
        resumed = run(out, cfg(resume=True))
    finally:
        torch.load = real_load
    assert ("last.pth", True) in loads and ("best.pth", True) in loads  # resumed from a weights-only load
    assert all(wo for name, wo in loads if name in ("last.pth", "best.pth"))

    assert _same_state(_state(full.student), _state(resumed.student))
    assert _log_rows(full.run_dir / "log.csv") == _log_rows(out / "log.csv")
    assert len(_log_rows(out / "log.csv")) == 2
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [s["resumed_from"] for s in sessions] == [None, {"epoch": 1, "step": 0}, {"epoch": 1, "step": 1}]


@pytest.mark.slow
def test_cosine_schedule_resume_and_time_limit(prepped, tmp_path, fast_checkpoint, built_cache) -> None:
    """--schedule cosine decays per step and resumes exactly; --time-limit stops at an epoch end and finalises."""
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    def cfg(**kw) -> TrainConfig:
        return TrainConfig(**{"epochs": 2, "max_steps": 2, "batch_size": 1, "progress": False, "seed": 4,
                              "lr": 0.01, "schedule": "cosine", "min_lr_ratio": 0.1, **kw})

    def run(out: Path, config: TrainConfig, hook=None):
        return distill([prepped], out, DistillConfig(teacher=str(fast_checkpoint), cache_dir=built_cache["cache"],
                                                     aug_variants=2), config, on_checkpoint=hook)

    full = run(tmp_path / "full", cfg())
    # 4 steps in all; epoch 2 starts after 2: lr = 0.01 * (0.1 + 0.9 * (1 + cos(pi / 2)) / 2) = 0.0055
    assert [float(r["lr"]) for r in _log_rows(full.run_dir / "log.csv")] == pytest.approx([0.01, 0.0055])

    def kill_after_epoch_1(epoch: int, step: int, end: bool) -> None:
        if epoch == 1 and end:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "killed", cfg(), kill_after_epoch_1)
    resumed = run(tmp_path / "killed", cfg(resume=True))
    assert _same_state(_state(full.student), _state(resumed.student))

    limited = run(tmp_path / "limited", cfg(epochs=3, time_limit=1e-6))
    assert limited.fit.epochs_done == 1 and limited.student.is_file()
    assert len(_log_rows(limited.run_dir / "log.csv")) == 1
    info = json.loads((limited.run_dir / "run.json").read_text())
    assert info["status"] == "stopped (time limit)" and "after epoch 1" in info["sessions"][-1]["stopped"]
    continued = run(tmp_path / "limited", cfg(epochs=3, resume=True))
    assert continued.fit.epochs_done == 3 and len(_log_rows(continued.run_dir / "log.csv")) == 3


@pytest.mark.slow
def test_init_student_warm_start(prepped, tmp_path, fast_checkpoint, built_cache) -> None:
    """--init-student copies the given encoder into the student (lr 0 keeps it: AdamW then changes nothing)."""
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    import random

    cfg = TrainConfig(epochs=1, max_steps=1, batch_size=1, lr=0.0, progress=False)
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    warm = DistillConfig(teacher=str(fast_checkpoint), cache_dir=built_cache["cache"], aug_variants=2,
                         init_student=str(fast_checkpoint))
    result = distill([prepped], tmp_path / "warm", warm, cfg)
    # 6. no process state changed: the caller's RNG streams are where they were (the trainer reseeds per epoch)
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    source, student = _state(fast_checkpoint), _state(result.student)
    weights = [k for k in source if k.startswith("image_encoder.") and not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(torch.equal(source[k], student[k]) for k in weights)
    assert json.loads((tmp_path / "warm" / "run.json").read_text())["init_student"] == str(fast_checkpoint)
    with pytest.raises(InputError, match="--init-student .* not a tiny_vit encoder"):
        distill([prepped], tmp_path / "bad", replace(warm, student="tiny_vit"), cfg)


def test_validation_split_by_case(tmp_path) -> None:
    """Without a manifest val split, --val-split case keeps every case's slices on one side; image draws slices."""
    from medsam_lite.distill.data import image_lists

    src = tmp_path / "npz"
    src.mkdir()
    with np.load(EXAMPLES / "3DBox_CT_abdomen.npz") as z:
        for name, z0 in (("a", 80), ("b", 90), ("c", 100)):
            np.savez(src / f"3DBox_CT_{name}.npz", imgs=z["imgs"][z0:z0 + 2], gts=z["gts"][z0:z0 + 2], spacing=z["spacing"])
    out = tmp_path / "prepped"
    assert main(["prep", str(src), "-o", str(out), "--val-fraction", "0", "--min-voxels", "0", "--workers", "1",
                 "--no-progress"]) == 0
    case_of = {r["file"]: r["case"] for r in csv.DictReader(open(out / "manifest.csv"))}
    assert len(case_of) == 6 and len(set(case_of.values())) == 3
    train, val, info = image_lists([out], val_fraction=0.34)
    val_cases = {case_of[r.file] for r in val}
    assert len(val_cases) == 1 and len(val) == 2 and not val_cases & {case_of[r.file] for r in train}
    assert info[0]["val_from"] == "fraction 0.34 of 3 cases, seed 0"
    train, val, info = image_lists([out], val_fraction=0.34, val_split="image")
    assert len(val) == 2 and len(train) == 4 and info[0]["val_from"] == "fraction 0.34, seed 0"
    with pytest.raises(InputError, match="--val-split"):
        image_lists([out], val_split="slice")


def test_mask_boxes_inside_content() -> None:
    """Mask-distillation boxes lie inside each image's unpadded content (model frame)."""
    from medsam_lite.distill.mask_kd import MaskDistillLoss, content_sizes
    from medsam_lite.model import build_medsam

    images = torch.zeros(2, 3, 256, 256)
    images[0, :, :100, :] = 0.5
    images[1, 1, :, :40] = 1.0
    assert content_sizes(images) == [(100, 256), (256, 40)]
    np.random.seed(0)
    boxes = MaskDistillLoss(build_medsam("repvit_m0_6"), boxes_per_image=6).boxes(images)
    assert [tuple(b.shape) for b in boxes] == [(6, 4), (6, 4)]
    for b, (h, w) in zip(boxes, [(100, 256), (256, 40)]):
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= w - 1).all() and (b[:, 3] <= h - 1).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


@pytest.mark.slow
def test_mask_distillation_term(prepped, tmp_path, fast_checkpoint, built_cache) -> None:
    """--mask-loss-weight adds the decoder-mask term: a higher first-step loss than MSE alone (same data and
    init), deterministic runs, and the prompt encoder / mask decoder still copied unchanged."""
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    cfg = TrainConfig(epochs=1, max_steps=1, batch_size=2, progress=False, seed=5)

    def run(name: str, weight: float):
        return distill([prepped], tmp_path / name, DistillConfig(teacher=str(fast_checkpoint),
                       cache_dir=built_cache["cache"], aug_variants=2, mask_loss_weight=weight), cfg)

    plain, a, b = run("plain", 0.0), run("a", 1.0), run("b", 1.0)

    def first_loss(result) -> float:
        return float(_log_rows(result.run_dir / "log.csv")[0]["train_loss"])

    assert first_loss(a) > first_loss(plain) > 0
    assert _same_state(_state(a.student), _state(b.student))
    assert not _same_state(_state(a.student), _state(plain.student))
    teacher, student = _state(fast_checkpoint), _state(a.student)
    frozen = [k for k in teacher if k.startswith(("prompt_encoder.", "mask_decoder."))]
    assert frozen and all(torch.equal(teacher[k], student[k]) for k in frozen)
    run_info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_info["mask_loss_weight"] == 1.0 and run_info["mask_boxes"] == 2


def test_cache_agreement_of_the_teacher_with_itself(prepped, fast_checkpoint, built_cache) -> None:
    """scripts.recipe.cache_agreement: the teacher against its own cached embeddings agrees up to the
    cache's float16 rounding; a cache of other data is refused."""
    from scripts.recipe.cache_agreement import cache_agreement

    result = cache_agreement(str(fast_checkpoint), [prepped], built_cache["cache"], teacher=str(fast_checkpoint),
                             stride=1, n_boxes=3)
    assert result["train"]["images"] == 4 and result["train"]["boxes"] == 12 and result["val"]["boxes"] == 6
    assert result["train"]["mean_iou"] > 0.95 and result["val"]["mean_iou"] > 0.95
    with pytest.raises(InputError, match="not a complete cache"):
        cache_agreement(str(fast_checkpoint), [prepped], built_cache["cache"], teacher="lite_medsam")


# ------------------------------------------------------------------ online mode + decoder fine-tuning
@pytest.mark.slow
def test_online_augment_and_finetune_decoder(prepped, tmp_path, fast_checkpoint) -> None:
    from medsam_lite.distill import DistillConfig, TrainConfig, distill

    cfg = TrainConfig(epochs=1, max_steps=1, batch_size=1, progress=False)
    result = distill([prepped], tmp_path / "run", DistillConfig(teacher=str(fast_checkpoint), augment=True,
                     finetune_decoder=True, finetune_epochs=1), cfg)
    teacher = load_model(str(fast_checkpoint))
    student = load_model(str(result.student))
    distilled = _state(result.fit.best)
    assert _same_state(student.image_encoder.state_dict(),
                       {k[len("image_encoder."):]: v for k, v in distilled.items() if k.startswith("image_encoder.")})
    assert _same_state(student.prompt_encoder.state_dict(), teacher.prompt_encoder.state_dict())
    assert not _same_state(student.mask_decoder.state_dict(), teacher.mask_decoder.state_dict())
    assert (result.run_dir / "finetune" / "log.csv").is_file()


# ------------------------------------------------------------------ 4. torchrun, 2 CPU processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(prepped, tmp_path, fast_checkpoint) -> None:
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "medsam_lite.cli.main",
           "distill", "--data", str(prepped), "-o", str(run_dir), "--teacher", str(fast_checkpoint),
           "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "--max-steps", "1", "--batch-size", "1",
           "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("student: ") == 1  # rank 0 reports once ...
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["best.pth", "last.pth", "log.csv", "loss.png", "run.json", "student.pth"]  # ... no temp files
    run = json.loads((run_dir / "run.json").read_text())
    assert run["sessions"][0]["world_size"] == 2 and run["status"] == "done"
    assert len(_log_rows(run_dir / "log.csv")) == 2
    assert type(load_model(str(run_dir / "student.pth")).image_encoder).__name__ == "RepViTEncoder"


# ------------------------------------------------------------------ 5. bad input
def test_bad_input_one_line_exit_2(prepped, tmp_path, capsys) -> None:
    missing = tmp_path / "nope"
    code, _, err = _run(capsys, "distill", "--data", missing, "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and str(missing) in err
    code, _, err = _run(capsys, "train-teacher", "--data", missing, "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and str(missing) in err
    code, _, err = _run(capsys, "train-teacher", "--data", prepped, "-o", tmp_path / "o", "--encoder", "vit_h")
    assert code == 2 and err.count("\n") == 1 and "unknown encoder 'vit_h'" in err
    code, _, err = _run(capsys, "distill", "--data", prepped, "-o", tmp_path / "o", "--student", "vit_h")
    assert code == 2 and err.count("\n") == 1 and "unknown encoder 'vit_h'" in err
    code, _, err = _run(capsys, "distill", "--data", prepped, "-o", tmp_path / "o", "--teacher", "no_such_model")
    assert code == 2 and err.count("\n") == 1 and "no_such_model" in err
    empty = tmp_path / "empty"
    (empty / "imgs").mkdir(parents=True)
    (empty / "manifest.csv").write_text("file,split,labels\n")
    code, _, err = _run(capsys, "train-teacher", "--data", empty, "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and str(empty / "manifest.csv") in err
    code, _, err = _run(capsys, "distill", "--data", empty, "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and str(empty / "manifest.csv") in err
    code, _, err = _run(capsys, "distill", "--data", prepped, "-o", tmp_path / "o", "--aug-variants", "2")
    assert code == 2 and "--cache-dir" in err
    code, _, err = _run(capsys, "distill", "--data", prepped, "-o", tmp_path / "o", "--mask-loss-weight", "1",
                        "--mask-boxes", "0")
    assert code == 2 and err.count("\n") == 1 and "--mask-boxes" in err
    assert not (tmp_path / "o").exists()


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_resume_refuses_pickle_payload(prepped, tmp_path, capsys, fast_checkpoint) -> None:
    """A crafted last.pth holding a pickle payload is refused (one line naming it, exit 2) without running it."""
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_dir.mkdir()
    crafted = run_dir / "last.pth"
    good = torch.load(fast_checkpoint, map_location="cpu", weights_only=True)
    torch.save({**good, "training": {"task": "distill", "rng": _Payload(marker)}}, crafted)
    torch.load(crafted, map_location="cpu", weights_only=False)  # the payload is live: a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    for command in ("distill", "train-teacher"):
        extra = ["--teacher", fast_checkpoint] if command == "distill" else ["--encoder", "repvit_m0_6"]
        code, _, err = _run(capsys, command, "--data", prepped, "-o", run_dir, *extra, *TINY, "--resume")
        assert code == 2 and err.count("\n") == 1 and str(crafted) in err and "not unpickled" in err, err
        assert not marker.exists()
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == ["last.pth"]


@pytest.mark.slow
def test_real_sigkill_during_checkpoint_writes_then_resume(prepped, tmp_path, fast_checkpoint) -> None:
    """A real SIGKILL of ``medsam-lite distill`` while it writes checkpoints every step: every file left is
    whole (last.pth loads weights-only), ``--resume`` finishes the run, and no temporary file survives."""
    import signal
    import sys
    import time

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "medsam_lite.cli.main", "distill", "--data", str(prepped), "-o", str(run_dir),
           "--teacher", str(fast_checkpoint), "--student", "repvit_m0_6_fpn", "--epochs", "4", "--batch-size", "1",
           "--checkpoint-every", "1", "--no-progress", "--amp", "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (run_dir / "last.pth").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # inside the next steps, whose checkpoint writes are in flight
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "last.pth").exists()
    torch.load(run_dir / "last.pth", map_location="cpu", weights_only=True)  # never a torn file
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "student.pth").exists()
    assert len(_log_rows(run_dir / "log.csv")) == 4
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
