"""Baseline path equals the Predictor (masks) with the baseline's encoder cost; benchmark CLI quick run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsam_lite.baseline import baseline_encoder_calls_volume, baseline_segment_2d, baseline_segment_volume
from medsam_lite.benchmark import CallCounter, resample_volume, slab_boxes, tile_image
from medsam_lite.model import build_medsam
from medsam_lite.predictor import Predictor
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def random_repvit():
    torch.manual_seed(0)
    return build_medsam("repvit_m0_6").eval()


def _mr_case(first: int, last: int):
    """The bundled MR case cropped to slices first..last (inclusive); its box z-range clipped to them."""
    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as case:
        volume = case["imgs"][first : last + 1]
        boxes = case["boxes"].copy()
    boxes[:, 2], boxes[:, 5] = 0, last - first
    return volume, boxes


def test_baseline_volume_equals_predictor_and_reencodes_per_box(random_repvit) -> None:
    volume, boxes = _mr_case(13, 15)  # 3 slices
    # a second, overlapping box (shifted) on slices 1..2: those slices are shared by both boxes
    second = boxes[0].copy()
    second[[0, 3]] += 10
    second[2] = 1
    boxes = np.vstack([boxes, second])
    counter = CallCounter(random_repvit)
    expected = baseline_segment_volume(random_repvit, volume, boxes)
    baseline_calls = counter.encoder
    counter.close()
    assert baseline_calls == 3 + 2 == baseline_encoder_calls_volume(volume.shape, boxes)

    predictor = Predictor(random_repvit)
    counter = CallCounter(random_repvit)
    segs = predictor.predict_volume(volume, boxes, progress=False)
    counter.close()
    assert predictor.encoder_calls == counter.encoder == 3  # once per slice
    assert segs.dtype == expected.dtype == np.uint8 and segs.shape == volume.shape
    assert np.array_equal(segs, expected)


def test_baseline_2d_equals_predictor_one_decoder_call_per_box(random_repvit) -> None:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as case:
        image, boxes = case["imgs"], case["boxes"][:5]
    counter = CallCounter(random_repvit)
    expected = baseline_segment_2d(random_repvit, image, boxes)
    assert (counter.encoder, counter.decoder) == (1, 5)
    counter.close()
    predictor = Predictor(random_repvit, decode_batch=32)
    predictor.set_image(image)
    assert np.array_equal(predictor.predict(boxes), expected)


def test_baseline_volume_equals_predictor_real_weights(lite_medsam) -> None:
    volume, boxes = _mr_case(13, 14)  # 2 slices, tumour present
    counter = CallCounter(lite_medsam)
    expected = baseline_segment_volume(lite_medsam, volume, boxes)
    assert counter.encoder == 2
    counter.close()
    segs = Predictor(lite_medsam).predict_volume(volume, boxes, progress=False)
    assert (expected > 0).sum() > 50  # the real model found the tumour
    assert np.array_equal(segs, expected)


def test_generated_cases_helpers() -> None:
    volume = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8)
    out, boxes = resample_volume(volume, np.array([[1, 1, 0, 7, 5, 3]]), (8, 12, 16))
    assert out.shape == (8, 12, 16) and boxes.tolist() == [[2, 2, 0, 14, 10, 6]]
    img, tiled = tile_image(np.zeros((10, 20, 3), np.uint8), np.array([[1, 2, 3, 4]]), 3)
    assert img.shape == (20, 40, 3) and tiled.tolist() == [[1, 2, 3, 4], [21, 2, 23, 4], [1, 12, 3, 14]]
    slab = slab_boxes(np.array([[0, 0, 10, 5, 5, 40], [1, 1, 20, 6, 6, 30], [1, 1, 0, 6, 6, 3]]), 5)
    assert slab[:, [2, 5]].tolist() == [[23, 27], [23, 27]]  # median middle 25; the third box is outside


def test_benchmark_cli_quick(tmp_path, capsys) -> None:
    from medsam_lite.cli.main import main

    out = tmp_path / "bench"
    rc = main(["benchmark", "--quick", "-o", str(out), "--models", "random:repvit_m0_6+fused",
               "--baseline-model", "random:repvit_m0_6", "--encoders", "repvit_m0_6",
               "--repeats", "1", "--threads", "2", "--max-calls", "3"])
    assert rc == 0
    assert "set_num_threads(2)" in capsys.readouterr().out
    result = json.loads((out / "benchmark.json").read_text())
    assert {"machine", "encoders", "decoder", "cases", "scaling", "process_peak_rss_mib"} <= set(result)
    assert result["machine"]["torch_threads"] == 2
    assert set(result["encoders"]) == {"repvit_m0_6", "repvit_m0_6+fused"}
    assert result["decoder"]["per_box_single_s"] > 0
    assert len(result["cases"]) == 2
    for case in result["cases"]:
        base = case["baseline"]
        assert set(case["ours"]) == {"random:repvit_m0_6+fused"}
        for spec, ours in case["ours"].items():
            assert case["ratio"][spec] == pytest.approx(base["seconds"] / ours["seconds"])
        if case["kind"] == "3d":
            assert base["encoder_calls"] == 2 and case["ours"]["random:repvit_m0_6+fused"]["encoder_calls"] == 2
        else:  # 4 boxes, capped to 3 decoder calls: measured on a labelled subset
            assert case["measured_on"] == "first 3 of 4 boxes"
            assert base["decoder_calls"] == 3 and case["ours"]["random:repvit_m0_6+fused"]["decoder_calls"] == 1
    cells = {(r["boxes"], r["slices"]): r for r in result["scaling"]}
    assert set(cells) == {(1, 1), (2, 1), (1, 2)}
    assert cells[(2, 1)]["baseline_encoder_calls"] == 2 and cells[(2, 1)]["ours_encoder_calls"] == 1
    r = cells[(1, 2)]
    assert r["ratio"] == pytest.approx(r["baseline_s"] / r["ours_s"])
    md = (out / "benchmark.md").read_text()
    assert "| 3d_mr_2slices |" in md and "speed-up" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*tmp*"))
