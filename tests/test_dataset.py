"""medsam_lite.prep.dataset on a folder prepared from real data: shapes, boxes, flips, workers, image-only mode."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from medsam_lite.prep.dataset import ImageOnlyDataset, SliceDataset
from medsam_lite.prep.layouts import DatasetSpec
from medsam_lite.prep.prep import PrepConfig, prep_dataset
from medsam_lite.transforms import get_preprocess_shape, preprocess_image

JITTER = 5


@pytest.fixture(scope="module")
def data_root(shared_data: Path) -> Path:
    path = shared_data
    if not (path / "mni152").is_dir() or not (path / "nuclei2d").is_dir():
        pytest.skip("../shared/data (mni152, nuclei2d) not present")
    return path


@pytest.fixture(scope="module")
def prepared(data_root: Path, tmp_path_factory) -> Path:
    """12 MNI152 slices (3 cases of 4 slices, real data) + the nuclei2d image, prepared with prep_dataset."""
    src = tmp_path_factory.mktemp("mni_src")
    refs = {n: nib.load(str(data_root / "mni152" / f"{n}.nii.gz")) for n in ("t1", "gm_prob")}
    for i, z in enumerate((80, 95, 110)):
        for name, img in refs.items():
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, z:z + 4], img.affine), str(src / f"c{i}_{name}.nii.gz"))
    specs = [
        DatasetSpec(root=src, images="*_t1.nii.gz", image_suffix="_t1", name="mni", modality="MR",
                    labels=[{"path": "{case}_gm_prob.nii.gz", "id": 1, "threshold": 128}]),
        DatasetSpec(root=data_root / "nuclei2d", images="image.tif", labels="labels.tif", modality="Microscopy"),
    ]
    out = tmp_path_factory.mktemp("prepared")
    result = prep_dataset(specs, out, PrepConfig(min_voxels=0, val_fraction=0.25, progress=False))
    assert result.ok and result.slices == 13
    return out


def check_item(item: dict) -> None:
    image, mask, box = item["image"], item["mask"], item["box"]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert mask.shape == (1, 256, 256) and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    assert box.shape == (4,) and box.dtype == torch.float32
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    x0, y0, x1, y1 = box.tolist()
    assert xs.min() - JITTER <= x0 <= xs.min() and ys.min() - JITTER <= y0 <= ys.min()
    assert xs.max() <= x1 <= xs.max() + JITTER and ys.max() <= y1 <= ys.max() + JITTER
    assert 0 <= x0 <= x1 <= 255 and 0 <= y0 <= y1 <= 255
    assert isinstance(item["name"], str)


def test_items_and_split(prepared: Path) -> None:
    train, val = SliceDataset(prepared, "train"), SliceDataset(prepared, "val")
    assert len(train) + len(val) == 13 and len(val) >= 1
    assert not {train.rows[i]["case"] for i in range(len(train))} & {val.rows[i]["case"] for i in range(len(val))}
    for i in range(len(train)):
        check_item(train[i])


def test_unaugmented_matches_inference_preprocessing(prepared: Path) -> None:
    ds = SliceDataset(prepared, split=None, augment=False)
    for i in range(len(ds)):
        item = ds[i]
        row = ds.rows[i]
        stored = np.load(prepared / "imgs" / row["file"])
        expected, _ = preprocess_image(stored)
        assert torch.equal(item["image"], expected[0])  # same chain as inference, padding bottom / right
        gt = np.load(prepared / "gts" / row["file"])
        h, w = get_preprocess_shape(*gt.shape)
        labels_r = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST)
        mask = item["mask"][0].numpy()
        assert mask[h:].sum() == 0 and mask[:, w:].sum() == 0
        assert any(np.array_equal(mask[:h, :w], labels_r == v) for v in np.unique(labels_r) if v)
        ys, xs = np.nonzero(mask)
        assert item["box"].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # no jitter without augment


def test_flips_are_consistent(prepared: Path) -> None:
    plain = SliceDataset(prepared, split=None, augment=False)
    aug = SliceDataset(prepared, split=None, augment=True)
    # nuclei2d is square (512 x 512): no padding, so a flip of the padded frame equals a flip of the image
    index = next(i for i, r in enumerate(plain.rows) if r["dataset"] == "nuclei2d")
    base = plain[index]["image"]
    gt = np.load(prepared / "gts" / plain.rows[index]["file"])
    labels_r = torch.from_numpy(cv2.resize(gt, (256, 256), interpolation=cv2.INTER_NEAREST).astype(np.int64))
    flips_seen = set()
    for _ in range(12):
        item = aug[index]
        check_item(item)
        for flip, dims in (("none", []), ("h", [2]), ("v", [1]), ("hv", [1, 2])):
            if torch.equal(item["image"], torch.flip(base, dims) if dims else base):
                flips_seen.add(flip)
                lab = torch.flip(labels_r, [d - 1 for d in dims]) if dims else labels_r
                ids = torch.unique(lab[item["mask"][0] > 0])
                assert len(ids) == 1 and torch.equal(item["mask"][0] > 0, lab == ids[0])
                break
        else:
            pytest.fail("augmented image is not a flip of the original")
    assert len(flips_seen) >= 2


def test_multiworker_dataloader(prepared: Path) -> None:
    ds = SliceDataset(prepared, "train")
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 256, 256) and batch["mask"].shape[1:] == (1, 256, 256)
        assert batch["box"].shape[1:] == (4,)
        for j in range(batch["image"].shape[0]):
            check_item({k: v[j] for k, v in batch.items()})
        seen += batch["image"].shape[0]
    assert seen == len(ds)
    # workers draw independent random streams: the same slice 8 times, 4 per worker
    same = DataLoader(Subset(SliceDataset(prepared, split=None, augment=True), [0] * 8), batch_size=1, num_workers=2)
    draws = [tuple(b["box"][0].tolist()) + (float(b["image"].sum()),) for b in same]
    assert draws[0::2] != draws[1::2]


def test_image_only_modes(prepared: Path, data_root: Path, tmp_path: Path) -> None:
    ds = ImageOnlyDataset(prepared)
    assert len(ds) == 13 and set(ds[0]) == {"image", "name"}
    assert ds[0]["image"].shape == (3, 256, 256)
    assert len(ImageOnlyDataset(prepared, split="val")) == len(SliceDataset(prepared, "val"))

    # a plain folder of .npy images (real unlabelled images) with a labels-free manifest
    from medsam_lite.imageio import read_case

    plain = tmp_path / "plain"
    plain.mkdir()
    names = []
    for f in ("microscopy_cell.png", "fundus_retina.jpg"):
        if (data_root / "unlabeled" / f).exists():
            np.save(plain / f"{Path(f).stem}.npy", read_case(data_root / "unlabeled" / f).array)
            names.append(f"{Path(f).stem}.npy")
    np.save(plain / "nuclei.npy", np.load(prepared / "imgs" / "nuclei2d__image.npy")[..., 0])
    names.append("nuclei.npy")
    with open(plain / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file"])
        writer.writerows([n] for n in names)
    ds = ImageOnlyDataset(plain, augment=True)
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == len(names)
    for b in batches:
        assert b["image"].shape[1:] == (3, 256, 256) and b["image"].dtype == torch.float32
        assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    (plain / "manifest.csv").unlink()
    assert len(ImageOnlyDataset(plain)) == len(names)  # no manifest: every .npy


def test_reset_random_restarts_the_stream(prepared: Path) -> None:
    """reset_random(): the next items re-seed from torch.initial_seed(), so the same seed gives the same items."""
    train = SliceDataset(prepared, split="train")
    torch.manual_seed(7)
    first = [train[i]["box"] for i in range(len(train))]
    torch.manual_seed(7)
    carried = [train[i]["box"] for i in range(len(train))]  # the stream carries on without a reset
    train.reset_random()
    torch.manual_seed(7)
    again = [train[i]["box"] for i in range(len(train))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, carried))


def test_preprocessing_record_of_real_manifest(prepared: Path) -> None:
    """The checkpoint's preprocessing record is the manifest's normalisation per modality + the model frame."""
    from medsam_lite.distill.data import preprocessing_record
    from medsam_lite.prep.dataset import MODEL_FRAME

    record = preprocessing_record([prepared])
    assert record == {"normalization": {"MR": "percentile[0.5,99.5]", "Microscopy": "percentile[0.5,99.5]"},
                      "model_frame": MODEL_FRAME}
    with open(prepared / "manifest.csv", newline="") as fh:
        assert {(r["modality"], r["normalization"]) for r in csv.DictReader(fh)} == {
            (m, n) for m, n in record["normalization"].items()}
