"""Shared fixtures. Real data comes from the bundled examples or ../shared/data (skipped if absent)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "medsam_lite" / "examples"


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data not present")
    return path


@pytest.fixture(scope="session")
def lite_medsam():
    from medsam_lite.checkpoint import load_lite_medsam

    return load_lite_medsam()


@pytest.fixture(scope="session")
def fast_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised RepViT MedSAM saved as a self-describing checkpoint (fast on CPU)."""
    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.model import build_medsam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "repvit_random.pth"
    return save_checkpoint(build_medsam("repvit_m0_6").eval(), path, "repvit_m0_6", {"note": "random init"})
