"""The fast-inference benchmark (``medsam-lite benchmark inference``, alias ``--inference``) on its quick cases."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsam_lite.backends import installed


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
@pytest.mark.slow
def test_quick_inference_bench_measures_every_config_and_the_baseline(tmp_path: Path) -> None:
    from medsam_lite.bench.inference import DECODE_BATCHES, InferenceBenchConfig, markdown_lines, run_inference_bench
    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.model import build_medsam

    torch.manual_seed(0)
    weights = save_checkpoint(build_medsam("repvit_m0_6").eval(), tmp_path / "random.pth", "repvit_m0_6")
    cfg = InferenceBenchConfig(model=str(weights), configs=("torch:fp32", "openvino:fp32"), quick=True,
                               whole_process=False, repeats=1, cache_dir=tmp_path / "cache")
    section = run_inference_bench(cfg, log=lambda _line: None)
    assert set(section["configs"]) == {"torch:fp32", "openvino:fp32"}
    assert section["encoder_gflops"] > 1 and section["decoder_gflops_per_box"] > 1
    split = section["split_decoder_gflops"]  # the token-major box graph does about half the reference's work
    assert 0.3 * section["decoder_gflops_per_box"] < split["per_box"] < 0.7 * section["decoder_gflops_per_box"]
    assert split["per_embedding"] > 0
    for config in section["configs"].values():
        by = config["decoder_ms_per_box_by_batch"]
        assert set(by) == {str(b) for b in DECODE_BATCHES} | {"1_new_embedding"}
        assert all(v > 0 for v in by.values()) and config["encoder_ms"] > 0
    assert [c["name"] for c in section["cases"]] == ["2d_nuclei_8boxes", "3d_mr_3slices"]
    for case in section["cases"]:
        reference, ov, base = case["ours"]["torch:fp32"], case["ours"]["openvino:fp32"], case["baseline"]
        assert reference["pixel_agreement"] == 1.0 and base["pixel_agreement"] == 1.0  # one algorithm, exact
        assert ov["pixel_agreement"] > 0.99
        assert base["seconds"] > 0 and ov["speedup_in_process"] > 0
    assert section["cases"][0]["ours"]["torch:fp32"]["gt_dsc"] is not None
    text = "\n".join(markdown_lines(section))
    assert "| openvino:fp32 |" in text and "16 per call" in text and "| 2d_nuclei_8boxes | baseline |" in text
