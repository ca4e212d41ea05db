"""Pretrained registry, SHA-256 check and self-describing checkpoints."""
from __future__ import annotations

import pytest
import torch

from medsam_lite import checkpoint as ck
from medsam_lite.errors import InputError
from medsam_lite.model import build_medsam


def test_lite_medsam_weights_are_verified() -> None:
    path = ck.lite_medsam_weights_path()
    assert path.stat().st_size == 39_370_479
    assert ck.sha256_of(path) == ck.LITE_MEDSAM_SHA256


def test_sha_mismatch_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(ck, "LITE_MEDSAM_SHA256", "0" * 64)
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        ck.lite_medsam_weights_path()


def test_checkpoint_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_medsam("repvit_m0_6").eval()
    path = ck.save_checkpoint(model, tmp_path / "m.pth", "repvit_m0_6", {"lr": 0.005}, epoch=3)
    payload = torch.load(path, map_location="cpu", weights_only=False)
    assert payload["encoder"] == "repvit_m0_6" and payload["config"] == {"lr": 0.005} and payload["epoch"] == 3
    loaded = ck.load_model(str(path))
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), model.encode(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temp file left


def test_bad_checkpoints(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pth: not a readable PyTorch checkpoint"):
        ck.load_checkpoint(bad)
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not a medsam-lite checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="valid names: lite_medsam"):
        ck.load_model("no_such_model")


def test_default_model_is_a_shipped_one() -> None:
    assert ck.default_model_name() in ck.PRETRAINED


def test_shipped_student_keeps_the_teachers_decoder(lite_medsam) -> None:
    """repvit_m0_6_lite loads by name; prompt encoder + mask decoder are lite_medsam's, unchanged."""
    assert ck.STUDENT_PATH.is_file(), "the distilled student checkpoint is shipped"
    student = ck.load_model("repvit_m0_6_lite")
    assert type(student.image_encoder).__name__ != type(lite_medsam.image_encoder).__name__
    teacher_sd = {**{f"prompt_encoder.{k}": v for k, v in lite_medsam.prompt_encoder.state_dict().items()},
                  **{f"mask_decoder.{k}": v for k, v in lite_medsam.mask_decoder.state_dict().items()}}
    student_sd = student.state_dict()
    for key, value in teacher_sd.items():
        assert torch.equal(student_sd[key], value), key
    with torch.no_grad():
        out = student.encode(torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 256, 64, 64) and torch.isfinite(out).all()
    if not ck.STUDENT_MEETS_BAR:
        assert ck.default_model_name() == "lite_medsam"
