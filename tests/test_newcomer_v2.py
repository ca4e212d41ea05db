"""Issue 31, second pass: segment with named boxes then evaluate on the NIfTI files of a CT the project never
tuned on (per name, the DSC of the arrays), a label table beside every output, DICOM-SEG against NIfTI (both ways,
geometry checked), the 3D overlay's slice and radiological orientation, and names kept by the annotator's save.

Real data only: ``tests/fixtures/ct_aorta_slab`` (a cut of ../shared/data/ct_aorta, see PROVENANCE.md), the CT slab
DICOM series fixture, and ../shared/data/ct_aorta itself when present.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsam_lite.cli.main import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
AORTA = FIXTURES / "ct_aorta_slab"
SHARED_AORTA = REPO.parent / "shared" / "data" / "ct_aorta"
# listed in the other order than the ground truth's values, with other capitals: pairing is by name
NAMED = [("False Lumen", 2), ("true lumen", 1)]


def _nifti_array(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def _box(labels_xyz: np.ndarray, value: int, z_range=None) -> list:
    """[x0, y0, z0, x1, y1, z1] of a label in nibabel voxel indices (optionally on slices z_range only)."""
    sel = labels_xyz == value
    if z_range is not None:
        sel[:, :, :z_range[0]] = False
        sel[:, :, z_range[1] + 1:] = False
    idx = np.argwhere(sel)
    (x0, y0, z0), (x1, y1, z1) = idx.min(0), idx.max(0)
    return [int(x0), int(y0), int(z0), int(x1), int(y1), int(z1)]


def _segment_named(tmp: Path, ct: Path, lumen: Path, capsys, z_range=None) -> Path:
    """``segment`` the raw HU CT with a JSON of named boxes (eager reference backend); returns the mask path."""
    labels = _nifti_array(lumen)
    objects = [{"box": _box(labels, value, z_range), "name": name} for name, value in NAMED]
    (tmp / "boxes.json").write_text(json.dumps({"boxes": objects}))
    capsys.readouterr()
    code = main(["segment", str(ct), "-o", str(tmp / "out"), "--boxes", str(tmp / "boxes.json"), "--modality", "CT",
                 "--backend", "torch", "--no-progress", "--overlay", str(tmp / "overlay.png")])
    assert code == 0, capsys.readouterr().err
    return tmp / "out" / "ct_mask.nii.gz"


def _evaluate_equals_arrays(tmp: Path, mask: Path, gt: Path, capsys) -> dict:
    """``evaluate --pred --gt`` on the two NIfTI files; each named object's DSC equals the DSC of the arrays."""
    from medsam_lite.metrics import dice

    assert main(["evaluate", "--pred", str(mask), "--gt", str(gt), "--out", str(tmp / "report")]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(tmp / "report" / "per_label.csv"))}
    assert sorted(rows) == ["false lumen", "true lumen"]  # the ground truth's names (label_names.json)
    pred, truth = _nifti_array(mask), _nifti_array(gt)
    dsc = {}
    for pred_value, (name, gt_value) in enumerate(NAMED, start=1):
        row = rows[name.lower()]
        expected = dice(pred == pred_value, truth == gt_value)
        assert int(row["label"]) == gt_value and float(row["dsc"]) == pytest.approx(expected, abs=1e-6), name
        dsc[name.lower()] = expected
    return dsc


def test_unseen_ct_named_boxes_then_evaluate_on_nifti_equals_arrays(tmp_path, capsys) -> None:
    """The fixture cut of ct_aorta (CT angiography of an aortic dissection; its labels were never read by this
    project before, and lite_medsam is the published checkpoint): both lumens segmented from named boxes."""
    mask = _segment_named(tmp_path, AORTA / "ct.nii.gz", AORTA / "lumen.nii.gz", capsys)
    out = capsys.readouterr().out
    table = json.loads((tmp_path / "out" / "ct.labels.json").read_text())
    assert [table[k]["name"] for k in ("1", "2")] == ["False Lumen", "true lumen"]
    assert not any("auto_name" in v for v in table.values())
    assert f"wrote {tmp_path / 'out' / 'ct.labels.json'}" in out
    assert "overlay.png: slice z = " in out and "axial, radiological: patient's right on the left, anterior up" in out
    dsc = _evaluate_equals_arrays(tmp_path, mask, AORTA / "lumen.nii.gz", capsys)
    assert dsc["false lumen"] > 0.6 and dsc["true lumen"] > 0.3, dsc  # real segmentations, not empty masks


@pytest.mark.skipif(not SHARED_AORTA.is_dir(), reason="../shared/data/ct_aorta is absent (the default suite uses "
                                                       "its fixture cut, tests/fixtures/ct_aorta_slab)")
def test_shared_unseen_ct_named_boxes_then_evaluate_on_nifti_equals_arrays(tmp_path, capsys) -> None:
    """The same on the whole ../shared/data/ct_aorta files (120 x 126 x 164, 1.5 mm): boxes on 6 slices, the
    ground truth on all of them; per name, evaluate's DSC is the arrays' DSC."""
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(SHARED_AORTA / "lumen.nii.gz", gt / "lumen.nii.gz")
    shutil.copy(AORTA / "label_names.json", gt / "label_names.json")
    mask = _segment_named(tmp_path, SHARED_AORTA / "ct.nii.gz", gt / "lumen.nii.gz", capsys, z_range=(70, 75))
    _evaluate_equals_arrays(tmp_path, mask, gt / "lumen.nii.gz", capsys)
    from medsam_lite.metrics import dice

    pred, truth = _nifti_array(mask)[:, :, 70:76], _nifti_array(gt / "lumen.nii.gz")[:, :, 70:76]
    assert not _nifti_array(mask)[:, :, :70].any()
    assert dice(pred == 1, truth == 2) > 0.6  # on the prompted slices the false lumen is found


# ------------------------------------------------------------------ a label table beside every output
def test_label_table_beside_every_output_default_names_not_matched(tmp_path, capsys, fast_checkpoint) -> None:
    """Plain --box (no names): the table still comes, with object_<i> names marked auto_name; evaluate then
    compares values as they are (no name error against the ground truth's names). A challenge .npz gets none."""
    labels = _nifti_array(AORTA / "lumen.nii.gz")
    box = [str(v) for v in _box(labels, 2)]
    assert main(["segment", str(AORTA / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--box", *box, "--model",
                 str(fast_checkpoint), "--backend", "torch", "--no-progress"]) == 0
    table = json.loads((tmp_path / "out" / "ct.labels.json").read_text())
    assert table == {"1": {"name": "object_1", "color": table["1"]["color"], "auto_name": True}}
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "out" / "ct_mask.nii.gz"), "--gt",
                 str(AORTA / "lumen.nii.gz"), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "report" / "per_label.csv")))
    assert [r["label"] for r in rows] == ["1", "2"]  # values as they are: both ground-truth labels scored
    with np.load(REPO / "medsam_lite" / "examples" / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(tmp_path / "2DBox_Microscopy_n.npz", imgs=z["imgs"][:128, :128], boxes=np.array([[10, 10, 60, 60]]))
    assert main(["segment", str(tmp_path / "2DBox_Microscopy_n.npz"), "-o", str(tmp_path / "npz"), "--model",
                 str(fast_checkpoint), "--backend", "torch", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == ["2DBox_Microscopy_n.npz", "timing.csv"]


# ------------------------------------------------------------------ DICOM-SEG against NIfTI
@pytest.fixture(scope="module")
def slab():
    from medsam_lite.imageio import read_case

    case = read_case(FIXTURES / "ct_slab_series")
    with np.load(FIXTURES / "ct_slab_labels.npz") as f:
        labels = f["labels"]
    gt = np.zeros(labels.shape, np.uint8)
    gt[labels == 1], gt[labels == 5] = 1, 2
    pred = np.zeros(labels.shape, np.uint8)
    shifted = np.roll(labels, 2, axis=2)
    pred[shifted == 5], pred[shifted == 1] = 1, 2  # liver first, 2 px off
    pred[:2] = 0  # empty frames (omitted from the DICOM-SEG)
    return case, gt, pred


def _names(path: Path, names: dict) -> None:
    path.write_text(json.dumps({str(k): v for k, v in names.items()}))


def _flipped_nifti(case, volume: np.ndarray, path: Path) -> None:
    """``volume`` (z, y, x) on the series' grid as a NIfTI whose x axis runs the other way (as dcm2niix may
    write it): nibabel data [i, j, k] = volume[k, j, W-1-i], the affine saying so (RAS)."""
    import nibabel as nib

    from medsam_lite.imageio import index_to_lps

    zyx = index_to_lps(case)  # array index (z, y, x) -> LPS
    ijk = zyx[:, [2, 1, 0, 3]].copy()
    width = volume.shape[2]
    ijk[:3, 3] += ijk[:3, 0] * (width - 1)
    ijk[:3, 0] *= -1
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume[:, :, ::-1].transpose(2, 1, 0)), ras), str(path))


def test_evaluate_dicom_seg_against_nifti_both_ways(tmp_path, slab) -> None:
    """A DICOM-SEG prediction of the real CT slab series against its NIfTI ground truth (written on the series'
    grid, and once more with a flipped x axis), and a NIfTI prediction against a DICOM-SEG ground truth: pairs by
    names (segment labels / label tables), aligned by patient geometry; DSC = the arrays' DSC."""
    from medsam_lite.evaluate import evaluate_dirs
    from medsam_lite.imageio import write_dicom_seg, write_label_table, write_mask
    from medsam_lite.metrics import dice

    case, gt, pred = slab
    expected = {"spleen": dice(pred == 2, gt == 1), "liver": dice(pred == 1, gt == 2)}
    assert 0.3 < expected["liver"] < 1 and 0.3 < expected["spleen"] < 1
    folders = {n: tmp_path / n for n in ("pred", "gt", "flip", "pred_nii", "gt_seg")}
    for folder in folders.values():
        folder.mkdir()
    write_dicom_seg(case, pred, folders["pred"] / "ct_seg.dcm", ["Liver", "spleen"])
    write_mask(case, gt, folders["gt"] / "ct.nii.gz")
    _names(folders["gt"] / "label_names.json", {1: "spleen", 2: "liver"})
    _flipped_nifti(case, gt, folders["flip"] / "ct.nii.gz")
    _names(folders["flip"] / "label_names.json", {1: "spleen", 2: "liver"})
    write_mask(case, pred, folders["pred_nii"] / "ct_mask.nii.gz")
    write_label_table(folders["pred_nii"] / "ct.labels.json", 2, ["liver", "Spleen"])
    write_dicom_seg(case, gt, folders["gt_seg"] / "ct_seg.dcm", ["spleen", "liver"])
    for n, (p, g) in enumerate([("pred", "gt"), ("pred", "flip"), ("pred_nii", "gt_seg")]):
        result = evaluate_dirs(folders[p], folders[g], tmp_path / f"report{n}")  # folders: paired by name
        assert result.ok, (p, g, result.failures)
        rows = {r["name"]: float(r["dsc"]) for r in csv.DictReader(open(tmp_path / f"report{n}" / "per_label.csv"))}
        assert rows == {k: pytest.approx(v, abs=1e-6) for k, v in expected.items()}, (p, g)


def test_evaluate_dicom_seg_on_another_grid_is_one_line(tmp_path, slab, capsys) -> None:
    import nibabel as nib

    from medsam_lite.imageio import index_to_lps, write_dicom_seg

    case, gt, pred = slab
    write_dicom_seg(case, pred, tmp_path / "ct_seg.dcm", ["liver", "spleen"])
    ijk = index_to_lps(case)[:, [2, 1, 0, 3]]
    for name, affine, problem in [("spacing.nii.gz", np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk @ np.diag([1, 1, 2, 1]),
                                   "not on one voxel grid"),
                                  ("shift.nii.gz", np.diag([-1.0, -1.0, 1.0, 1.0]) @ (ijk + np.array(
                                      [[0, 0, 0, 1.2]] * 3 + [[0, 0, 0, 0]])), "origins differ by part of a voxel")]:
        nib.save(nib.Nifti1Image(np.ascontiguousarray(gt.transpose(2, 1, 0)), affine), str(tmp_path / name))
        assert main(["evaluate", "--pred", str(tmp_path / "ct_seg.dcm"), "--gt", str(tmp_path / name), "--map",
                     "1=2,2=1", "--out", str(tmp_path / f"r_{name[:5]}")]) == 1
        err = capsys.readouterr().err
        assert problem in err and "ct_seg.dcm" in err and "Traceback" not in err, err


# ------------------------------------------------------------------ the 3D overlay: which slice, radiological
def test_radiological_view_of_real_files(tmp_path) -> None:
    """RAS NIfTI (ct_organs): both in-plane axes flipped; LPS NIfTI (ct_aorta) and the LPS DICOM series: none;
    a sagittal stack: transposed so that superior is up and anterior on the left; npz: array orientation."""
    import nibabel as nib

    from medsam_lite.imageio import index_axes_lps, read_case
    from medsam_lite.overlay import radiological_view

    ras = FIXTURES / "shared" / "ct_organs" / "ct.nii.gz"
    assert nib.aff2axcodes(nib.load(str(ras)).affine) == ("R", "A", "S")
    assert radiological_view(index_axes_lps(read_case(ras)))[0] == (False, True, True)
    assert nib.aff2axcodes(nib.load(str(AORTA / "ct.nii.gz")).affine) == ("L", "P", "S")
    view, how, letters = radiological_view(index_axes_lps(read_case(AORTA / "ct.nii.gz")))
    assert view == (False, False, False) and letters == "RLAP" and how.startswith("axial, radiological")
    assert radiological_view(index_axes_lps(read_case(FIXTURES / "ct_slab_series")))[0] == (False, False, False)
    # a sagittal stack (i -> anterior, j -> superior, k -> patient's left): anterior to the left, superior up
    sag = np.zeros((8, 9, 10), np.int16)
    nib.save(nib.Nifti1Image(sag, np.array([[0, 0, -1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])),
             str(tmp_path / "sag.nii.gz"))
    view, how, letters = radiological_view(index_axes_lps(read_case(tmp_path / "sag.nii.gz")))
    assert how.startswith("sagittal") and letters == "APSI" and view == (False, True, True)
    assert radiological_view(None)[1].startswith("array orientation")


def test_volume_overlay_is_the_array_overlay_turned(tmp_path) -> None:
    """On the RAS CT slab, the written overlay's centre is the array-orientation overlay flipped both ways."""
    import cv2

    from medsam_lite.imageio import index_axes_lps, read_case, to_uint8
    from medsam_lite.overlay import write_volume_overlay

    case = read_case(FIXTURES / "shared" / "ct_organs" / "ct.nii.gz")
    vol = to_uint8(case.array[60:64])
    labels = np.zeros(vol.shape, np.uint8)
    labels[2, 30:50, 20:45] = 1
    _, said = write_volume_overlay(tmp_path / "r.png", vol, labels, np.array([[18, 28, 1, 47, 52, 3]], float),
                                   index_axes_lps(case))
    _, plain = write_volume_overlay(tmp_path / "a.png", vol, labels, np.array([[18, 28, 1, 47, 52, 3]], float))
    assert said.startswith("slice z = 2 of 4") and "radiological" in said and plain.endswith("array orientation: "
                                                                                             "row 0 up, column 0 left")
    r, a = cv2.imread(str(tmp_path / "r.png")), cv2.imread(str(tmp_path / "a.png"))
    h, w = r.shape[:2]
    centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert np.array_equal(r[::-1, ::-1][centre], a[centre]) and not np.array_equal(r[centre], a[centre])


def test_evaluate_nrrd_ground_truth_against_mha_prediction(tmp_path, shared_data) -> None:
    """ITK formats too: the real breast-lesion NRRD label as ground truth, a prediction written as MHA on its
    grid (the lesion shrunk by one voxel in-plane and shifted one slice): paired by name across formats
    (breast1.nrrd <-> breast1_mask.mha), scored on the files' spacing, equal to case_scores on the arrays."""
    import SimpleITK as sitk
    from scipy import ndimage

    from medsam_lite.evaluate import evaluate_dirs
    from medsam_lite.metrics import case_scores

    image = sitk.ReadImage(str(shared_data / "lesions" / "breast1_label.nrrd"))
    gt = (sitk.GetArrayFromImage(image) > 0).astype(np.uint8)  # (z, y, x)
    pred = np.roll(ndimage.binary_erosion(gt, np.ones((1, 3, 3), bool)), 1, axis=0).astype(np.uint8)
    assert gt.sum() > 100 and 0 < pred.sum() < gt.sum()
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    out = sitk.GetImageFromArray(gt)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(tmp_path / "gt" / "breast1.nrrd"))
    out = sitk.GetImageFromArray(pred)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(tmp_path / "pred" / "breast1_mask.mha"))
    result = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "report")
    assert result.ok, result.failures
    sx, sy, sz = image.GetSpacing()
    dsc, nsd, _ = case_scores(pred, gt, (sz, sy, sx), 2.0)
    assert result.cases[0].dsc == pytest.approx(dsc, abs=1e-9) and result.cases[0].nsd == pytest.approx(nsd, abs=1e-9)
    assert 0.2 < dsc < 0.95 and sz != sx  # anisotropic: the files' spacing, in (z, y, x) order, is what was used
