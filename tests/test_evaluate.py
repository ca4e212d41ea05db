"""``medsam-lite evaluate`` / ``evaluate_dirs``: challenge-format cases built from real labels."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from scipy import ndimage

from medsam_lite.cli.main import main
from medsam_lite.evaluate import EvaluationWarning, default_out_dir, evaluate_dirs, modality_of
from medsam_lite.metrics import case_scores, nsd
from tests.conftest import FIXTURES

REPORT_FILES = ("metrics.csv", "per_label.csv", "summary.md", "dsc_boxplot.png")
STORED_SPACING_XYZ = (0.8, 0.8, 5.0)  # as the challenge prep stored it: SimpleITK (x, y, z)


@pytest.fixture(scope="module")
def ct_crop() -> np.ndarray:
    """Real CT organ labels (z, y, x) cropped to spleen (1), liver (2), pancreas (3), relabelled 1..3
    (tests/fixtures/ct_organs_labels_crop.npz, cut from ../shared/data/ct_organs/labels.nii.gz)."""
    with np.load(FIXTURES / "ct_organs_labels_crop.npz") as z:
        return z["labels"]


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    """Real 2D nuclei instance map (128x128 crop, tests/fixtures/nuclei_crop_labels.tif), relabelled as a
    3-class semantic map by id % 3 + 1."""
    import tifffile

    inst = tifffile.imread(str(FIXTURES / "nuclei_crop_labels.tif")).astype(np.int64)
    return np.where(inst > 0, inst % 3 + 1, 0).astype(np.uint8)


def _shift_x(labels: np.ndarray) -> np.ndarray:
    """Translate one voxel along x (last axis) without wrap-around (the last column leaves the grid)."""
    out = np.zeros_like(labels)
    out[..., 1:] = labels[..., :-1]
    return out


def _save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def dataset(tmp_path: Path, ct_crop: np.ndarray, nuclei: np.ndarray) -> Tuple[Path, Path]:
    """gt/ and pred/ with two CT volumes, one MR-named volume and one 2D US-named image.

    * 3DBox_CT_0001: spleen dilated, liver exact, pancreas dropped.
    * 3DBox_CT_0002: everything shifted by one voxel along x (0.8 mm with the (x, y, z)-stored
      spacing read correctly, ``xyz``; 5 mm when it is used as stored, ``zyx``).
    * 3DBox_MR_0001: exact.
    * 2DBox_US_0001: nuclei map with one class eroded.
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    img3 = np.zeros(ct_crop.shape, np.uint8)
    for name in ("3DBox_CT_0001", "3DBox_CT_0002", "3DBox_MR_0001"):
        _save(gt / f"{name}.npz", imgs=img3, gts=ct_crop, spacing=np.array(STORED_SPACING_XYZ))
    seg1 = ct_crop.copy()
    seg1[ndimage.binary_dilation(ct_crop == 1) & (ct_crop == 0)] = 1
    seg1[seg1 == 3] = 0
    _save(pred / "3DBox_CT_0001.npz", segs=seg1)
    _save(pred / "3DBox_CT_0002.npz", segs=_shift_x(ct_crop))
    _save(pred / "3DBox_MR_0001.npz", segs=ct_crop)
    _save(gt / "2DBox_US_0001.npz", imgs=np.zeros(nuclei.shape + (3,), np.uint8), gts=nuclei)
    seg2 = nuclei.copy()
    seg2[(nuclei == 2) & ~ndimage.binary_erosion(nuclei == 2)] = 0
    _save(pred / "2DBox_US_0001.npz", segs=seg2)
    return pred, gt


def test_modality_of() -> None:
    assert modality_of("2DBox_US_0001.npz") == "US"
    assert modality_of("3DBox_CT_abc_1.npz") == "CT"
    assert modality_of("case.npz") == "unknown"
    assert default_out_dir("/a/b/preds") == Path("/a/b/preds_evaluation")


def test_evaluate_dirs_scores_match_case_scores(dataset: Tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = dataset
    result = evaluate_dirs(pred, gt, tmp_path / "report")
    assert result.ok and result.warnings == []
    by_case = {c.case: c for c in result.cases}
    assert sorted(by_case) == ["2DBox_US_0001.npz", "3DBox_CT_0001.npz", "3DBox_CT_0002.npz", "3DBox_MR_0001.npz"]
    spacing_zyx = STORED_SPACING_XYZ  # default "zyx": used as stored
    for name, c in by_case.items():
        gts = np.load(gt / name)["gts"]
        segs = np.load(pred / name)["segs"]
        sp = (1.0, 1.0) if name.startswith("2D") else spacing_zyx
        dsc, nsd_value, labels = case_scores(segs, gts, sp, 2.0)
        assert (c.dsc, c.nsd, c.labels) == (pytest.approx(dsc), pytest.approx(nsd_value), labels)
        assert c.dim == (2 if name.startswith("2D") else 3) and c.error == ""
    ct1 = {s.label: s for s in by_case["3DBox_CT_0001.npz"].labels}
    assert ct1[2].dsc == 1.0 and ct1[2].nsd == 1.0  # liver exact
    assert ct1[3].dsc == 0.0 and ct1[3].nsd == 0.0  # pancreas dropped
    assert 0.2 < ct1[1].dsc < 1.0 and 0.9 < ct1[1].nsd < 1.0  # dilation: 5 mm along x with "zyx"
    assert by_case["3DBox_MR_0001.npz"].dsc == 1.0 and by_case["3DBox_MR_0001.npz"].nsd == 1.0

    # CSVs and summary agree with the result
    rows = {r["case"]: r for r in _read_csv(result.metrics_csv)}
    assert list(_read_csv(result.metrics_csv)[0]) == ["case", "modality", "dim", "n_labels", "dsc", "nsd", "error"]
    assert rows["3DBox_CT_0001.npz"]["modality"] == "CT" and rows["3DBox_CT_0001.npz"]["n_labels"] == "3"
    assert float(rows["2DBox_US_0001.npz"]["dsc"]) == pytest.approx(by_case["2DBox_US_0001.npz"].dsc, abs=1e-6)
    per_label = _read_csv(result.per_label_csv)
    assert len(per_label) == 3 * 3 + 3 and list(per_label[0]) == ["case", "label", "dsc", "nsd"]
    ct_means = np.mean([by_case["3DBox_CT_0001.npz"].dsc, by_case["3DBox_CT_0002.npz"].dsc])
    modality_means = [ct_means, 1.0, by_case["2DBox_US_0001.npz"].dsc]
    assert result.dsc_mean_over_modalities == pytest.approx(np.mean(modality_means))
    summary = result.summary_md.read_text()
    assert "| CT | 2 |" in summary and "| MR | 1 |" in summary and "| US | 1 |" in summary
    assert f"**{result.dsc_mean_over_modalities:.4f}**" in summary
    assert "spacing order: `zyx`" in summary
    assert result.boxplot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spacing_order_flag(dataset: Tuple[Path, Path], tmp_path: Path) -> None:
    """Stored (0.8, 0.8, 5.0): as zyx a one-voxel x shift is 5 mm, as xyz it is 0.8 mm."""
    pred, gt = dataset
    as_stored = evaluate_dirs(pred, gt, tmp_path / "zyx", spacing_order="zyx")
    reversed_ = evaluate_dirs(pred, gt, tmp_path / "xyz", spacing_order="xyz")
    a = next(c for c in as_stored.cases if c.case == "3DBox_CT_0002.npz")
    b = next(c for c in reversed_.cases if c.case == "3DBox_CT_0002.npz")
    assert a.dsc == b.dsc
    assert b.nsd == 1.0  # a pure 0.8 mm translation is within the 2 mm tolerance everywhere
    assert a.nsd < 0.99  # 5 mm: surfaces facing x are out of tolerance
    gts = np.load(gt / "3DBox_CT_0002.npz")["gts"]
    segs = _shift_x(gts)
    for result, spacing in ((a, STORED_SPACING_XYZ), (b, STORED_SPACING_XYZ[::-1])):
        assert len(result.labels) == 3
        for s in result.labels:
            assert s.dsc > 0.2
            assert s.nsd == pytest.approx(nsd(segs == s.label, gts == s.label, spacing, 2.0))
    assert "spacing order: `xyz`" in reversed_.summary_md.read_text()
    # 2D cases ignore the flag
    us = [next(c for c in r.cases if c.case.startswith("2D")) for r in (as_stored, reversed_)]
    assert us[0].nsd == us[1].nsd


def test_missing_prediction_scores_zero_with_warning(dataset: Tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = dataset
    (pred / "3DBox_MR_0001.npz").unlink()
    with pytest.warns(EvaluationWarning, match="3DBox_MR_0001.npz: prediction file missing"):
        result = evaluate_dirs(pred, gt, tmp_path / "report")
    assert result.ok  # scored, not failed
    mr = next(c for c in result.cases if c.case == "3DBox_MR_0001.npz")
    assert (mr.dsc, mr.nsd, mr.missing_prediction) == (0.0, 0.0, True)
    row = next(r for r in _read_csv(result.metrics_csv) if r["case"] == "3DBox_MR_0001.npz")
    assert (row["dsc"], row["nsd"]) == ("0.000000", "0.000000") and "missing prediction" in row["error"]
    assert "| MR | 1 | 0.0000 |" in result.summary_md.read_text()


def _leftovers(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in REPORT_FILES)


def test_cli_shape_mismatch_and_bad_files(dataset: Tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pred, gt = dataset
    segs = np.load(pred / "3DBox_CT_0001.npz")["segs"]
    _save(pred / "3DBox_CT_0001.npz", segs=segs[:, :-1])  # shape mismatch
    _save(pred / "3DBox_MR_0001.npz", seg=segs)  # wrong key
    data = (pred / "2DBox_US_0001.npz").read_bytes()
    (pred / "2DBox_US_0001.npz").write_bytes(data[: len(data) // 2])  # truncated
    out = tmp_path / "report"
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "3 of 4 case(s) failed" in err
    assert f"{pred / '3DBox_CT_0001.npz'}: segs shape {segs[:, :-1].shape} does not match gts shape {segs.shape}" in err
    assert f"{pred / '3DBox_MR_0001.npz'}: missing key 'segs' (keys: seg)" in err
    assert f"{pred / '2DBox_US_0001.npz'}: cannot read npz" in err
    # every report file complete, no temporary files left
    assert _leftovers(out) == [] and all((out / f).is_file() for f in REPORT_FILES)
    rows = {r["case"]: r for r in _read_csv(out / "metrics.csv")}
    assert rows["3DBox_CT_0001.npz"]["dsc"] == "" and "does not match" in rows["3DBox_CT_0001.npz"]["error"]
    assert "\n" not in rows["2DBox_US_0001.npz"]["error"]
    assert float(rows["3DBox_CT_0002.npz"]["dsc"]) > 0.5 and rows["3DBox_CT_0002.npz"]["error"] == ""
    summary = (out / "summary.md").read_text()
    assert "Failed cases (3)" in summary and "| CT | 1 |" in summary and "**Incomplete:** 3 case(s)" in summary


def test_gt_missing_spacing_fails_only_that_case(dataset: Tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = dataset
    gts = np.load(gt / "3DBox_MR_0001.npz")["gts"]
    _save(gt / "3DBox_MR_0001.npz", gts=gts)
    result = evaluate_dirs(pred, gt, tmp_path / "report")
    assert result.failures == [f"{gt / '3DBox_MR_0001.npz'}: missing key 'spacing' (keys: gts)"]
    assert sum(not c.failed for c in result.cases) == 3


def test_report_is_all_or_nothing(dataset: Tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing the last report file leaves no report file and no temporary file."""
    import medsam_lite.evaluate as ev

    def broken_plot(path: Path, cases: object) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ev, "_write_boxplot", broken_plot)
    out = tmp_path / "report"
    pred, gt = dataset
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate_dirs(pred, gt, out)
    assert list(out.iterdir()) == []


def test_cli_end_to_end_default_out(dataset: Tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pred, gt = dataset
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--spacing-order", "xyz",
                 "--tolerance", "1.5"]) == 0
    out_text = capsys.readouterr().out
    report = pred.parent / "pred_evaluation"
    assert f"report in {report}" in out_text and "spacing order xyz, tolerance 1.5" in out_text
    assert all((report / f).is_file() for f in REPORT_FILES) and _leftovers(report) == []
    assert "NSD tolerance: 1.5" in (report / "summary.md").read_text()


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"medsam-lite evaluate: error: {tmp_path / 'nope'}: ground-truth folder does not exist"
    (tmp_path / "gt").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    assert "no ground-truth .npz cases found" in capsys.readouterr().err
    assert not (tmp_path / "pred_evaluation").exists()


def test_cli_help_states_spacing_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "zyx (default): use the stored spacing as is" in text
    assert "xyz: the stored spacing is SimpleITK (x, y, z) order" in text
