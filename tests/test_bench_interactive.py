"""``medsam-lite benchmark interactive`` / ``benchmark --interactive`` end to end on a tiny real crop (8 slices of the
bundled MR tumour around the lesion, its real ground truth): the simulated user's DSC curve, the latency case, the
report files; a bad case file is one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsam_lite.cli.main import main
from tests.conftest import EXAMPLES

Z, Y, X = (10, 18), (70, 170), (140, 240)
"""The crop of the bundled MR tumour (its box is x 162..208, y 84..153, z 11..17)."""


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    data = np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz")
    box = data["boxes"][0].astype(np.int64) - np.array([X[0], Y[0], Z[0]] * 2)
    path = tmp_path_factory.mktemp("crop") / "mr_tumour_crop.npz"
    np.savez(path, imgs=np.ascontiguousarray(data["imgs"][Z[0]:Z[1], Y[0]:Y[1], X[0]:X[1]]),
             gts=np.ascontiguousarray(data["gts"][Z[0]:Z[1], Y[0]:Y[1], X[0]:X[1]]), boxes=box[None])
    return path


def test_benchmark_interactive_end_to_end(tmp_path: Path, crop: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MEDSAM_LITE_SHARED", raising=False)
    cache = tmp_path / "emb"
    out = tmp_path / "report"
    code = main(["benchmark", "interactive", "--volume", str(crop), "--corrections", "2", "--walk", "3",
                 "--embedding-cache", str(cache), "-o", str(out), "--threads", "1"])
    assert code == 0
    report = json.loads((out / "interactive.json").read_text())
    overall = report["summary"]["overall"]
    assert report["summary"]["mr_tumour_crop"] == overall and len(overall) == 3
    assert 0.3 < overall[0] < 1 and overall[2] > overall[0]  # the real lesion, and the corrections help
    assert report["worst_step"] == pytest.approx(max([0.0, overall[0] - overall[1], overall[1] - overall[2]]))
    latency = report["latency"]
    assert latency["shape"] == [8, 100, 100] and latency["walk_slices"] == 3 and 0 < latency["correction_s"]
    assert latency["walk_3_s"] > 0 and report["cpu"] and len(report["load_average"]["start"]) == 3
    text = (out / "interactive.md").read_text()
    assert "| mr_tumour_crop | 1 |" in text and "| overall | 1 |" in text and text in capsys.readouterr().out
    # the top-level spelling runs the same measurement (embeddings from the cache: decoder only)
    again = tmp_path / "again"
    assert main(["benchmark", "--interactive", "--volume", str(crop), "--corrections", "2", "--walk", "3",
                 "--embedding-cache", str(cache), "-o", str(again), "--threads", "1"]) == 0
    assert json.loads((again / "interactive.json").read_text())["summary"] == report["summary"]


def test_benchmark_interactive_bad_case_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "not_a_case.npz"
    np.savez(bad, imgs=np.zeros((2, 8, 8), np.uint8))
    assert main(["benchmark", "interactive", "--volume", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "labelled 3D case" in err
