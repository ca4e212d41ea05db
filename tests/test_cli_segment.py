"""``medsam-lite segment`` end to end, input formats, and every bad input (message + no output left)."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medsam_lite.cli.main import main
from tests.conftest import EXAMPLES, FIXTURES


def _run(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _leftovers(folder: Path) -> list:
    """Files other than timing.csv (temp files included) in the output folder."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != "timing.csv")


def _small_2d_case(path: Path) -> Path:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(path, imgs=z["imgs"], boxes=z["boxes"][:3])
    return path


def _small_3d_case(path: Path) -> Path:
    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as z:
        imgs, boxes = z["imgs"][10:16], z["boxes"].copy()
    boxes[0, [2, 5]] = [1, 4]
    np.savez(path, imgs=imgs, boxes=boxes, spacing=np.array([6.5, 0.78125, 0.78125]))
    return path


def test_npz_2d_and_3d_with_timing_and_overlay(tmp_path, capsys, fast_checkpoint) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    _small_2d_case(cases / "2DBox_Microscopy_x.npz")
    _small_3d_case(cases / "3DBox_MR_y.npz")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "segment", cases, "-o", out, "--model", fast_checkpoint, "--overlay",
                             tmp_path / "ov", "--no-progress")
    assert code == 0, err
    segs2 = np.load(out / "2DBox_Microscopy_x.npz")["segs"]
    segs3 = np.load(out / "3DBox_MR_y.npz")["segs"]
    assert segs2.shape == (512, 512) and segs2.dtype == np.uint8 and segs2.max() <= 3
    assert segs3.shape == (6, 256, 256) and segs3.dtype == np.uint8
    assert not segs3[0].any() and not segs3[5].any()  # outside the box's z range
    timing = (out / "timing.csv").read_text().splitlines()
    assert timing[0] == "case,seconds,status" and len(timing) == 3 and all(r.endswith(",ok") for r in timing[1:])
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["2DBox_Microscopy_x.png", "3DBox_MR_y.png"]


def test_nifti_keeps_affine_and_spacing(tmp_path, capsys, fast_checkpoint) -> None:
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.8, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as z:
        vol = z["imgs"][10:14].astype(np.int16) * 7 - 100  # non-uint8 intensities
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), str(tmp_path / "mr.nii.gz"))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", tmp_path / "mr.nii.gz", "-o", out, "--model", fast_checkpoint,
                        "--box", 160, 80, 0, 210, 150, 3, "--no-progress", "--overlay", tmp_path / "mr.png")
    assert code == 0, err
    mask = nib.load(str(out / "mr_mask.nii.gz"))
    assert np.allclose(mask.affine, affine) and mask.shape == (256, 256, 4)
    assert np.allclose(mask.header.get_zooms(), (0.8, 0.8, 3.0))
    assert mask.get_data_dtype() == np.uint8 and (tmp_path / "mr.png").stat().st_size > 0


def test_png_tiff_and_dicom_images(tmp_path, capsys, fast_checkpoint) -> None:
    import cv2

    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        img = z["imgs"]
    cv2.imwrite(str(tmp_path / "nuclei.png"), img[:, :, 0])
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("x_min,y_min,x_max,y_max\n10,10,60,60\n100,120,180,200\n")
    shutil.copy(FIXTURES / "ct_small.dcm", tmp_path / "ct.dcm")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", tmp_path / "nuclei.png", "-o", out, "--model", fast_checkpoint,
                        "--boxes", boxes)
    assert code == 0, err
    assert cv2.imread(str(out / "nuclei_mask.png"), cv2.IMREAD_UNCHANGED).shape == (512, 512)
    code, _, err = _run(capsys, "segment", tmp_path / "ct.dcm", "-o", out, "--model", fast_checkpoint,
                        "--box", 30, 30, 90, 90, "--window", "40,400")
    assert code == 0, err
    assert cv2.imread(str(out / "ct_mask.png"), cv2.IMREAD_UNCHANGED).shape == (128, 128)
    assert pydicom.dcmread(str(tmp_path / "ct.dcm")).Rows == 128


def _bad_cases(tmp: Path) -> dict:
    """name -> (file, expected message fragment)."""
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        imgs, boxes = z["imgs"], z["boxes"][:2]
    cases = {}

    def save(name, **arrays):
        np.savez(tmp / name, **arrays)
        return tmp / name

    cases["missing key"] = (save("2DBox_a.npz", imgs=imgs), "missing key 'boxes'")
    cases["wrong shape"] = (save("2DBox_b.npz", imgs=imgs[:, :, :2], boxes=boxes), "must be (H, W, 3)")
    cases["wrong dtype"] = (save("2DBox_c.npz", imgs=imgs.astype(np.float32), boxes=boxes), "must be uint8")
    cases["3D shape"] = (save("3DBox_d.npz", imgs=imgs[:, :, 0], boxes=np.zeros((1, 6))), "must be (D, H, W)")
    cases["empty box"] = (save("2DBox_e.npz", imgs=imgs, boxes=np.array([[10, 10, 10, 40]])), "box 0 is empty along x")
    cases["inverted box"] = (save("2DBox_f.npz", imgs=imgs, boxes=np.array([[10, 50, 40, 20]])),
                             "box 0 is inverted along y")
    cases["outside"] = (save("2DBox_g.npz", imgs=imgs, boxes=np.array([[600, 10, 700, 40]])),
                        "box 0 lies outside the image along x")
    cases["constant"] = (save("2DBox_h.npz", imgs=np.full_like(imgs, 7), boxes=boxes), "image is constant")
    nan_vol = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    nan_vol[1, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan_vol, np.eye(4)), str(tmp / "nan.nii.gz"))
    cases["nan"] = (tmp / "nan.nii.gz", "NaN")
    good = save("2DBox_i.npz", imgs=imgs, boxes=boxes)
    truncated = tmp / "2DBox_j.npz"
    truncated.write_bytes(good.read_bytes()[:5000])
    good.unlink()
    cases["truncated"] = (truncated, "unreadable or truncated npz")
    garbage = tmp / "k.png"
    garbage.write_bytes(b"\x89PNG not really")
    cases["unreadable"] = (garbage, "cannot")
    return cases


@pytest.mark.parametrize("name", ["missing key", "wrong shape", "wrong dtype", "3D shape", "empty box",
                                  "inverted box", "outside", "constant", "nan", "truncated", "unreadable"])
def test_bad_input_one_line_error_and_no_output(tmp_path, capsys, fast_checkpoint, name) -> None:
    src = tmp_path / "in"
    src.mkdir()
    path, fragment = _bad_cases(src)[name]
    out = tmp_path / "out"
    extra = ["--box", 1, 1, 2, 2, 3, 3] if path.suffix == ".gz" else ["--box", 5, 5, 50, 50]
    code, _, err = _run(capsys, "segment", path, "-o", out, "--model", fast_checkpoint, "--no-progress", *extra)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip() and "failed:" not in ln]
    assert len(lines) == 1, err
    assert path.name in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert _leftovers(out) == []


def test_partly_outside_box_is_clipped_with_warning(tmp_path, capsys, fast_checkpoint) -> None:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(tmp_path / "2DBox_w.npz", imgs=z["imgs"], boxes=np.array([[-20, 400, 100, 600]]))
    code, stdout, err = _run(capsys, "segment", tmp_path / "2DBox_w.npz", "-o", tmp_path / "out", "--model",
                             fast_checkpoint)
    assert code == 0, err
    assert "warning" in err and "clipped" in err and "warning" not in stdout  # warnings go to stderr
    assert (tmp_path / "out" / "2DBox_w.npz").is_file()


def test_directory_mode_continues_after_a_bad_case(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = _bad_cases(src)
    for name in list(bad)[1:]:
        bad[name][0].unlink()
    _small_2d_case(src / "2DBox_ok.npz")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--no-progress")
    assert code == 1
    assert "1 of 2 case(s) failed" in err and "2DBox_a.npz: missing key 'boxes'" in err
    assert _leftovers(out) == ["2DBox_ok.npz"]
    assert "2DBox_a.npz,"in (out / "timing.csv").read_text() and ",failed" in (out / "timing.csv").read_text()


def test_unknown_model_and_bad_window(tmp_path, capsys) -> None:
    case = _small_2d_case(tmp_path / "2DBox_x.npz")
    code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "o", "--model", "nope")
    assert code == 2 and "unknown model 'nope'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "o", "--window", "40")
    assert code == 2 and "--window must be LEVEL,WIDTH" in err


def test_mha_keeps_geometry_and_dicom_series_becomes_nifti(tmp_path, capsys, fast_checkpoint) -> None:
    import SimpleITK as sitk

    with np.load(EXAMPLES / "3DBox_CT_abdomen.npz") as z:
        vol = z["imgs"][80:84]
    image = sitk.GetImageFromArray(vol.astype(np.int16))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((1.0, -2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "ct.mha"))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", tmp_path / "ct.mha", "-o", out, "--model", fast_checkpoint,
                        "--box", 20, 20, 0, 60, 60, 3, "--no-progress")
    assert code == 0, err
    mask = sitk.ReadImage(str(out / "ct_mask.mha"))
    assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetSpacing(), (0.7, 0.8, 2.5))
    assert np.allclose(mask.GetOrigin(), (1.0, -2.0, 3.0))

    series = FIXTURES / "mr_pd_series"  # 4 real PD MR slices (tests/fixtures/PROVENANCE.md)
    code, _, err = _run(capsys, "segment", series, "-o", out, "--model", fast_checkpoint,
                        "--box", 60, 60, 1, 200, 200, 2, "--no-progress")
    assert code == 0, err
    nifti = nib.load(str(out / "mr_pd_series_mask.nii.gz"))
    assert nifti.shape == (256, 256, 4)
    data = np.asarray(nifti.dataobj)
    assert not data[:, :, :1].any() and not data[:, :, 3:].any()


def test_too_many_boxes_is_a_clear_error(tmp_path, capsys, fast_checkpoint) -> None:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        boxes = np.tile(np.array([[10, 10, 20, 20]]), (256, 1))
        np.savez(tmp_path / "2DBox_many.npz", imgs=z["imgs"], boxes=boxes)
    code, _, err = _run(capsys, "segment", tmp_path / "2DBox_many.npz", "-o", tmp_path / "o", "--model",
                        fast_checkpoint, "--no-progress")
    assert code == 1 and "2DBox_many.npz: 256 boxes do not fit a uint8 label map" in err


# ---------------------------------------------------------------------------------------------- --backend
@pytest.fixture(scope="module")
def onnx_dir(fast_checkpoint, tmp_path_factory) -> Path:
    """The random RepViT checkpoint exported with ``medsam-lite export --format onnx``."""
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "--model", str(fast_checkpoint), "--format", "onnx", "-o", str(out)]) == 0
    return out


def test_onnxruntime_backend_matches_torch(tmp_path, capsys, fast_checkpoint, onnx_dir) -> None:
    """Same cases (4 nuclei boxes; MR box over 4 slices) through both backends: masks agree >= 0.999."""
    cases = tmp_path / "cases"
    cases.mkdir()
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(cases / "2DBox_Microscopy_nuclei.npz", imgs=z["imgs"], boxes=z["boxes"][::40])
    _small_3d_case(cases / "3DBox_MR_y.npz")
    outs = {}
    for backend, extra in (("torch", ["--model", fast_checkpoint]), ("onnxruntime", ["--onnx-dir", onnx_dir])):
        outs[backend] = tmp_path / backend
        code, stdout, err = _run(capsys, "segment", cases, "-o", outs[backend], "--backend", backend, *extra,
                                 "--no-progress")
        assert code == 0, err
    for name in ("2DBox_Microscopy_nuclei.npz", "3DBox_MR_y.npz"):
        ref = np.load(outs["torch"] / name)["segs"]
        got = np.load(outs["onnxruntime"] / name)["segs"]
        assert got.shape == ref.shape and got.dtype == ref.dtype == np.uint8
        assert ref.any(), name
        assert float((got == ref).mean()) >= 0.999, name
    assert _leftovers(outs["onnxruntime"]) == ["2DBox_Microscopy_nuclei.npz", "3DBox_MR_y.npz"]


def _one_line_error(capsys, *argv) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_backend_flag_errors(tmp_path, capsys, onnx_dir) -> None:
    case = _small_2d_case(tmp_path / "2DBox_x.npz")
    out = tmp_path / "o"
    err = _one_line_error(capsys, "segment", case, "-o", out, "--baseline", "--backend", "openvino")
    assert "--baseline is the eager fp32 LiteMedSAM algorithm" in err
    err = _one_line_error(capsys, "segment", case, "-o", out, "--threads", "0")
    assert "--threads must be at least 1" in err
    err = _one_line_error(capsys, "segment", case, "-o", out, "--onnx-dir", onnx_dir)
    assert "--onnx-dir only applies to --backend onnxruntime" in err
    err = _one_line_error(capsys, "segment", case, "-o", out, "--backend", "onnxruntime", "--onnx-dir", onnx_dir,
                          "--model", "lite_medsam")
    assert "--model does not apply" in err
    err = _one_line_error(capsys, "segment", case, "-o", out, "--backend", "onnxruntime", "--onnx-dir",
                          tmp_path / "nowhere")
    assert "nowhere: --onnx-dir is not a folder" in err
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(onnx_dir / "encoder.onnx", half / "encoder.onnx")
    err = _one_line_error(capsys, "segment", case, "-o", out, "--backend", "onnxruntime", "--onnx-dir", half)
    assert f"{half / 'decoder.onnx'}: file not found" in err
    (half / "decoder.onnx").write_bytes(b"not an onnx model")
    err = _one_line_error(capsys, "segment", case, "-o", out, "--backend", "onnxruntime", "--onnx-dir", half)
    assert f"{half / 'decoder.onnx'}: cannot load ONNX model" in err
    assert not out.exists()


def _series_to_nifti_and_seg(tmp_path, model, boxes, labels):
    """Segment the CT fixture series twice (NIfTI, DICOM-SEG); returns (NIfTI mask (z, y, x), SEG read back)."""
    import highdicom as hd
    from medsam_lite.imageio import read_case
    from medsam_lite.predictor import Predictor
    from medsam_lite.segment import SegmentOptions, segment_paths

    series = FIXTURES / "ct_slab_series"
    predictor = Predictor(model, backend="torch")
    nifti = segment_paths(series, tmp_path / "nii", predictor, boxes, options=SegmentOptions(progress=False))
    seg = segment_paths(series, tmp_path / "seg", predictor, boxes,
                        options=SegmentOptions(progress=False, fmt="dicom-seg", labels=labels))
    assert not nifti.failures and not seg.failures, (nifti.failures, seg.failures)
    assert seg.outputs[0].name == "ct_slab_series_seg.dcm"
    ref = np.asarray(nib.load(str(nifti.outputs[0])).dataobj).transpose(2, 1, 0)  # (z, y, x)
    uids = [pydicom.dcmread(str(f)).SOPInstanceUID for f in read_case(series).meta["files"]]
    dcmseg = hd.seg.segread(str(seg.outputs[0]))
    assert dcmseg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in dcmseg.SegmentSequence] == labels
    back = np.asarray(dcmseg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=list(range(1, len(labels) + 1)), combine_segments=True,
        skip_overlap_checks=True))
    return ref, back


def _organ_box(labels: np.ndarray, organ: int, z0: int, z1: int) -> list:
    zz, yy, xx = np.nonzero(labels[z0:z1] == organ)
    return [xx.min(), yy.min(), zz.min() + z0, xx.max(), yy.max(), zz.max() + z0]


def test_dicom_series_to_dicom_seg_matches_nifti(tmp_path, fast_checkpoint) -> None:
    """DICOM-SEG read back by highdicom = the NIfTI output, voxel for voxel, on the source slices."""
    from medsam_lite.checkpoint import load_checkpoint

    with np.load(FIXTURES / "ct_slab_labels.npz") as z:
        labels = z["labels"]
    boxes = np.asarray([_organ_box(labels, 5, 3, 6), _organ_box(labels, 1, 4, 6)], np.float64)
    ref, back = _series_to_nifti_and_seg(tmp_path, load_checkpoint(fast_checkpoint), boxes, ["liver", "spleen"])
    assert ref.any() and back.shape == ref.shape and np.array_equal(back, ref)
    assert not ref[:3].any() and not ref[6:].any()  # outside the boxes' z range


@pytest.mark.slow
def test_dicom_seg_with_the_real_model(tmp_path, lite_medsam) -> None:
    """lite_medsam on the real CT series, liver box from the real labels: SEG = NIfTI and the liver overlaps."""
    with np.load(FIXTURES / "ct_slab_labels.npz") as z:
        labels = z["labels"]
    boxes = np.asarray([_organ_box(labels, 5, 2, 8)], np.float64)
    ref, back = _series_to_nifti_and_seg(tmp_path, lite_medsam, boxes, ["liver"])
    assert np.array_equal(back, ref)
    liver, pred = labels[2:8] == 5, ref[2:8] == 1
    dsc = 2 * (pred & liver).sum() / (pred.sum() + liver.sum())
    assert dsc > 0.7, dsc


def test_baseline_backends_and_embedding_cache_give_the_reference_masks(tmp_path, fast_checkpoint) -> None:
    """``--baseline`` (the LiteMedSAM algorithm) and ``--backend torch`` write identical files; OpenVINO fp32 and
    a second run through ``--embedding-cache`` agree with them (a real 3D slab of the bundled MR case)."""
    from medsam_lite.cli.main import main

    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as z:
        imgs, boxes = z["imgs"][11:16], z["boxes"].copy()
    boxes[:, 2], boxes[:, 5] = 0, 4
    case = tmp_path / "3DBox_slab.npz"
    np.savez_compressed(case, imgs=imgs, boxes=boxes)
    runs = {"torch": ["--backend", "torch"], "baseline": ["--baseline"], "openvino": ["--backend", "openvino"],
            "cached1": ["--backend", "torch", "--embedding-cache", str(tmp_path / "emb")],
            "cached2": ["--backend", "torch", "--embedding-cache", str(tmp_path / "emb")]}
    segs = {}
    for name, flags in runs.items():
        assert main(["segment", str(case), "-o", str(tmp_path / name), "--model", str(fast_checkpoint),
                     "--no-progress"] + flags) == 0, name
        with np.load(tmp_path / name / case.name) as z:
            segs[name] = z["segs"]
    assert segs["torch"].any()
    assert np.array_equal(segs["baseline"], segs["torch"])
    assert np.array_equal(segs["cached1"], segs["torch"]) and np.array_equal(segs["cached2"], segs["torch"])
    assert len(list((tmp_path / "emb").glob("*.emb"))) == 5  # one embedding per slice, reused by the 2nd run
    assert float((segs["openvino"] == segs["torch"]).mean()) >= 0.999
