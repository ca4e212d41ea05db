"""Readers and writers of medsam_lite.imageio on real fixtures: channels, geometry, voxel placement."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from medsam_lite.errors import InputError
from medsam_lite.imageio import (is_dicom_series_dir, mask_path_for, read_boxes_file, read_case,
                                 write_dicom_seg, write_mask)
from medsam_lite.io_utils import atomic_path, remove_dead_temporaries
from tests.conftest import FIXTURES

SERIES = FIXTURES / "ct_slab_series"


def _block(shape, z=(1, 3), y=(5, 10), x=(20, 30)) -> np.ndarray:
    """A (D, H, W) mask with label 1 in an asymmetric block (x range != y range: a swap is visible)."""
    mask = np.zeros(shape, np.uint8)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = 1
    return mask


# ------------------------------------------------------------------------------------------ TIFF / JPG
def test_tiff_channels_come_from_metadata(tmp_path) -> None:
    rgb = read_case(FIXTURES / "ihc_rgb.tif")
    assert not rgb.is_3d and rgb.array.shape == (128, 128, 3) and rgb.array.dtype == np.uint8
    ref = cv2.imread(str(Path(FIXTURES / "ihc_rgb.tif")), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.array_equal(rgb.array, ref)  # RGB order, not BGR

    rgba = np.dstack([rgb.array, np.full((128, 128), 200, np.uint8)])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    case = read_case(tmp_path / "rgba.tif")
    assert not case.is_3d and case.array.shape == (128, 128, 3) and np.array_equal(case.array, rgb.array)

    planar = np.ascontiguousarray(rgb.array.transpose(2, 0, 1))
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    case = read_case(tmp_path / "planar.tif")
    assert not case.is_3d and np.array_equal(case.array, rgb.array)

    grey = tifffile.imread(FIXTURES / "nuclei_crop_image.tif")
    stack = np.stack([grey, grey // 2, grey // 3])  # 3 pages: slices, not colour
    tifffile.imwrite(tmp_path / "stack3.tif", stack, photometric="minisblack")
    case = read_case(tmp_path / "stack3.tif")
    assert case.is_3d and case.array.shape == (3, 128, 128) and np.array_equal(case.array[2], grey // 3)
    assert mask_path_for(case, tmp_path).name == "stack3_mask.nii.gz"

    single = read_case(FIXTURES / "nuclei_crop_image.tif")
    assert not single.is_3d and single.array.shape == (128, 128) and single.array.dtype == np.uint16

    tifffile.imwrite(tmp_path / "rgbstack.tif", np.stack([rgb.array, rgb.array]), photometric="rgb")
    with pytest.raises(InputError, match="rgbstack.tif: colour TIFF with 2 pages"):
        read_case(tmp_path / "rgbstack.tif")


def test_jpg_is_rgb() -> None:
    case = read_case(FIXTURES / "fundus_crop.jpg")
    assert not case.is_3d and case.array.shape == (256, 256, 3) and case.array.dtype == np.uint8
    bgr = cv2.imread(str(FIXTURES / "fundus_crop.jpg"), cv2.IMREAD_COLOR)
    assert np.array_equal(case.array, bgr[:, :, ::-1])
    assert case.array[..., 0].mean() > case.array[..., 2].mean()  # a fundus is red


# ------------------------------------------------------------------------------------------ DICOM
def test_multiframe_dicom_is_a_volume() -> None:
    import pydicom

    case = read_case(FIXTURES / "xa_multiframe.dcm")
    assert case.is_3d and case.array.shape == (8, 128, 128) and case.meta["modality"] == "XA"
    assert np.array_equal(case.array, pydicom.dcmread(str(FIXTURES / "xa_multiframe.dcm")).pixel_array)


def test_mixed_folder_is_not_a_series_and_two_series_are_listed(tmp_path) -> None:
    import shutil

    import pydicom

    assert is_dicom_series_dir(SERIES) and not is_dicom_series_dir(FIXTURES)
    mixed = tmp_path / "mixed"
    shutil.copytree(SERIES, mixed)
    np.savez(mixed / "2DBox_x.npz", imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.zeros((1, 4)))
    assert not is_dicom_series_dir(mixed)
    with pytest.raises(InputError, match="not a DICOM series"):
        read_case(mixed)

    two = tmp_path / "two"
    shutil.copytree(SERIES, two)
    for f in sorted(FIXTURES.glob("mr_pd_series/*.dcm")):
        shutil.copy(f, two / f"mr_{f.name}")
    mr_uid = pydicom.dcmread(str(next((FIXTURES / "mr_pd_series").glob("*.dcm")))).SeriesInstanceUID
    ct_uid = pydicom.dcmread(str(next(SERIES.glob("*.dcm")))).SeriesInstanceUID
    with pytest.raises(InputError, match="holds 2 DICOM series") as info:
        read_case(two)
    assert mr_uid in str(info.value) and ct_uid in str(info.value) and "(10 files)" in str(info.value)
    assert "(4 files)" in str(info.value)
    picked = read_case(two, series_uid=mr_uid)
    assert picked.array.shape == (4, 256, 256) and picked.meta["modality"] == "MR"


# ------------------------------------------------------------------------------------------ placement
def test_nifti_mask_voxels_where_they_were(tmp_path) -> None:
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    vol_xyz = np.random.default_rng(0).integers(0, 1000, (64, 48, 5)).astype(np.int16)  # (x, y, z)
    nib.save(nib.Nifti1Image(vol_xyz, affine), str(tmp_path / "v.nii.gz"))
    case = read_case(tmp_path / "v.nii.gz")
    assert case.array.shape == (5, 48, 64)  # (z, y, x)
    assert case.array[2, 7, 30] == vol_xyz[30, 7, 2]
    out = write_mask(case, _block(case.array.shape), tmp_path / "m.nii.gz")
    data = np.asarray(nib.load(str(out)).dataobj)
    xs, ys, zs = np.nonzero(data)
    assert (xs.min(), xs.max(), ys.min(), ys.max(), zs.min(), zs.max()) == (20, 29, 5, 9, 1, 2)
    assert np.allclose(nib.load(str(out)).affine, affine)


def test_2d_nifti_is_a_2d_image(tmp_path) -> None:
    img_xy = tifffile.imread(FIXTURES / "nuclei_crop_image.tif").T[:, :100]  # (x, y) = (128, 100)
    affine = np.diag([0.5, 0.25, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img_xy, affine), str(tmp_path / "slice.nii"))
    case = read_case(tmp_path / "slice.nii")
    assert not case.is_3d and case.array.shape == (100, 128)
    mask = np.zeros(case.array.shape, np.uint8)
    mask[5:10, 20:30] = 1  # y 5..9, x 20..29
    out = write_mask(case, mask, mask_path_for(case, tmp_path))
    assert out.name == "slice_mask.nii"
    back = nib.load(str(out))
    assert back.shape == (128, 100) and np.allclose(back.affine, affine)
    xs, ys = np.nonzero(np.asarray(back.dataobj))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 29, 5, 9)


def test_itk_direction_and_placement_are_kept(tmp_path) -> None:
    vol = np.random.default_rng(1).integers(0, 1000, (5, 48, 64)).astype(np.int16)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((1.0, -2.0, 3.0))
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)  # rotated about z: not the identity
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp_path / "v.mha"))
    case = read_case(tmp_path / "v.mha")
    out = write_mask(case, _block(vol.shape), mask_path_for(case, tmp_path))
    back = sitk.ReadImage(str(out))
    assert np.allclose(back.GetDirection(), direction) and np.allclose(back.GetOrigin(), (1.0, -2.0, 3.0))
    assert np.allclose(back.GetSpacing(), (0.7, 0.8, 2.5))
    zs, ys, xs = np.nonzero(sitk.GetArrayFromImage(back))
    assert (xs.min(), xs.max(), ys.min(), ys.max(), zs.min(), zs.max()) == (20, 29, 5, 9, 1, 2)
    # the same physical point in the source and the mask
    assert np.allclose(back.TransformIndexToPhysicalPoint((20, 5, 1)), image.TransformIndexToPhysicalPoint((20, 5, 1)))


def test_dicom_series_mask_lands_on_the_source_voxels(tmp_path) -> None:
    """NIfTI from a DICOM series: voxel (x, y, z) sits at the DICOM position of column x, row y, file z."""
    import pydicom

    case = read_case(SERIES)
    assert case.array.shape == (10, 101, 122) and case.meta["modality"] == "CT"
    files = case.meta["files"]
    first = pydicom.dcmread(str(files[0]))
    assert np.array_equal(case.array[0], first.pixel_array)  # z index 0 = files[0], rows = y
    out = write_mask(case, _block(case.array.shape), mask_path_for(case, tmp_path))
    nii = nib.load(str(out))
    xs, ys, zs = np.nonzero(np.asarray(nii.dataobj))
    assert (xs.min(), xs.max(), ys.min(), ys.max(), zs.min(), zs.max()) == (20, 29, 5, 9, 1, 2)
    ds = pydicom.dcmread(str(files[1]))
    ipp, (dr, dc) = np.array(ds.ImagePositionPatient, float), (float(v) for v in ds.PixelSpacing)
    row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    lps = ipp + 20 * dc * row_dir + 5 * dr * col_dir  # column x=20, row y=5 of file 1
    ras = nii.affine @ np.array([20, 5, 1, 1.0])
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)


def test_dicom_seg_references_the_source_slices(tmp_path) -> None:
    import highdicom as hd
    import pydicom

    case = read_case(SERIES)
    mask = _block(case.array.shape)
    mask[4:6, 50:60, 70:90] = 2
    out = write_dicom_seg(case, mask, tmp_path / "s_seg.dcm", labels=["liver", "spleen"])
    seg = hd.seg.segread(str(out))
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    uids = [pydicom.dcmread(str(f)).SOPInstanceUID for f in case.meta["files"]]
    assert seg.SeriesInstanceUID != pydicom.dcmread(str(case.meta["files"][0])).SeriesInstanceUID
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2],
                                             combine_segments=True, skip_overlap_checks=True)
    assert back.shape == mask.shape
    assert np.array_equal(np.asarray(back), mask)  # a swap of x / y or of slice order fails here
    with pytest.raises(InputError, match="needs a DICOM series"):
        write_dicom_seg(read_case(FIXTURES / "ct_small.dcm"), mask[0], tmp_path / "x_seg.dcm")


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_path_failing_write_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "a_mask.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full halfway")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"par")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a_mask.png"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_path_respects_the_umask(tmp_path, umask, mode) -> None:
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "x.nii.gz") as tmp:
            tmp.write_bytes(b"data")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.nii.gz").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_dead_temporaries_are_removed_live_ones_kept(tmp_path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".a_mask.{dead_pid}-0123abcd.tmp.png").write_bytes(b"x")
    (tmp_path / f".b_mask.{os.getppid()}-0123abcd.tmp.png").write_bytes(b"x")
    (tmp_path / ".hidden.txt").write_bytes(b"user file")
    removed = remove_dead_temporaries(tmp_path)
    assert [p.name for p in removed] == [f".a_mask.{dead_pid}-0123abcd.tmp.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".b_mask.{os.getppid()}-0123abcd.tmp.png", ".hidden.txt"]


# ------------------------------------------------------------------------------------------ box files
def test_box_files_are_parsed_strictly(tmp_path) -> None:
    def boxes(name: str, text: str) -> np.ndarray:
        (tmp_path / name).write_text(text)
        return read_boxes_file(tmp_path / name)

    assert boxes("h.csv", "x_min,y_min,x_max,y_max\n1,2,3,4\n").tolist() == [[1, 2, 3, 4]]
    # header in another order: columns follow the names
    assert boxes("o.csv", "y_min,x_min,y_max,x_max\n2,1,4,3\n").tolist() == [[1, 2, 3, 4]]
    assert boxes("t.csv", "1\t2\t3\t4\n5\t6\t7\t8\n").tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert boxes("s.csv", "1;2;3;4\n").tolist() == [[1, 2, 3, 4]]
    with pytest.raises(InputError, match=r"typo.csv: row 1: 'l0' is not a number"):
        boxes("typo.csv", "l0,10,60,60\n100,120,180,200\n")
    with pytest.raises(InputError, match=r"row 3: 'x' is not a number"):
        boxes("mid.csv", "x_min,y_min,x_max,y_max\n1,2,3,4\n1,2,x,4\n")
    with pytest.raises(InputError, match=r"row 2: 6 values, earlier rows have 4"):
        boxes("mix.csv", "1,2,3,4\n1,2,3,4,5,6\n")
    with pytest.raises(InputError, match=r"row 1: 5 values"):
        boxes("five.csv", "1,2,3,4,5\n")
    with pytest.raises(InputError, match="only a header"):
        boxes("only.csv", "x_min,y_min,x_max,y_max\n")
    assert boxes("b.json", '{"boxes": [[1, 2, 0, 30, 40, 3]]}').shape == (1, 6)
    with pytest.raises(InputError, match=r"row 0: 'a' is not a number"):
        boxes("bad.json", '[["a", 1, 2, 3]]')
