"""Rebuild the bundled challenge-format example cases from the real data in ``../shared/data``.

Run from the repository root: ``python examples/make_examples.py [SHARED_DATA_DIR]``. The outputs
are committed as package data in ``medsam_lite/examples/`` (small); this script documents exactly how they were made:

* ``2DBox_Microscopy_nuclei.npz``: stardist 0.9.2 ``img2d.tif`` (fluorescence nuclei, 512 x 512
  uint16) min-max scaled to uint8 and replicated to (H, W, 3); one tight box per labelled nucleus
  of ``mask2d.tif`` (125 boxes); ``gts`` = the instance map relabelled 1..125 in box order.
* ``3DBox_CT_abdomen.npz``: TotalSegmentator 2.18.0 test CT (3 mm, HU) with abdomen window
  L40/W400 to uint8, arrays (z, y, x); boxes = 3D bounding boxes of spleen, right and left kidney,
  liver, stomach (model-made reference labels); ``gts`` relabelled 1..5 in box order;
  ``spacing`` (z, y, x) in mm.
* ``3DBox_MR_brain_tumour.npz``: pyradiomics 3.0.1 ``brain1`` MR (256 x 256 x 25, 0.78 x 0.78 x
  6.5 mm) scaled by its 0.5-99.5 percentiles to uint8; one box around the tumour label.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tifffile

from medsam_lite.imageio import to_uint8

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "medsam_lite" / "examples"  # package data


def box_2d(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def box_3d(mask: np.ndarray) -> list:
    zs, ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()]


def nuclei(shared: Path) -> None:
    img = tifffile.imread(shared / "nuclei2d/image.tif").astype(np.float64)
    lbl = tifffile.imread(shared / "nuclei2d/labels.tif")
    img8 = np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    ids = [int(i) for i in np.unique(lbl) if i]
    gts = np.zeros(lbl.shape, np.uint8)
    boxes = []
    for k, i in enumerate(ids, start=1):
        gts[lbl == i] = k
        boxes.append(box_2d(lbl == i))
    np.savez_compressed(OUT / "2DBox_Microscopy_nuclei.npz", imgs=np.repeat(img8[:, :, None], 3, axis=2),
                        boxes=np.array(boxes, np.int64), gts=gts)


def ct(shared: Path) -> None:
    ct_img = nib.load(str(shared / "ct_organs/ct.nii.gz"))
    lab = np.asarray(nib.load(str(shared / "ct_organs/labels.nii.gz")).dataobj).transpose(2, 1, 0)
    vol = np.asarray(ct_img.dataobj).transpose(2, 1, 0)
    zooms = ct_img.header.get_zooms()[:3]
    organs = [1, 2, 3, 5, 6]  # spleen, kidney_right, kidney_left, liver, stomach
    gts = np.zeros(lab.shape, np.uint8)
    boxes = []
    for k, organ in enumerate(organs, start=1):
        gts[lab == organ] = k
        boxes.append(box_3d(lab == organ))
    np.savez_compressed(OUT / "3DBox_CT_abdomen.npz", imgs=to_uint8(vol, (40, 400)), boxes=np.array(boxes, np.int64),
                        gts=gts, spacing=np.array([zooms[2], zooms[1], zooms[0]], np.float64))


def brain(shared: Path) -> None:
    image = sitk.ReadImage(str(shared / "lesions/brain1_image.nrrd"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(shared / "lesions/brain1_label.nrrd")))
    vol = sitk.GetArrayFromImage(image)
    gts = (label > 0).astype(np.uint8)
    sx, sy, sz = image.GetSpacing()
    np.savez_compressed(OUT / "3DBox_MR_brain_tumour.npz", imgs=to_uint8(vol), boxes=np.array([box_3d(gts)], np.int64),
                        gts=gts, spacing=np.array([sz, sy, sx], np.float64))


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data"
    nuclei(root)
    ct(root)
    brain(root)
    for p in sorted(OUT.glob("*.npz")):
        with np.load(p) as z:
            print(p.name, {k: (z[k].shape, str(z[k].dtype)) for k in z.files}, f"{p.stat().st_size / 1e3:.0f} kB")
