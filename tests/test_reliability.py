"""``medsam-lite segment`` / ``evaluate`` under bad input and failing I/O: message, exit code, files left."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from medsam_lite.cli.main import main
from medsam_lite.imageio import read_case
from medsam_lite.normalize import normalize_to_uint8
from tests.conftest import EXAMPLES, FIXTURES, REPO


def _run(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _npz_2d(path: Path, n_boxes: int = 2) -> Path:
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(path, imgs=z["imgs"][:256, :256], boxes=np.array([[10, 10, 60, 60], [100, 100, 160, 150]][:n_boxes]))
    return path


def _garbage_checkpoint(tmp_path: Path) -> Path:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint at all")
    return bad


# ------------------------------------------------------------------------------------------ folders
def test_stray_dicom_does_not_turn_a_folder_into_a_series(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _npz_2d(src / "2DBox_a.npz")
    _npz_2d(src / "2DBox_b.npz")
    shutil.copy(FIXTURES / "ct_small.dcm", src / "stray.dcm")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--no-progress")
    assert code == 1, err
    assert _files(out) == ["2DBox_a.npz", "2DBox_b.npz", "timing.csv"]
    assert "1 of 3 case(s) failed" in err and "stray.dcm: no boxes" in err


def test_output_name_collisions_are_kept_apart(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    img = cv2.imread(str(FIXTURES / "fundus_crop.jpg"))
    cv2.imwrite(str(src / "a.png"), img)
    cv2.imwrite(str(src / "a.bmp"), img[::-1].copy())
    cv2.imwrite(str(src / "b.png"), img)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--box", 20, 30, 120, 100,
                        "--no-progress", "--overlay", tmp_path / "ov")
    assert code == 0, err
    assert _files(out) == ["a_bmp.labels.json", "a_bmp_mask.png", "a_png.labels.json", "a_png_mask.png",
                           "b.labels.json", "b_mask.png", "timing.csv"]  # each mask with its label table
    assert _files(tmp_path / "ov") == ["a_bmp.png", "a_png.png", "b.png"]
    # a name that still collides after disambiguation is refused before any work
    cv2.imwrite(str(src / "a_png.jpg"), img)
    out2 = tmp_path / "out2"
    code, _, err = _run(capsys, "segment", src, "-o", out2, "--model", _garbage_checkpoint(tmp_path),
                        "--box", 20, 30, 120, 100)
    assert code == 2 and "would write the same output name" in err and len(err.strip().splitlines()) == 1
    assert not out2.exists()


def test_failed_rerun_removes_the_stale_mask(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    case = _npz_2d(src / "2DBox_a.npz")
    png = src / "p.png"
    cv2.imwrite(str(png), cv2.imread(str(FIXTURES / "fundus_crop.jpg")))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--box", 5, 5, 50, 50,
                        "--no-progress")
    assert code == 0, err
    assert _files(out) == ["2DBox_a.npz", "p.labels.json", "p_mask.png", "timing.csv"]
    case.write_bytes(case.read_bytes()[:3000])  # the npz is now truncated
    png.write_bytes(b"\x89PNG broken")
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--box", 5, 5, 50, 50,
                        "--no-progress")
    assert code == 1 and "2 of 2 case(s) failed" in err
    assert _files(out) == ["timing.csv"]
    # single-file mode too (the case fails before the model loads: exit 2)
    _npz_2d(case)
    assert _run(capsys, "segment", case, "-o", out, "--model", fast_checkpoint, "--no-progress")[0] == 0
    assert (out / "2DBox_a.npz").is_file()
    case.write_bytes(case.read_bytes()[:3000])
    code, _, err = _run(capsys, "segment", case, "-o", out, "--model", fast_checkpoint, "--no-progress")
    assert code == 2 and "unreadable or truncated npz" in err
    assert not (out / "2DBox_a.npz").exists()


# ------------------------------------------------------------------------------------------ before the model
def test_checks_happen_before_the_model_loads(tmp_path, capsys) -> None:
    """With a garbage checkpoint, input / output problems are reported (the model never loaded)."""
    bad_model = _garbage_checkpoint(tmp_path)
    case = _npz_2d(tmp_path / "2DBox_x.npz")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", tmp_path / "missing.npz", "-o", out, "--model", bad_model)
    assert code == 2 and "missing.npz: file not found" in err and not out.exists()
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "afile", "--model", bad_model)
    assert code == 2 and "afile: output folder exists and is not a folder" in err
    code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "afile" / "sub", "--model", bad_model)
    assert code == 2 and "is not a folder" in err
    code, _, err = _run(capsys, "segment", case, "-o", out, "--model", bad_model, "--overlay",
                        tmp_path / "afile" / "ov.png")
    assert code == 2 and "overlay folder" in err and not out.exists()
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(4 * 20 * 20, dtype=np.int16).reshape(20, 20, 4), np.eye(4)), str(nii))
    code, _, err = _run(capsys, "segment", nii, "-o", out, "--model", bad_model, "--box", 1, 1, 5, 5)
    assert code == 2 and "a 3D case needs boxes of 6 numbers" in err
    code, _, err = _run(capsys, "segment", nii, "-o", out, "--model", bad_model, "--box", 50, 1, 0, 60, 5, 1)
    assert code == 2 and "outside" in err and not out.exists()
    # everything fine up to the model: now the checkpoint is the error
    code, _, err = _run(capsys, "segment", case, "-o", out, "--model", bad_model)
    assert code == 2 and "garbage.pth: not a readable PyTorch checkpoint" in err
    for line in err.strip().splitlines():
        assert "Traceback" not in line
    assert not out.exists()


def test_write_errors_are_one_line_per_case_and_the_others_go_on(tmp_path, capsys, fast_checkpoint,
                                                                   monkeypatch) -> None:
    import medsam_lite.segment as seg

    src = tmp_path / "in"
    src.mkdir()
    for name in ("2DBox_a.npz", "2DBox_b.npz", "2DBox_c.npz"):
        _npz_2d(src / name)
    real = seg.write_mask

    def full_disk(case, mask, path, labels=None):
        if case.path.name == "2DBox_b.npz":
            with open(path, "wb") as fh:  # a partial file first, then the disk is full
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(case, mask, path, labels)

    monkeypatch.setattr(seg, "write_mask", full_disk)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--no-progress")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == "medsam-lite segment: 1 of 3 case(s) failed:"
    assert len(lines) == 2 and "2DBox_b.npz: cannot write" in lines[1] and "No space left on device" in lines[1]
    assert _files(out) == ["2DBox_a.npz", "2DBox_c.npz", "timing.csv"]  # no partial b
    assert "2DBox_b.npz,".encode() in (out / "timing.csv").read_bytes()


def test_read_only_output_folder_is_one_line(tmp_path, capsys) -> None:
    case = _npz_2d(tmp_path / "2DBox_x.npz")
    for target in (Path("/proc/medsam_lite_test_out"), Path("/proc/self/medsam")):
        code, _, err = _run(capsys, "segment", case, "-o", target, "--model", _garbage_checkpoint(tmp_path))
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(target) in err, err
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            code, _, err = _run(capsys, "segment", case, "-o", ro, "--model", _garbage_checkpoint(tmp_path))
            assert code == 2 and "not writable" in err
        finally:
            ro.chmod(0o755)


def test_outputs_respect_the_umask(tmp_path, capsys, fast_checkpoint) -> None:
    case = _npz_2d(tmp_path / "2DBox_x.npz")
    old = os.umask(0o022)
    try:
        code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "out", "--model", fast_checkpoint,
                            "--no-progress", "--overlay", tmp_path / "ov.png")
    finally:
        os.umask(old)
    assert code == 0, err
    for path in (tmp_path / "out" / "2DBox_x.npz", tmp_path / "out" / "timing.csv", tmp_path / "ov.png"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ------------------------------------------------------------------------------------------ boxes / values
def test_box_flags_and_files(tmp_path, capsys) -> None:
    bad_model = _garbage_checkpoint(tmp_path)
    img = tmp_path / "p.png"
    cv2.imwrite(str(img), cv2.imread(str(FIXTURES / "fundus_crop.jpg")))
    (tmp_path / "typo.csv").write_text("l0,10,60,60\n100,120,180,200\n")
    code, _, err = _run(capsys, "segment", img, "-o", tmp_path / "o", "--model", bad_model, "--boxes",
                        tmp_path / "typo.csv")
    assert code == 2 and "typo.csv: row 1: 'l0' is not a number" in err
    (tmp_path / "b3.csv").write_text("1,2,0,30,40,3\n")
    code, _, err = _run(capsys, "segment", img, "-o", tmp_path / "o", "--model", bad_model, "--boxes",
                        tmp_path / "b3.csv", "--box", 1, 2, 3, 4)
    assert code == 2 and "holds 6-number boxes but --box gives 4" in err and len(err.strip().splitlines()) == 1


def test_boxes_json_for_3d_and_constant_volume_raw_value(tmp_path, capsys, fast_checkpoint) -> None:
    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as z:
        vol = z["imgs"][10:14].astype(np.int16)
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.eye(4)), str(tmp_path / "mr.nii.gz"))
    (tmp_path / "b.json").write_text('{"boxes": [[160, 80, 1, 210, 150, 2]]}')
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", tmp_path / "mr.nii.gz", "-o", out, "--model", fast_checkpoint,
                        "--boxes", tmp_path / "b.json", "--no-progress")
    assert code == 0, err
    data = np.asarray(nib.load(str(out / "mr_mask.nii.gz")).dataobj)
    assert not data[:, :, [0, 3]].any()  # z outside the JSON box's 1..2
    nib.save(nib.Nifti1Image(np.full((20, 20, 3), -1024, np.int16), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    code, _, err = _run(capsys, "segment", tmp_path / "flat.nii.gz", "-o", out, "--model", fast_checkpoint,
                        "--box", 1, 1, 0, 10, 10, 2)
    assert code == 2 and "flat.nii.gz: volume is constant (every voxel = -1024)" in err


def test_hu_notice_and_modality_contract(tmp_path, capsys, fast_checkpoint) -> None:
    """segment maps intensities with prep's table: CT window for --modality CT / DICOM CT, percentiles of
    NON-ZERO voxels otherwise, and says on stderr when values look like HU."""
    from medsam_lite.segment import model_input

    case = read_case(FIXTURES / "ct_slab_series")
    hu = case.array
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([3.0, 3, 3, 1])), str(tmp_path / "ct.nii.gz"))
    nii = read_case(tmp_path / "ct.nii.gz")
    got, text, notice = model_input(nii)
    assert text == "percentile[0.5,99.5]" and "--modality CT" in notice
    assert np.array_equal(got, normalize_to_uint8(hu, "MR"))
    got, text, notice = model_input(nii, "CT")
    assert text == "ct[L40,W400]" and notice is None and np.array_equal(got, normalize_to_uint8(hu, "CT"))
    got, text, _ = model_input(case)  # DICOM: its Modality tag (CT)
    assert text == "ct[L40,W400]" and np.array_equal(got, normalize_to_uint8(hu, "CT", (40, 400)))
    got, text, _ = model_input(case, window=(-600, 1500))
    assert text == "ct[L-600,W1500]"
    # percentiles of non-zero voxels, not of all voxels: differs from the old rule on a zero-padded MR
    mr = read_case(FIXTURES / "mr_pd_series")
    got, _, _ = model_input(mr)
    nonzero = mr.array[mr.array != 0]
    lo, hi = np.percentile(nonzero, [0.5, 99.5])
    assert got.max() == 255 and np.array_equal(got[mr.array == 0], np.zeros((mr.array == 0).sum(), np.uint8))
    old_lo, old_hi = np.percentile(mr.array, [0.5, 99.5])
    assert (old_lo, old_hi) != (lo, hi)
    with pytest.raises(Exception, match="--window applies to CT only"):
        model_input(mr, "MR", (40, 400))
    # the CLI prints the notice on stderr, not stdout
    code, stdout, err = _run(capsys, "segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--model",
                             fast_checkpoint, "--box", 30, 30, 2, 80, 80, 4, "--no-progress")
    assert code == 0, err
    assert "notice:" in err and "--modality CT" in err and "notice:" not in stdout
    code, _, err = _run(capsys, "segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--model",
                        fast_checkpoint, "--box", 30, 30, 2, 80, 80, 4, "--no-progress", "--modality", "CT")
    assert code == 0 and "notice" not in err
    code, _, err = _run(capsys, "segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--modality", "Xyz")
    assert code == 2 and "unknown modality 'Xyz'" in err


def test_2d_nifti_segments_as_an_image(tmp_path, capsys, fast_checkpoint) -> None:
    import tifffile

    img = tifffile.imread(FIXTURES / "nuclei_crop_image.tif")
    nib.save(nib.Nifti1Image(img.T.astype(np.int16), np.diag([0.5, 0.5, 1, 1])), str(tmp_path / "n.nii.gz"))
    code, _, err = _run(capsys, "segment", tmp_path / "n.nii.gz", "-o", tmp_path / "o", "--model", fast_checkpoint,
                        "--box", 10, 20, 60, 50)
    assert code == 0, err
    back = nib.load(str(tmp_path / "o" / "n_mask.nii.gz"))
    assert back.shape == (128, 128) and np.allclose(back.affine, np.diag([0.5, 0.5, 1, 1]))


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_out_file_and_all_missing(tmp_path, capsys) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    labels = np.zeros((32, 32), np.uint8)
    labels[5:15, 8:20] = 1
    np.savez(gt / "2DBox_US_1.npz", imgs=np.zeros((32, 32, 3), np.uint8), gts=labels)
    (tmp_path / "report").write_text("not a folder")
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "report")
    assert code == 2 and "report: report folder exists and is not a folder" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "rep")
    assert code == 1 and "no prediction file for any of the 1 case(s)" in err
    np.savez(pred / "2DBox_US_1.npz", segs=labels)
    code, stdout, err = _run(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "rep")
    assert code == 0 and "DSC 1.0000" in stdout, err


# ------------------------------------------------------------------------------------------ killed run
def test_sigkill_during_3d_segment_then_rerun(tmp_path, fast_checkpoint) -> None:
    """A real SIGKILL while a 3D case is being segmented; the rerun works and no temp file is left."""
    with np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz") as z:
        imgs = z["imgs"][6:18]  # 12 slices: long enough to be killed mid-volume, short to rerun
    case = tmp_path / "3DBox_MR_big.npz"
    np.savez(case, imgs=imgs, boxes=np.array([[100, 60, 0, 220, 180, imgs.shape[0] - 1]]))
    out = tmp_path / "out"
    out.mkdir()
    # a temp file from an earlier killed writer (its pid is gone)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".3DBox_MR_big.{int(dead.stdout)}-00aa11bb.tmp.npz").write_bytes(b"partial")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "medsam_lite.cli.main", "segment", str(case), "-o", str(out), "--model",
           str(fast_checkpoint)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    seen_progress = False
    # tqdm writes the progress bar on stderr once slices are being segmented
    os.set_blocking(proc.stderr.fileno(), False)
    buffer = b""
    while time.time() < deadline and proc.poll() is None:
        try:
            buffer += os.read(proc.stderr.fileno(), 65536)
        except BlockingIOError:
            pass
        if b"%|" in buffer:
            seen_progress = True
            time.sleep(0.3)  # a few slices in
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be killed: {buffer}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and seen_progress
    assert not (out / "3DBox_MR_big.npz").exists()
    rerun = subprocess.run(cmd + ["--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(out) == ["3DBox_MR_big.npz", "timing.csv"]  # dead temp removed, none new
    assert np.load(out / "3DBox_MR_big.npz")["segs"].shape == imgs.shape


def test_dicom_series_flag_reads_a_folder_with_other_files(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "series"
    shutil.copytree(FIXTURES / "mr_pd_series", src)
    (src / "README.txt").write_text("scanner notes")
    out = tmp_path / "out"
    # without the flag: a folder of cases, each .dcm a 2D image (so the 3D box does not fit any)
    code, _, err = _run(capsys, "segment", src, "-o", tmp_path / "o2", "--model", fast_checkpoint,
                        "--box", 60, 60, 1, 200, 200, 2, "--no-progress")
    assert code == 1 and "4 of 4 case(s) failed" in err and "a 2D case needs boxes of 4 numbers" in err
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--dicom-series",
                        "--box", 60, 60, 1, 200, 200, 2, "--no-progress")
    assert code == 0, err
    assert _files(out) == ["series.labels.json", "series_mask.nii.gz", "timing.csv"]
