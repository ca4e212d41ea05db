"""Model specs of the benchmarks: one function, :func:`resolve_model`.

A spec is a pretrained name or a checkpoint path (:func:`medsam_lite.checkpoint.load_model`), or
``random:<encoder>`` (a registry encoder with random weights, seed 0: for timing only), optionally followed
by ``+fused`` (:func:`medsam_lite.encoders.repvit.fuse_for_inference` applied to the image encoder).
"""
from __future__ import annotations

import torch

from ..checkpoint import load_model
from ..model import MedSAMLite, build_medsam

RANDOM_PREFIX = "random:"
FUSED_SUFFIX = "+fused"


def resolve_model(spec: str) -> MedSAMLite:
    """The model of ``spec`` (see module docstring), in eval mode; the caller's RNG state is untouched."""
    from ..encoders.repvit import fuse_for_inference

    fused = spec.endswith(FUSED_SUFFIX)
    base = spec[: -len(FUSED_SUFFIX)] if fused else spec
    if base.startswith(RANDOM_PREFIX):
        with torch.random.fork_rng(devices=[]):  # seed 0 for the weights
            torch.manual_seed(0)
            model = build_medsam(base[len(RANDOM_PREFIX):]).eval()
    else:
        model = load_model(base).eval()
    if fused:
        model.image_encoder = fuse_for_inference(model.image_encoder)
    return model.eval()
