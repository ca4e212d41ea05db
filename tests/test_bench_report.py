"""``medsam-lite benchmark report``: its structure on a tiny real case (the bundled nuclei image, one box), the
breakdown's parts adding up to the process it measured, and (slow) the peak RSS of ``medsam-lite segment`` on a
133 x 512 x 512 CT. Speeds are not asserted: they live in the report (docs/benchmark_report), never in tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from medsam_lite.backends import installed
from medsam_lite.backends.cpu import cpu_kind, isa_kind, read_cpuinfo
from medsam_lite.bench.report import BREAKDOWN_PARTS, ONE_BOX, RSS_LIMIT_MIB
from medsam_lite.cli.main import main

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not installed("openvino") or not installed("torch"),
                                reason="the report runs the default (OpenVINO) path and the torch baseline")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    code = main(["benchmark", "report", "-o", str(out), "--quick", "--cases", ONE_BOX, "--repeats", "1",
                 "--cold-warm", "1"])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    data["_markdown"] = (out / "report.md").read_text()
    return data


def test_report_names_the_cpu_and_its_isa(report: Dict[str, Any]) -> None:
    info = read_cpuinfo()
    m = report["machine"]
    assert m["vendor"] == info.vendor and m["isa_kind"] == isa_kind(info.flags) and m["cpu_kind"] == cpu_kind(info)
    assert m["cpu"] and m["cpu"] in report["_markdown"] and m["cpu_kind"] in report["_markdown"]
    assert len(m["load_average_start"]) == 3 and len(m["load_average_end"]) == 3


def test_whole_process_pair_and_ratio(report: Dict[str, Any]) -> None:
    (case,) = report["cases"]
    assert case["name"] == ONE_BOX and case["n_boxes"] == 1 and case["baseline_encoder_calls"] == 1
    p = case["process"]
    assert len(p["ours_s"]) == 1 and len(p["baseline_s"]) == 1
    assert p["ratio"] == pytest.approx(p["baseline_s"][0] / p["ours_s"][0])
    assert 0 < p["ours_cpu_s"][0] and 0 < p["baseline_cpu_s"][0]  # user + system seconds of each child
    assert p["cpu_ratio"] == pytest.approx(p["baseline_cpu_s"][0] / p["ours_cpu_s"][0])
    assert "--baseline" in p["baseline_command"] and "--baseline" not in p["ours_command"]
    assert 50 < p["ours_peak_rss_mib"] < RSS_LIMIT_MIB and p["baseline_peak_rss_mib"] > 50
    assert f"{p['ratio']:.1f}x" in report["_markdown"]


@pytest.mark.parametrize("path", ["ours", "baseline"])
def test_breakdown_parts_add_up_to_the_measured_process(report: Dict[str, Any], path: str) -> None:
    row = report["cases"][0]["breakdown"][path]
    assert all(row[k] >= 0 for k in BREAKDOWN_PARTS), row
    assert row["encoder_calls"] == 1 and row["decoder_calls"] == 1  # one image, one box, on both paths
    assert row["encoder_s"] > 0 and row["decoder_s"] > 0 and row["startup_s"] > 0 and row["cpu_s"] > 0
    parts = sum(row[k] for k in BREAKDOWN_PARTS)
    assert parts <= row["total_s"] and row["exit_s"] == pytest.approx(row["total_s"] - parts, abs=0.05)
    assert parts >= 0.8 * row["total_s"] - 0.5, f"only {parts:.2f} of {row['total_s']:.2f} s accounted for"
    assert (row["backend"] == "baseline (torch fp32)") == (path == "baseline")


def test_first_mask_and_install_sections(report: Dict[str, Any]) -> None:
    fm = report["first_mask"]
    assert fm["case"] == ONE_BOX and len(fm["cold_s"]) == 1 and len(fm["warm_s"]) == 1
    assert fm["cold_cpu_s"][0] > 0 and fm["warm_cpu_s"][0] > 0
    assert report["install"] == {"measured": False}
    text = report["_markdown"]
    for heading in ("## Whole process", "## Where the time goes", "## First mask, cold and warm", "## Install"):
        assert heading in text, heading


def test_unknown_case_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["benchmark", "report", "-o", str(tmp_path), "--quick", "--cases", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown case(s) nope" in err and "\n" not in err and not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_segment_peak_rss_on_a_133x512x512_ct_stays_under_2_gb(tmp_path: Path) -> None:
    """``medsam-lite segment`` with defaults on the bundled CT resampled to 133 x 512 x 512 (6 boxes, the case of the
    earlier inference benchmark): its peak RSS (``ru_maxrss`` of the children of a small launcher, so the large
    test process's RSS does not count) stays under 2 GB."""
    from medsam_lite.bench.cases import generated_cases
    from medsam_lite.resources import load_example

    case = generated_cases(load_example("3DBox_CT_abdomen.npz"), load_example("2DBox_Microscopy_nuclei.npz"), 133,
                           "memory test")[0]
    assert case.image.shape == (133, 512, 512) and len(case.boxes) == 6
    path = tmp_path / "3DBox_ct_133x512x512.npz"
    np.savez_compressed(path, imgs=case.image, boxes=case.boxes)
    launcher = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = [sys.executable, "-m", "medsam_lite.cli.main", "segment", str(path), "-o", str(tmp_path / "out"),
           "--no-progress", "--threads", "2"]
    proc = subprocess.run([sys.executable, "-c", launcher, *cmd], capture_output=True, text=True, timeout=3000,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mib = int(proc.stdout.strip().splitlines()[-1]) / 1024
    with np.load(tmp_path / "out" / path.name) as out:
        assert out["segs"].shape == (133, 512, 512) and len(set(np.unique(out["segs"]).tolist()) - {0}) >= 4
    assert peak_mib < RSS_LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"
