"""Baseline path equals the Predictor (masks) with the baseline's encoder cost; ``medsam-lite benchmark speed``
(and its old spelling without the subcommand) quick run; the backend comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsam_lite.baseline import (baseline_encoder_calls_volume, baseline_propagator, baseline_segment_2d,
                                  baseline_segment_volume)
from medsam_lite.bench.cases import resample_volume, slab_boxes, tile_image
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
    propagator = baseline_propagator(random_repvit)
    expected = baseline_segment_volume(propagator, volume, boxes)
    assert propagator.encoder_calls == 3 + 2 == baseline_encoder_calls_volume(volume.shape, boxes)
    assert propagator.decoder_calls == 3 + 2  # one box per call

    predictor = Predictor(random_repvit, backend="torch")
    segs = predictor.predict_volume(volume, boxes, progress=False)
    assert predictor.encoder_calls == 3  # once per slice
    assert segs.dtype == expected.dtype == np.uint8 and segs.shape == volume.shape
    assert np.array_equal(segs, expected)


def test_baseline_2d_equals_predictor_one_decoder_call_per_box(random_repvit) -> None:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as case:
        image, boxes = case["imgs"], case["boxes"][:5]
    propagator = baseline_propagator(random_repvit)
    expected = baseline_segment_2d(propagator, image, boxes)
    assert (propagator.encoder_calls, propagator.decoder_calls) == (1, 5)
    predictor = Predictor(random_repvit, decode_batch=32, backend="torch")
    predictor.set_image(image)
    assert np.array_equal(predictor.predict(boxes), expected)


def test_baseline_volume_equals_predictor_real_weights(lite_medsam) -> None:
    volume, boxes = _mr_case(13, 14)  # 2 slices, tumour present
    propagator = baseline_propagator(lite_medsam)
    expected = baseline_segment_volume(propagator, volume, boxes)
    assert propagator.encoder_calls == 2
    segs = Predictor(lite_medsam, backend="torch").predict_volume(volume, boxes, progress=False)
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
    assert "torch threads 2" in capsys.readouterr().out
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
            # the Predictor decodes one box per call by default (decode_batch=1), like the baseline
            assert base["decoder_calls"] == 3 and case["ours"]["random:repvit_m0_6+fused"]["decoder_calls"] == 3
    cells = {(r["boxes"], r["slices"]): r for r in result["scaling"]}
    assert set(cells) == {(1, 1), (2, 1), (1, 2)}
    assert cells[(2, 1)]["baseline_encoder_calls"] == 2 and cells[(2, 1)]["ours_encoder_calls"] == 1
    r = cells[(1, 2)]
    assert r["ratio"] == pytest.approx(r["baseline_s"] / r["ours_s"])
    md = (out / "benchmark.md").read_text()
    assert "| 3d_mr_2slices |" in md and "speed-up" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*tmp*"))


def test_label_agreement_and_gt_dsc() -> None:
    from medsam_lite.bench.compare import gt_dsc, label_agreement

    ref = np.zeros((4, 5), np.uint8)
    ref[0, :2], ref[2:, 3:] = 1, 2
    got = ref.copy()
    got[3, 4] = 0  # label 2: 3 of 4 pixels
    agree = label_agreement(got, ref, 3)
    assert agree["pixel_agreement"] == pytest.approx(19 / 20)
    assert agree["label_dsc"] == pytest.approx((1.0 + 6 / 7) / 2)  # label 3 is in neither map: skipped
    assert label_agreement(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), 2)["label_dsc"] == 1.0
    gts = ref.copy()
    gts[0, :2] = 0  # label 1 absent from the ground truth: not scored
    assert gt_dsc(got, gts, 3) == pytest.approx(6 / 7)
    assert gt_dsc(got, np.zeros_like(gts), 3) is None


def _check_backends_section(section: dict, spec: str) -> None:
    """Every backend on both quick cases; fp32 backends agree with eager >= 0.99, int8 only reported in [0, 1]."""
    from medsam_lite.bench import COMPARE_DEFAULT as BACKENDS

    assert section["model"] == spec and section["order"] == list(BACKENDS)
    for name in BACKENDS:
        info = section["artifacts"][name]
        assert info["artifact_mb"] > 1 and info["load_s"] > 0
        assert (info["export_s"] is None) == (name == "torch:fp32")
    assert section["artifacts"]["onnxruntime:int8"]["artifact_mb"] < section["artifacts"]["onnxruntime:fp32"]["artifact_mb"]
    assert [c["name"] for c in section["cases"]] == ["2d_nuclei_4boxes", "3d_mr_2slices"]
    for case in section["cases"]:
        assert set(case["results"]) == set(BACKENDS) and case["has_gt"]
        for name, r in case["results"].items():
            assert r["seconds"] > 0 and r["speedup_vs_eager"] > 0
            assert r["gt_dsc"] is not None  # both quick cases have ground truth
            if name != "onnxruntime:int8":
                assert r["pixel_agreement"] >= 0.99, (case["name"], name, r)
                assert r["label_dsc_vs_eager"] >= 0.99, (case["name"], name, r)
        assert case["results"]["torch:fp32"]["pixel_agreement"] == 1.0


def test_bench_backends_quick_cases() -> None:
    """The backend section on the quick cases (random RepViT), without the other benchmark sections."""
    from medsam_lite.bench import COMPARE_DEFAULT as BACKENDS
    from medsam_lite.bench.cases import backend_cases
    from medsam_lite.bench.compare import bench_backends, markdown_lines

    lines = []
    section = bench_backends("random:repvit_m0_6", BACKENDS, backend_cases(quick=True), threads=2, warmup=False,
                             log=lines.append)
    _check_backends_section(section, "random:repvit_m0_6")
    assert all(section["artifacts"][n]["warmup_s"] is None for n in BACKENDS)
    md = "\n".join(markdown_lines(section))
    assert "| 2d_nuclei_4boxes | torchscript |" in md and "| 3d_mr_2slices | onnxruntime:int8 |" in md
    json.dumps(section)  # serialisable as benchmark.json


def test_benchmark_cli_passes_backends(tmp_path, monkeypatch) -> None:
    """``--backends`` / ``--backends-all-cases`` reach run_benchmark (the run itself is the slow test below); the
    comparison's old names are aliases of registry choices."""
    import dataclasses

    import medsam_lite.bench.speed as benchmark
    from medsam_lite.cli.main import main

    seen = {}
    monkeypatch.setattr(benchmark, "run_benchmark", lambda out, cfg: seen.update(dataclasses.asdict(cfg)))
    assert main(["benchmark", "-o", str(tmp_path), "--backends", "eager", "onnxruntime-int8",
                 "--backends-all-cases"]) == 0
    assert seen["backends"] == ["torch:fp32", "onnxruntime:int8"] and seen["backends_all_cases"] is True
    assert main(["benchmark", "-o", str(tmp_path)]) == 0
    assert seen["backends"] is None and seen["backends_all_cases"] is False
    with pytest.raises(SystemExit):
        main(["benchmark", "-o", str(tmp_path), "--backends", "tensorrt"])


@pytest.mark.slow
def test_benchmark_cli_quick_backends(tmp_path, capsys) -> None:
    """End to end: ``medsam-lite benchmark --quick --backends ...`` writes the section to json, md and stdout."""
    from medsam_lite.bench import COMPARE_DEFAULT as BACKENDS
    from medsam_lite.cli.main import main

    out = tmp_path / "bench"
    rc = main(["benchmark", "speed", "--quick", "-o", str(out), "--models", "random:repvit_m0_6",
               "--baseline-model", "random:repvit_m0_6", "--encoders", "repvit_m0_6", "--repeats", "1",
               "--max-calls", "3", "--boxes", "1", "--slices", "1", "--backends", *BACKENDS])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| backend | artifact MB |" in printed and "| 3d_mr_2slices | onnxruntime:int8 |" in printed
    result = json.loads((out / "benchmark.json").read_text())
    assert result["settings"]["backends"] == list(BACKENDS)
    _check_backends_section(result["backends"], "random:repvit_m0_6")
    md = (out / "benchmark.md").read_text()
    assert "## Backends: random:repvit_m0_6" in md and "| 2d_nuclei_4boxes | torchscript |" in md
    assert not list(out.glob(".*tmp*"))
