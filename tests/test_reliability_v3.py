"""Reliability v3 (issue 26, items 1-6, 11, 12): real or generated fixtures, each failing on the code before.

DICOM fixtures are generated here with pydicom from the real CT of ``ct_organs`` (TotalSegmentator's example
CT, tests/fixtures/PROVENANCE.md) or from the committed ``ct_slab_series``; nothing large is committed.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import List

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medsam_lite.cli.main import main
from medsam_lite.errors import InputError
from medsam_lite.imageio import is_dicom_series_dir, is_supported, read_boxes_file, read_case, read_npz_case
from tests.conftest import EXAMPLES, FIXTURES

SIEMENS_ROOT = "1.3.12.2.1107.5.1.4."  # the UID root in names like CT.1.3.12.2.1107.5.1.4.95642....


def _run(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _garbage_checkpoint(tmp_path: Path) -> Path:
    """A --model that fails to load: any error about it proves the checks before it were passed."""
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint at all")
    return bad


def _ct_slab(shared_data: Path, z0: int = 80, n: int = 20) -> np.ndarray:
    """``n`` axial slices (z, y, x) int16 HU of the real ct_organs CT (3 mm voxels)."""
    ct = np.asarray(nib.load(str(shared_data / "ct_organs" / "ct.nii.gz")).dataobj).transpose(2, 1, 0)
    return ct[z0:z0 + n].astype(np.int16)


def _ct_datasets(slab: np.ndarray, spacing: float = 3.0) -> List[FileDataset]:
    """One CT image per slice, as a scanner writes them (identity orientation, ImagePositionPatient z = 3*z)."""
    study, series, frame = generate_uid(), generate_uid(SIEMENS_ROOT), generate_uid()
    out = []
    for z in range(slab.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(SIEMENS_ROOT)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Export^CT", "EXPORT-CT", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20260101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 2, z + 1, "fixture"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, spacing * z]
        ds.PixelSpacing, ds.SliceThickness = [3.0, 3.0], spacing
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = slab.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelData = np.ascontiguousarray(slab[z]).tobytes()
        out.append(ds)
    return out


def _pacs_export(folder: Path, slab: np.ndarray, names: str = "uid") -> Path:
    """A PACS-style export: no extension, ``CT.<SOPInstanceUID>`` (or ``IM0001``) names, written in shuffled order."""
    folder.mkdir(parents=True)
    datasets = _ct_datasets(slab)
    order = np.random.default_rng(0).permutation(len(datasets))
    for i in order:
        ds = datasets[i]
        name = f"CT.{ds.SOPInstanceUID}" if names == "uid" else f"IM{i + 1:04d}"
        ds.save_as(str(folder / name), enforce_file_format=True)
    return folder


# ------------------------------------------------------------------------------------------ item 1
def test_extensionless_ct_export_segments_to_nifti_and_dicom_seg(tmp_path, capsys, shared_data,
                                                                 fast_checkpoint) -> None:
    """20 real CT slices named ``CT.1.3.12.2.1107.5.1.4...`` (no extension): one series, segmented to NIfTI and to
    DICOM-SEG with the same voxels (before: "folder holds no supported cases")."""
    import highdicom as hd

    slab = _ct_slab(shared_data)
    export = _pacs_export(tmp_path / "export", slab)
    assert all(not p.name.endswith(".dcm") for p in export.iterdir())
    assert is_dicom_series_dir(export)
    case = read_case(export)
    assert case.array.shape == (20, 101, 122) and np.array_equal(case.array, slab)  # z order from positions
    assert case.meta["modality"] == "CT" and case.spacing_zyx == (3.0, 3.0, 3.0)

    box = ["--box", 20, 20, 4, 90, 80, 15]
    code, stdout, err = _run(capsys, "segment", export, "-o", tmp_path / "nii", "--model", fast_checkpoint,
                             "--no-progress", *box)
    assert code == 0, err
    nifti = nib.load(str(tmp_path / "nii" / "export_mask.nii.gz"))
    assert nifti.shape == (122, 101, 20) and np.allclose(nifti.header.get_zooms(), (3, 3, 3))
    ref = np.asarray(nifti.dataobj).transpose(2, 1, 0)
    assert ref.any() and not ref[:4].any() and not ref[16:].any()

    code, _, err = _run(capsys, "segment", export, "-o", tmp_path / "seg", "--model", fast_checkpoint,
                        "--no-progress", "--format", "dicom-seg", "--label", "box", *box)
    assert code == 0, err
    seg = hd.seg.segread(str(tmp_path / "seg" / "export_seg.dcm"))
    uids = [pydicom.dcmread(str(f)).SOPInstanceUID for f in case.meta["files"]]
    back = np.asarray(seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                                        combine_segments=True, skip_overlap_checks=True))
    assert np.array_equal(back, ref)


def test_im_names_dicomdir_and_series_subfolders(tmp_path, shared_data) -> None:
    """``IM0001`` names, a DICOMDIR layout (pydicom's FileSet), and an extension-less series as one case of a folder."""
    from pydicom.fileset import FileSet

    slab = _ct_slab(shared_data, 90, 6)
    im = _pacs_export(tmp_path / "im", slab, names="im")
    assert is_supported(im / "IM0001") and np.array_equal(read_case(im).array, slab)

    fileset = FileSet()
    for ds in _ct_datasets(slab):
        fileset.add(ds)
    media = tmp_path / "media"
    fileset.write(media)  # DICOMDIR + PT000000/ST000000/SE000000/IM000000 ...
    assert (media / "DICOMDIR").is_file() and not any(p.suffix for p in media.rglob("IM*"))
    assert is_dicom_series_dir(media)
    case = read_case(media)
    assert np.array_equal(case.array, slab) and len(case.meta["files"]) == 6
    assert np.array_equal(read_case(media / "DICOMDIR").array, slab)

    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copytree(im, cases / "patient1")
    shutil.copy(FIXTURES / "fundus_crop.jpg", cases / "fundus.jpg")
    (cases / "notes.txt").write_text("not a case")
    assert not is_dicom_series_dir(cases)
    assert sorted(p.name for p in cases.iterdir() if is_supported(p)) == ["fundus.jpg", "patient1"]


# ------------------------------------------------------------------------------------------ item 2
def test_overlay_or_output_equal_to_an_input_or_output_is_refused(tmp_path, capsys) -> None:
    bad_model = _garbage_checkpoint(tmp_path)
    img = tmp_path / "img.png"
    shutil.copy(FIXTURES / "fundus_crop.jpg", tmp_path / "f.jpg")
    cv2.imwrite(str(img), cv2.imread(str(tmp_path / "f.jpg")))
    before = img.read_bytes()
    out = tmp_path / "OUT"
    box = ["--box", 20, 30, 120, 100]
    for overlay, fragment in ((img, "would overwrite the input file img.png"),
                              (out / "img_mask.png", "the mask of img.png would be the same file"),
                              (out / "timing.csv", "timing.csv would be the same file"),
                              (bad_model, "would overwrite the input file garbage.pth")):
        code, stdout, err = _run(capsys, "segment", img, "-o", out, "--model", bad_model, *box, "--overlay", overlay)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, (overlay, err)
        assert "garbage.pth: not a readable" not in err and stdout == ""
    assert img.read_bytes() == before and not out.exists()
    # the boxes file is an input too
    boxes = tmp_path / "b.csv"
    boxes.write_text("20,30,120,100\n")
    code, _, err = _run(capsys, "segment", img, "-o", out, "--model", bad_model, "--boxes", boxes,
                        "--overlay", boxes)
    assert code == 2 and "would overwrite the input file b.csv" in err and boxes.read_text() == "20,30,120,100\n"
    # folder mode: overlays into the input folder would replace the input images
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(img, src / "a.png")
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", bad_model, *box, "--overlay", src)
    assert code == 2 and "would overwrite the input file a.png" in err
    assert (src / "a.png").read_bytes() == before and not out.exists()


# ------------------------------------------------------------------------------------------ item 3
def test_series_with_a_broken_or_missing_slice_is_refused(tmp_path, capsys, fast_checkpoint) -> None:
    """A slice without PixelData, or a missing slice, is an error naming the file (before: read with the
    slice dropped and every later slice shifted, z spacing wrong, exit 0)."""
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES / "ct_slab_series", broken)
    ds = pydicom.dcmread(str(broken / "slice_004.dcm"))
    del ds.PixelData
    ds.save_as(str(broken / "slice_004.dcm"))
    with pytest.raises(InputError, match=r"slice_004\.dcm: DICOM slice has no pixel data"):
        read_case(broken)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", broken, "-o", out, "--model", fast_checkpoint, "--box",
                        10, 10, 0, 60, 60, 8, "--no-progress")
    assert code == 2 and "slice_004.dcm: DICOM slice has no pixel data" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()

    gap = tmp_path / "gap"
    shutil.copytree(FIXTURES / "ct_slab_series", gap)
    (gap / "slice_005.dcm").unlink()
    with pytest.raises(InputError, match=r"slice_006\.dcm: slice positions are not evenly spaced: this slice lies "
                                         r"6 mm after slice_004\.dcm where the series steps 3 mm"):
        read_case(gap)
    dup = tmp_path / "dup"
    shutil.copytree(FIXTURES / "ct_slab_series", dup)
    ds = pydicom.dcmread(str(dup / "slice_003.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(str(dup / "slice_003b.dcm"))
    with pytest.raises(InputError, match="same position as slice_003"):
        read_case(dup)
    # the real series with rounding jitter of its steps (6.96..7.07 mm) still reads
    assert read_case(FIXTURES / "mr_pd_series").array.shape == (4, 256, 256)


# ------------------------------------------------------------------------------------------ item 4
def _npz_with_extra(path: Path, extra: bytes) -> Path:
    """A real 2D case plus a member ``junk.npy`` with the given bytes."""
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez_compressed(path, imgs=z["imgs"][:256, :256], boxes=np.array([[10, 10, 60, 60], [100, 100, 160, 150]]))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("junk.npy", extra)
    return path


def _npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npz_reads_only_the_keys_it_uses(tmp_path, monkeypatch) -> None:
    """An extra key is never decompressed (peak memory bounded by imgs + boxes); a used key that declares
    more than its limit is refused from its header, before reading."""
    big = np.zeros(64 << 20, np.uint8)  # 64 MiB of zeros: ~64 KiB compressed
    import io

    buf = io.BytesIO()
    np.save(buf, big)
    case = _npz_with_extra(tmp_path / "2DBox_bomb.npz", buf.getvalue())
    assert case.stat().st_size < 2 << 20
    opened: List[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    tracemalloc.start()
    try:
        read = read_npz_case(case)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read.array.shape == (256, 256, 3) and read.boxes.shape == (2, 4)
    assert "junk.npy" not in opened and peak < 8 << 20, (opened, peak)
    monkeypatch.undo()

    # a header that claims 6 GiB (the data is not there): unused -> ignored, used -> refused unread
    liar = _npz_with_extra(tmp_path / "2DBox_liar.npz", _npy_header((6 << 30,)) + b"\0" * 64)
    assert read_case(liar).array.shape == (256, 256, 3)
    with zipfile.ZipFile(tmp_path / "2DBox_huge.npz", "w") as zf:
        zf.writestr("imgs.npy", _npy_header((1 << 20, 2048, 3)) + b"\0" * 64)
        buf = io.BytesIO()
        np.save(buf, np.array([[1, 1, 5, 5]]))
        zf.writestr("boxes.npy", buf.getvalue())
    with pytest.raises(InputError, match=r"2DBox_huge\.npz: 'imgs' declares 6144\.0 MiB .* not read"):
        read_case(tmp_path / "2DBox_huge.npz")


# ------------------------------------------------------------------------------------------ item 5
def _best_time(call, repeats: int = 3) -> float:
    """Shortest wall time of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def test_box_limits_before_the_model_and_linear_csv(tmp_path, capsys) -> None:
    bad_model = _garbage_checkpoint(tmp_path)
    img = tmp_path / "p.png"
    cv2.imwrite(str(img), cv2.imread(str(FIXTURES / "fundus_crop.jpg")))
    rows = 40_000  # 12.4 s with a vstack per row; linear now
    many = tmp_path / "many.csv"
    many.write_text("x_min,y_min,x_max,y_max\n" + "10,10,60,60\n" * rows)
    assert read_boxes_file(many).shape == (rows, 4)
    # linear, not quadratic (a vstack per row took 12.4 s here): 10x the rows costs ~10x, not ~100x. A ratio of
    # best-of-3 times measured back to back, so a busy machine slows both sides alike (no absolute time limit).
    few = tmp_path / "few.csv"
    few.write_text("x_min,y_min,x_max,y_max\n" + "10,10,60,60\n" * (rows // 10))
    assert _best_time(lambda: read_boxes_file(many)) < 35 * _best_time(lambda: read_boxes_file(few))
    code, _, err = _run(capsys, "segment", img, "-o", tmp_path / "o", "--model", bad_model, "--boxes", many)
    assert code == 2 and f"{rows} boxes given: at most 255 fit a uint8 label map" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    code, _, err = _run(capsys, "segment", img, "-o", tmp_path / "o", "--model", bad_model,
                        *[a for i in range(256) for a in ("--box", 10, 10, 60 + i % 50, 60)])
    assert code == 2 and "256 boxes given" in err
    (tmp_path / "t.json").write_text('[[10, 10, 60, true]]')
    with pytest.raises(InputError, match=r"t\.json: row 0: true is not a number"):
        read_boxes_file(tmp_path / "t.json")
    (tmp_path / "s.json").write_text('{"boxes": [[10, 10, "60", 80]]}')
    with pytest.raises(InputError, match=r"s\.json: row 0: '60' is not a number"):
        read_boxes_file(tmp_path / "s.json")


# ------------------------------------------------------------------------------------------ item 6
def test_symlink_loops_are_one_line(tmp_path, capsys, fast_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), cv2.imread(str(FIXTURES / "fundus_crop.jpg")))
    os.symlink("loop.png", src / "loop.png")  # points at itself
    os.symlink("ping", src / "pong")
    os.symlink("pong", src / "ping")  # a two-link loop without an extension
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", src, "-o", out, "--model", fast_checkpoint, "--box", 20, 30, 120, 100,
                        "--no-progress")
    assert "Traceback" not in err
    failed = [ln.strip() for ln in err.splitlines() if "symbolic link loop" in ln]
    assert code == 1 and len(failed) == 3 and all(": symbolic link loop" in ln for ln in failed), err
    assert "3 of 4 case(s) failed" in err and (out / "a_mask.png").is_file()
    code, _, err = _run(capsys, "segment", src / "loop.png", "-o", out, "--box", 20, 30, 120, 100)
    assert code == 2 and "loop.png: symbolic link loop" in err and "file not found" not in err
    series = tmp_path / "series"
    shutil.copytree(FIXTURES / "mr_pd_series", series)
    os.symlink("brain_013", series / "brain_013")
    with pytest.raises(InputError, match=r"brain_013: symbolic link loop"):
        read_case(series)


# ------------------------------------------------------------------------------------------ item 11
class _System:
    """Unpickling this calls os.system (``posix.system``) with a command that would create a marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_refusal_names_the_global(tmp_path, capsys) -> None:
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"encoder": "repvit_m0_6", "state_dict": {}, "x": _System(marker)}, evil)
    case = tmp_path / "2DBox_x.npz"
    np.savez(case, imgs=np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3), boxes=np.array([[2, 2, 20, 20]]))
    code, _, err = _run(capsys, "segment", case, "-o", tmp_path / "out", "--model", evil, "--no-progress")
    line = err.strip()
    assert code == 2 and len(line.splitlines()) == 1 and "evil.pth: refused" in line
    assert f"would call {os.system.__module__}.system" in line and "nothing was unpickled or run" in line, line
    assert "PyTorch 2.6" not in line and "weights_only` set to `False" not in line
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ item 12
def _full_disk(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", *([str(path)] if path is not None else []))


def test_full_disk_segment_counts_cases_and_leaves_no_stale_timing(tmp_path, capsys, fast_checkpoint,
                                                                   monkeypatch) -> None:
    import medsam_lite.segment as seg

    case = tmp_path / "2DBox_x.npz"
    with np.load(EXAMPLES / "2DBox_Microscopy_nuclei.npz") as z:
        np.savez(case, imgs=z["imgs"][:256, :256], boxes=np.array([[10, 10, 60, 60], [100, 100, 160, 150]]))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "segment", case, "-o", out, "--model", fast_checkpoint, "--no-progress")
    assert code == 0 and (out / "timing.csv").read_text().splitlines()[1].endswith(",ok")

    def no_space(tmp_or_path, *args, **kwargs):  # write() fails: ENOSPC without a file name, as the kernel says
        raise _full_disk()

    def mask_no_space(case, mask, path, labels=None):  # as atomic_path reports it: naming the mask
        raise _full_disk(path)

    monkeypatch.setattr(seg, "write_mask", mask_no_space)
    monkeypatch.setattr(seg.csv, "writer", no_space)
    code, _, err = _run(capsys, "segment", case, "-o", out, "--model", fast_checkpoint, "--no-progress")
    lines = err.strip().splitlines()
    assert code == 1 and lines[0] == "medsam-lite segment: 1 of 1 case(s) failed:", err
    assert f"cannot write {out / 'timing.csv'}: No space left on device" in lines[-1], err
    assert not (out / "timing.csv").exists() and not (out / "2DBox_x.npz").exists()  # nothing says ok


def test_full_disk_prep_and_evaluate_name_the_file_and_leave_no_skeleton(tmp_path, capsys, shared_data,
                                                                          monkeypatch) -> None:
    import pathlib

    import medsam_lite.evaluate as ev

    def no_space(*args, **kwargs):
        raise _full_disk()

    out = tmp_path / "prep"
    with monkeypatch.context() as m:
        m.setattr(np, "save", no_space)
        m.setattr(pathlib.Path, "write_text", no_space)
        code, _, err = _run(capsys, "prep", shared_data / "nuclei2d", "-o", out, "--images", "image.tif",
                            "--labels", "labels.tif", "--modality", "Microscopy", "--workers", "1", "--no-progress")
    assert code == 1, err
    lines = [ln.strip() for ln in err.strip().splitlines()]
    assert any(f"cannot write {out / 'imgs' / 'nuclei2d__image.npy'}: No space left on device" in ln for ln in lines)
    assert any(f"cannot write {out / 'manifest.csv'}: No space left on device" in ln for ln in lines), err
    assert all(str(tmp_path) in ln for ln in lines if "No space" in ln) and not out.exists()

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    labels = np.zeros((32, 32), np.uint8)
    labels[5:15, 8:20] = 1
    np.savez(gt / "2DBox_US_1.npz", imgs=np.zeros((32, 32, 3), np.uint8), gts=labels)
    np.savez(pred / "2DBox_US_1.npz", segs=labels)
    monkeypatch.setattr(ev, "_write_csv", no_space)
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "rep")
    assert code != 0 and f"{tmp_path / 'rep' / 'metrics.csv'}: No space left on device" in err, err
    assert not (tmp_path / "rep").exists()


def test_prep_unknown_modality_is_one_line_before_any_work(tmp_path, capsys) -> None:
    src = tmp_path / "npz"
    src.mkdir()
    for i in range(3):
        np.savez(src / f"CT_Abd_{i}.npz", imgs=np.full((16, 16), i + 1, np.uint8), gts=np.ones((16, 16), np.uint8))
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "prep", src, "-o", out, "--modality", "Foo", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown modality 'Foo'" in err, err
    assert not out.exists()


def test_atomic_write_errors_name_the_target(tmp_path) -> None:
    from medsam_lite.io_utils import atomic_path

    target = tmp_path / "mask.png"
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise _full_disk()
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []
