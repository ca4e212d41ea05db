"""Shared fixtures. Real data comes from the bundled examples, tests/fixtures/ (small real files cut from
../shared/data, see tests/fixtures/PROVENANCE.md) or ../shared/data itself (skipped if absent).

With ``CI=true`` in the environment a test skipped because ../shared/data is missing fails the run
(exit status 1, the skipped tests listed), so a CI job without the data cannot look green."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "medsam_lite" / "examples"
FIXTURES = REPO / "tests" / "fixtures"
SHARED_SKIP = "../shared/data not present"
_shared_skips: list = []


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


SHARED_COPY = FIXTURES / "shared"
"""Unchanged copies of the ../shared/data files the default tests read (same relative paths; provenance in
tests/fixtures/PROVENANCE.md), used when ../shared/data is absent so a fresh clone runs every default test."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = REPO.parent / "shared" / "data"
    if path.is_dir():
        return path
    if SHARED_COPY.is_dir():
        return SHARED_COPY
    pytest.skip(SHARED_SKIP)


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


def pytest_runtest_logreport(report) -> None:
    """Remember tests skipped for want of ../shared/data (see the module doc)."""
    if report.skipped and SHARED_SKIP in str(report.longrepr):
        _shared_skips.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Under ``CI=true`` a skip for missing ../shared/data makes the run fail loudly."""
    if _shared_skips and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CI=true: {len(_shared_skips)} test(s) skipped because ../shared/data is "
                                f"missing:", red=True)
            for nodeid in _shared_skips:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = 1
