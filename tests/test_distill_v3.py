"""Student v3 training side: fresh views (held-out sources excluded, deterministic, physical spacing), packs,
teacher boxes for the mask term, exact resume, partly frozen encoders, DDP == one process, the campaign.

Teachers and students here are a tiny registered GroupNorm encoder (``v3_tiny``, random init) so the loop
runs in seconds; views come from the real training sources in tests/fixtures/shared (CT volume, fundus,
microscopy) and the teacher-box test uses the real LiteMedSAM on a bundled CT slice.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.encoders import ENCODERS
from medsam_lite.errors import InputError
from medsam_lite.distill.loop import read_log
from tests.conftest import EXAMPLES, FIXTURES, REPO

FIXTURE_SHARED = FIXTURES / "shared"


class TinyEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64): stride-4 conv, GroupNorm (batch independent), GELU, 1x1 conv."""

    def __init__(self, frozen_stem: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.GroupNorm(4, 8)
        self.head = nn.Conv2d(8, 256, 1)
        if frozen_stem:
            self.stem.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.norm(self.stem(x))))


def register_tiny() -> None:
    ENCODERS["v3_tiny"] = TinyEncoder
    ENCODERS["v3_tiny_frozen"] = lambda: TinyEncoder(frozen_stem=True)


@pytest.fixture
def tiny(monkeypatch) -> None:
    monkeypatch.setitem(ENCODERS, "v3_tiny", TinyEncoder)
    monkeypatch.setitem(ENCODERS, "v3_tiny_frozen", lambda: TinyEncoder(frozen_stem=True))


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """A views pack of the training sources present in tests/fixtures/shared."""
    from medsam_lite.distill.views import TRAINING_SOURCES, read_source, write_pack

    sources = [s for s in TRAINING_SOURCES if (FIXTURE_SHARED / s.path).exists()]
    assert {s.name for s in sources} >= {"ct_organs", "fundus", "microscopy"}
    return write_pack([read_source(FIXTURE_SHARED, s) for s in sources], tmp_path_factory.mktemp("p") / "pack")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.model import MedSAMLite, build_mask_decoder, build_prompt_encoder

    torch.manual_seed(1)
    model = MedSAMLite(TinyEncoder(), build_prompt_encoder(), build_mask_decoder()).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("t") / "tiny_teacher.pth", "v3_tiny", {"note": "random"})


def _state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ sources and views
def test_view_sources_exclude_every_held_out_source() -> None:
    from medsam_lite.distill.fidelity import HELD_OUT
    from medsam_lite.distill.views import TRAINING_SOURCES, check_not_held_out

    held = [h.path for h in HELD_OUT if not h.path.startswith("pydicom:")]
    object_dirs = ("nuclei2d/", "mni152/", "mr_organs/", "lesions/breast1")  # fidelity.object_cases reads these
    for source in TRAINING_SOURCES:
        assert source.path not in held
        assert not any(source.path.startswith(d) for d in object_dirs), source
        check_not_held_out(source.path)
    for path in held + ["mni152/gm_prob.nii.gz", "lesions/breast1_label.nrrd", "mr_organs/labels.nii.gz"]:
        with pytest.raises(InputError, match="held-out"):
            check_not_held_out(path)
    modalities = {line.split(",")[3] for line in (REPO / "docs/distill/data_list.csv").read_text().splitlines()[1:]}
    assert {s.modality for s in TRAINING_SOURCES} == modalities  # the sources the training list was cut from


def test_pack_manifest_checksums_and_limit(pack, tmp_path) -> None:
    from medsam_lite.distill.views import PACK_MANIFEST, read_pack, read_source, TRAINING_SOURCES, write_pack

    manifest = json.loads((pack / PACK_MANIFEST).read_text())
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in pack.glob("*.npz")) <= 64 * 2 ** 20
    loaded = {s.name: s for s in read_pack(pack)}
    ct = read_source(FIXTURE_SHARED, next(s for s in TRAINING_SOURCES if s.name == "ct_organs"))
    assert np.array_equal(loaded["ct_organs"].array, ct.array) and loaded["ct_organs"].spacing_zyx == ct.spacing_zyx
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in pack.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "fundus.npz").read_bytes())
    data[-100] ^= 0xFF
    (bad / "fundus.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        read_pack(bad)
    with pytest.raises(InputError, match="exceed"):
        write_pack([ct], tmp_path / "small", limit_bytes=1000)
    assert not (tmp_path / "small").exists() and not list(tmp_path.glob(".small.*"))


def test_views_deterministic_model_frame_and_balanced(pack) -> None:
    from medsam_lite.distill.views import ViewSampler, read_pack

    sampler = ViewSampler(read_pack(pack))
    a, b, c = sampler.view(0, 1, 2), sampler.view(0, 1, 2), sampler.view(0, 1, 3)
    assert a.shape == (3, 256, 256) and a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() == 0.0 and a.max() == 1.0  # min-max scaled like inference preprocessing
    rgb = {s.name for s in sampler.sources if s.is_rgb}
    for i in range(6):
        view, name = sampler.view(7, i), sampler.draw(7, i)[1]
        assert np.array_equal(view[0], view[1]) == (name not in rgb), name  # grey -> 3 equal channels
    names = [sampler.draw(5, i)[1] for i in range(60)]
    per_modality = {m: sum(n in {s.name for s in v} for n in names) for m, v in sampler.by_modality.items()}
    assert len(per_modality) == 3 and min(per_modality.values()) >= 10, per_modality  # ~20 each of 60


def test_oblique_planes_respect_physical_spacing() -> None:
    """A 15 mm ball in a volume of 4 x 1 x 1 mm voxels must look round in every plane (ignoring spacing: 4x squashed)."""
    from medsam_lite.distill.views import ViewConfig, oblique_plane

    spacing = (4.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) + 0.5 for n in (40, 160, 160)), indexing="ij")
    ball = (((z * 4 - 80) ** 2 + (y - 80) ** 2 + (x - 80) ** 2) < 15 ** 2).astype(np.float32)
    cfg = ViewConfig(fov_range=(0.6, 0.6), slab_p=0.0)
    ratios = []
    for seed in range(64):
        plane = oblique_plane(ball, spacing, np.random.default_rng(seed), cfg) > 0.5
        inner = not (plane[0].any() or plane[-1].any() or plane[:, 0].any() or plane[:, -1].any())
        if plane.sum() > 100 and inner:  # a whole disc inside the field of view
            ys, xs = np.nonzero(plane)
            ratios.append((np.ptp(ys) + 1) / (np.ptp(xs) + 1))
    assert len(ratios) >= 4 and all(0.8 < r < 1.25 for r in ratios), ratios


# ------------------------------------------------------------------ teacher boxes
def test_teacher_boxes_are_object_like_and_stable(lite_medsam) -> None:
    from medsam_lite.distill.mask_kd import MAX_BOX_FRACTION, MIN_MASK_PX, MaskDistillLoss
    from medsam_lite.distill.runtime import Runtime
    from medsam_lite.transforms import preprocess_image

    with np.load(EXAMPLES / "3DBox_CT_abdomen.npz") as z:
        image = z["imgs"][z["imgs"].shape[0] // 2]
    tensor, (h, w) = preprocess_image(image)
    with torch.no_grad():
        emb = lite_medsam.image_encoder(tensor)
    term = MaskDistillLoss(lite_medsam, boxes_per_image=12, weight=1.0, box_source="teacher", stable_iou=0.8)
    rt = Runtime(device=torch.device("cpu"))
    candidates = term.boxes(tensor, keys=[3])[0]
    with torch.no_grad():
        boxes, target = term.teacher_boxes(emb, candidates, (h, w))
        assert 1 <= boxes.shape[0] <= 12 and target.shape == (boxes.shape[0], 1, 256, 256)
        again, _ = lite_medsam.decode(emb, boxes)
        first, _ = lite_medsam.decode(emb, candidates)
    first_masks = [m[0] > 0 for m in first]
    tight = [torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float() if m.any() else None
             for m in first_masks for ys, xs in [torch.nonzero(m, as_tuple=True)]]
    for box, t, a in zip(boxes, target, again):
        mask = t[0] > 0
        assert torch.equal(a[0] > 0, mask)  # the target is the teacher's mask for the kept box
        k = next(i for i, b in enumerate(tight) if b is not None and torch.equal(b, box))  # tight box of a candidate mask
        assert first_masks[k].sum() >= MIN_MASK_PX
        assert (box[2] - box[0] + 1) * (box[3] - box[1] + 1) <= MAX_BOX_FRACTION * h * w
        iou = (first_masks[k] & mask).sum() / (first_masks[k] | mask).sum()
        assert iou >= 0.8  # teacher-stable
    assert term.kept[0] == boxes.shape[0] and term.kept[1] == 12
    same = term(emb, emb, tensor, rt, keys=[3])
    noisy = term(emb + 0.5 * torch.randn_like(emb), emb, tensor, rt, keys=[3])
    assert float(noisy) > float(same)
    none = MaskDistillLoss(lite_medsam, 4, 1.0, "teacher", stable_iou=1.01)  # nothing is that stable
    student = emb.clone().requires_grad_(True)
    zero = none(student, emb, tensor, rt, keys=[3])
    zero.backward()
    assert float(zero) == 0.0 and student.grad is not None


def test_mask_fraction_selects_views_by_key_and_rescales(lite_medsam) -> None:
    from medsam_lite.distill.mask_kd import FRACTION_MOD, MaskDistillLoss
    from medsam_lite.distill.runtime import Runtime

    rt = Runtime(device=torch.device("cpu"))
    torch.manual_seed(0)
    images = torch.rand(4, 3, 256, 256)
    teacher, student = torch.randn(4, 256, 64, 64), torch.randn(4, 256, 64, 64)
    keys = [3, FRACTION_MOD - 1, 2 * FRACTION_MOD + 10, 5 * FRACTION_MOD + FRACTION_MOD // 2 + 7]  # in, out, in, out
    part = MaskDistillLoss(lite_medsam, 1, 1.0, "random", fraction=0.5)
    whole = MaskDistillLoss(lite_medsam, 1, 1.0, "random")
    with torch.no_grad():
        each = [float(whole(student[i:i + 1], teacher[i:i + 1], images[i:i + 1], rt, [keys[i]])) for i in (0, 2)]
        value = float(part(student, teacher, images, rt, keys))
    assert value == pytest.approx(sum(each) / (0.5 * 4), rel=1e-5)


# ------------------------------------------------------------------ the loop
def _online(pack, teacher, out, student="v3_tiny", epochs=2, checkpoint_every=0, on_checkpoint=None, resume=False,
            batch=2, views=4, prompt="teacher"):
    from medsam_lite.distill.options import DistillConfig, TrainConfig
    from medsam_lite.distill.student import distill

    opt = DistillConfig(teacher=str(teacher), student=student, online_views=True, views_per_epoch=views, val_views=2,
                        mask_loss_weight=0.5, mask_boxes=3, prompt_boxes=prompt, teacher_backend="torch")
    cfg = TrainConfig(epochs=epochs, batch_size=batch, progress=False, amp="off", seed=0, device="cpu",
                      checkpoint_every=checkpoint_every, resume=resume)
    return distill([pack], out, opt, cfg, on_checkpoint=on_checkpoint)


class Interrupt(Exception):
    pass


def test_online_views_reproducible_and_mid_epoch_resume_exact(pack, tiny_teacher, tmp_path, tiny) -> None:
    from medsam_lite.distill.student import FreshViews

    first = FreshViews(pack, 2, seed=0)
    e0 = first[0]["image"]
    first.set_epoch(1)
    assert not torch.equal(e0, first[0]["image"])  # a new epoch draws new views
    a = _online(pack, tiny_teacher, tmp_path / "a", checkpoint_every=1)
    sa = _state(a.run_dir / "last.pth")

    def kill(epoch: int, step: int, end: bool) -> None:
        if epoch == 2 and step == 1:  # after the first step of the second epoch
            raise Interrupt

    with pytest.raises(Interrupt):
        _online(pack, tiny_teacher, tmp_path / "c", checkpoint_every=1, on_checkpoint=kill)
    assert torch.load(tmp_path / "c/last.pth", weights_only=True)["training"]["step"] == 1
    c = _online(pack, tiny_teacher, tmp_path / "c", checkpoint_every=1, resume=True)
    sc = _state(c.run_dir / "last.pth")
    assert all(torch.equal(sa[k], sc[k]) for k in sa)  # same seed, resumed mid-epoch == uninterrupted run
    init = TinyEncoder()
    assert not torch.equal(sa["image_encoder.head.weight"], init.head.weight)
    run = json.loads((a.run_dir / "run.json").read_text())
    assert run["teacher_backend"] == "torch fp32" and run["teacher_ms_per_image"] > 0


def test_partly_frozen_student_trains_only_its_trainable_parameters(pack, tiny_teacher, tmp_path, tiny) -> None:
    torch.manual_seed(0)
    reference = TinyEncoder(frozen_stem=True)  # _student_model builds it under torch.manual_seed(cfg.seed = 0)
    result = _online(pack, tiny_teacher, tmp_path / "f", student="v3_tiny_frozen", epochs=1)
    state = _state(result.run_dir / "last.pth")
    assert torch.equal(state["image_encoder.stem.weight"], reference.stem.weight)
    assert not torch.equal(state["image_encoder.head.weight"], reference.head.weight)


def test_repvit_fpn_student_one_online_step(pack, tiny_teacher, tmp_path, tiny) -> None:
    result = _online(pack, tiny_teacher, tmp_path / "r", student="repvit_m0_6_fpn", epochs=1, batch=1, views=1)
    assert result.student is not None and result.fit.rows[0]["train_loss"] > 0


def _ddp_vs_single(pack: Path, teacher: str, tmp_path: Path, extra: list) -> None:
    """2 gloo processes x batch 1 == 1 process x batch 2 (fp32, online views + teacher-box mask term, 3 steps)."""
    common = ["distill", "--online-views", "--data", str(pack), "--teacher", teacher, "--student", "v3_tiny",
              "--views-per-epoch", "6", "--val-views", "2", "--mask-loss-weight", "0.5", "--prompt-boxes", "teacher",
              "--teacher-backend", "torch", "--epochs", "1", "--amp", "off", "--device", "cpu", "--no-progress",
              "--seed", "0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "tests.test_distill_v3",
           *common, "-o", str(tmp_path / "ddp"), "--batch-size", "1"]
    proc = subprocess.run(ddp, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "tests.test_distill_v3", *common, "-o", str(tmp_path / "one"),
                             "--batch-size", "2"], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert single.returncode == 0, single.stderr[-3000:]
    run = json.loads((tmp_path / "ddp/run.json").read_text())
    assert run["sessions"][0]["world_size"] == 2
    a, b = _state(tmp_path / "ddp/last.pth"), _state(tmp_path / "one/last.pth")
    torch.manual_seed(0)
    start = TinyEncoder()
    assert not torch.allclose(a["image_encoder.head.weight"], start.head.weight)  # it trained
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), key
    rows_a, rows_b = (read_log(tmp_path / d / "log.csv")[0] for d in ("ddp", "one"))
    assert float(rows_a["train_loss"]) == pytest.approx(float(rows_b["train_loss"]), rel=1e-5)


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(pack, tiny_teacher, tmp_path, tiny) -> None:
    """Tiny random teacher: its masks are never object-like, so the mask term adds 0 here (the slow variant
    below runs LiteMedSAM, whose boxes are kept); --mask-fraction 0.5 selects views by key."""
    _ddp_vs_single(pack, str(tiny_teacher), tmp_path, ["--mask-boxes", "3", "--mask-fraction", "0.5"])


@pytest.mark.slow
def test_ddp_equal_one_process_with_lite_medsam_teacher_boxes(pack, tmp_path, tiny) -> None:
    _ddp_vs_single(pack, "lite_medsam", tmp_path, ["--mask-boxes", "4", "--stable-iou", "0.5"])


def test_campaign_end_to_end_and_resume(pack, tiny_teacher, tmp_path, tiny, capsys) -> None:
    from medsam_lite.cli.main import main

    out = tmp_path / "campaign"
    argv = ["campaign", "run", "--pack", str(pack), "-o", str(out), "--minutes", "0.01", "--student", "v3_tiny",
            "--teacher", str(tiny_teacher), "--batch-size", "2", "--views-per-epoch", "4", "--val-views", "2",
            "--device", "cpu", "--amp", "off", "--teacher-backend", "torch", "--checkpoint-every", "1",
            "--no-progress", "--resume"]
    assert main(argv) == 0
    assert "campaign: stopped (time limit)" in capsys.readouterr().out
    first = json.loads((out / "campaign.json").read_text())
    assert main(argv) == 0
    info = json.loads((out / "campaign.json").read_text())
    assert len(info["sessions"]) == 2 and info["sessions"][1]["epochs_done"] > first["sessions"][0]["epochs_done"]
    assert info["distill"]["online_views"] and info["distill"]["prompt_boxes"] == "teacher"
    assert info["config"]["lr"] is None and info["train"]["lr"] == 0.005  # from scratch: the recipe's rate
    run = json.loads((out / "run.json").read_text())
    assert [s["resumed_from"] for s in run["sessions"]][1] == {"epoch": first["sessions"][0]["epochs_done"], "step": 0}
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "campaign.json", "last.pth", "log.csv", "loss.png",
                                                    "run.json", "student.pth"]
    assert main(["campaign", "run", "--pack", str(tmp_path), "-o", str(tmp_path / "x")]) == 2
    assert "not a views pack" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_campaign_learning_rate_follows_the_warm_start() -> None:
    """A warm start gets the 10x lower rate the second CPU campaign measured; a given --lr is kept as given."""
    from medsam_lite.distill.campaign import CampaignConfig, campaign_configs

    lr = lambda **kw: campaign_configs(CampaignConfig.of(device="cpu", **kw))[1].lr  # noqa: E731
    assert lr() == 0.005
    assert lr(init_student="repvit_m0_6_lite") == 0.0005
    assert lr(init_student="repvit_m0_6_lite", lr=0.002) == 0.002 and lr(lr=0.0001) == 0.0001


def test_campaign_configs_keep_the_cpu_and_cuda_defaults() -> None:
    """CampaignConfig is a DistillConfig + TrainConfig + the device-dependent settings: its defaults resolve to
    exactly what the flat campaign settings (before the composition) gave, on CPU and on CUDA (2 processes)."""
    from medsam_lite.distill.campaign import CampaignConfig, campaign_configs
    from medsam_lite.distill.options import DistillConfig, TrainConfig

    def expected(device: str, batch: int, views: int, fraction: float):
        return (DistillConfig(teacher="lite_medsam", student="repvit_m0_6_fpn", online_views=True, views_per_epoch=views,
                              val_views=16, mask_loss_weight=0.01, mask_boxes=4, prompt_boxes="teacher",
                              mask_fraction=fraction, init_student=None, teacher_backend="auto"),
                TrainConfig(epochs=100000, batch_size=batch, lr=0.005, schedule="plateau", seed=0, device=device,
                            amp="auto", workers=0, resume=False, checkpoint_every=50, progress=True, time_limit=10.0))

    assert campaign_configs(CampaignConfig.of(device="cpu")) == expected("cpu", 8, 64, 0.25)
    assert campaign_configs(CampaignConfig.of(device="cuda"), world_size=2) == expected("cuda", 64, 16 * 64 * 2, 1.0)
    cpu = CampaignConfig(train=TrainConfig(epochs=100000, checkpoint_every=50, time_limit=10.0, device="cpu"))
    assert campaign_configs(cpu) == expected("cpu", 8, 64, 0.25)  # composed directly == from flat settings
    with pytest.raises(TypeError, match="no setting 'minute'"):
        CampaignConfig.of(minute=3)


def test_campaign_and_distill_flags_map_onto_the_configs() -> None:
    """Every ``campaign run`` / ``distill`` flag lands in its config field (and the CLI defaults are the configs')."""
    from medsam_lite.cli.campaign import config_from_args
    from medsam_lite.cli.main import build_parser
    from medsam_lite.distill.campaign import campaign_configs
    from medsam_lite.distill.options import DistillConfig, TrainConfig, config_from_args as train_from_args, from_args

    parser = build_parser()
    args = parser.parse_args(["campaign", "run", "--pack", "P", "-o", "O", "--minutes", "3", "--student", "s",
                              "--teacher", "t", "--init-student", "i", "--batch-size", "4", "--views-per-epoch", "12",
                              "--val-views", "3", "--lr", "0.001", "--mask-loss-weight", "0.5", "--mask-boxes", "2",
                              "--mask-fraction", "0.5", "--prompt-boxes", "random", "--teacher-backend", "torch",
                              "--device", "cpu", "--amp", "off", "--seed", "7", "--workers", "1",
                              "--checkpoint-every", "5", "--resume", "--no-progress"])
    options, train = campaign_configs(config_from_args(args))
    assert options == DistillConfig(teacher="t", student="s", online_views=True, views_per_epoch=12, val_views=3,
                                    mask_loss_weight=0.5, mask_boxes=2, prompt_boxes="random", mask_fraction=0.5,
                                    init_student="i", teacher_backend="torch")
    assert train == TrainConfig(epochs=100000, batch_size=4, lr=0.001, seed=7, device="cpu", amp="off", workers=1,
                                resume=True, checkpoint_every=5, progress=False, time_limit=3.0)
    plain = parser.parse_args(["distill", "--data", "D", "-o", "O"])
    assert from_args(DistillConfig, plain) == DistillConfig() and train_from_args(plain) == TrainConfig()
    given = parser.parse_args(["distill", "--data", "D", "-o", "O", "--cache-dir", "C", "--aug-variants", "3",
                               "--cache-seed", "2", "--val-split", "image", "--stable-iou", "0.6", "--finetune-lr",
                               "0.01", "--views-per-epoch", "9", "--epochs", "4", "--lr", "0.1", "--time-limit", "2"])
    assert from_args(DistillConfig, given) == DistillConfig(cache_dir="C", aug_variants=3, cache_seed=2,
                                                            val_split="image", stable_iou=0.6, finetune_lr=0.01,
                                                            views_per_epoch=9)
    assert train_from_args(given) == TrainConfig(epochs=4, lr=0.1, time_limit=2.0)


@pytest.mark.slow
def test_campaign_pack_of_the_real_training_sources(shared_data, tmp_path) -> None:
    from medsam_lite.cli.main import main
    from medsam_lite.distill.views import PACK_MANIFEST, TRAINING_SOURCES

    if not (shared_data / "unlabeled" / "xray_chest_cr.dcm").exists():
        pytest.skip("needs the full ../shared/data")
    assert main(["campaign", "pack", "--data", str(shared_data), "-o", str(tmp_path / "pack")]) == 0
    manifest = json.loads((tmp_path / "pack" / PACK_MANIFEST).read_text())
    assert [s["name"] for s in manifest["sources"]] == [s.name for s in TRAINING_SOURCES]
    assert manifest["total_bytes"] <= 64 * 2 ** 20


if __name__ == "__main__":  # torchrun / subprocess entry of the DDP test: the CLI with the tiny encoders registered
    from medsam_lite.cli.main import main as cli_main

    register_tiny()
    torch.set_num_threads(1)
    sys.exit(cli_main(sys.argv[1:]))
