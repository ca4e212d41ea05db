"""`medsam-lite prep` / medsam_lite.prep.prep on real data: layout, counts, normalization, resume, bad input."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import nibabel as nib
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from medsam_lite import normalize
from medsam_lite.prep.layouts import DatasetSpec, Overrides, discover
from medsam_lite.prep.prep import PrepConfig, assign_split, prep_dataset
from medsam_lite.errors import InputError

REPO = Path(__file__).resolve().parents[1]
Z0, Z1 = 75, 115  # 40-slice crop of MNI152 through the ventricles


# ------------------------------------------------------------------ fixtures / helpers
@pytest.fixture(scope="module")
def data_root(shared_data: Path) -> Path:
    path = shared_data
    if not (path / "mni152").is_dir() or not (path / "nuclei2d").is_dir():
        pytest.skip("../shared/data (mni152, nuclei2d) not present")
    return path


def _save_nifti(path: Path, data_xyz: np.ndarray, ref: nib.Nifti1Image, zooms=None) -> Path:
    header = ref.header.copy()
    header.set_data_dtype(data_xyz.dtype)
    img = nib.Nifti1Image(data_xyz, ref.affine, header)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def mni_crop(data_root: Path, tmp_path_factory) -> Path:
    """t1 / gm_prob / wm_prob cropped to 40 axial slices (real data, smaller)."""
    out = tmp_path_factory.mktemp("mni_crop")
    for name in ("t1", "gm_prob", "wm_prob"):
        img = nib.load(str(data_root / "mni152" / f"{name}.nii.gz"))
        _save_nifti(out / f"{name}.nii.gz", np.asarray(img.dataobj)[:, :, Z0:Z1], img)
    return out


def _spec(path: Path, mni: Path, nuclei: Path) -> Path:
    path.write_text(f"""
datasets:
  - name: mni152
    root: {mni}
    images: t1.nii.gz
    labels:
      - {{path: gm_prob.nii.gz, id: 1, threshold: 128}}
      - {{path: wm_prob.nii.gz, id: 2, threshold: 128}}
    modality: MR
  - name: nuclei2d
    root: {nuclei}
    images: image.tif
    labels: labels.tif
    modality: Microscopy
""")
    return path


def run_cli(argv: List[str]) -> int:
    """``medsam-lite prep ...`` through the subcommand's own register / run."""
    from medsam_lite.cli import prep as prep_cli

    parser = argparse.ArgumentParser(prog="medsam-lite")
    prep_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prep", *argv])
    return args.func(args)


def read_rows(out: Path) -> List[Dict[str, str]]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def parse_labels(text: str) -> Dict[int, int]:
    return {int(k): int(v) for k, v in (item.split(":") for item in text.split(";") if item)}


def tree_hashes(out: Path) -> Dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(data_root: Path, mni_crop: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("prep")
    spec = _spec(work / "spec.yaml", mni_crop, data_root / "nuclei2d")
    assert run_cli([str(spec), "-o", str(work / "out"), "--workers", "2", "--no-progress"]) == 0
    return work / "out"


@pytest.fixture(scope="module")
def nnunet_root(mni_crop: Path, tmp_path_factory) -> Path:
    """An nnU-Net layout of 8 real cases (5-slice slabs of the MNI crop), with dataset.json."""
    root = tmp_path_factory.mktemp("Dataset001_MNI")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    t1 = nib.load(str(mni_crop / "t1.nii.gz"))
    data = np.asarray(t1.dataobj)
    gm = np.asarray(nib.load(str(mni_crop / "gm_prob.nii.gz")).dataobj)
    wm = np.asarray(nib.load(str(mni_crop / "wm_prob.nii.gz")).dataobj)
    labels = np.zeros(gm.shape, np.uint8)
    labels[gm >= 128] = 1
    labels[wm >= 128] = 2
    for i in range(8):
        sl = slice(5 * i, 5 * i + 5)
        _save_nifti(root / "imagesTr" / f"mni_{i:03d}_0000.nii.gz", data[:, :, sl], t1)
        _save_nifti(root / "labelsTr" / f"mni_{i:03d}.nii.gz", labels[:, :, sl], t1)
    (root / "imagesTr" / "._mni_000_0000.nii.gz").write_bytes(b"macOS resource fork")  # must be ignored
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "gm": 1,
                                                   "wm": 2}, "file_ending": ".nii.gz", "numTraining": 8}))
    return root


# ------------------------------------------------------------------ layout + counts on real data
def test_layout_and_manifest(prepared: Path) -> None:
    rows = read_rows(prepared)
    assert (prepared / "summary.md").is_file() and not (prepared / "failures.txt").exists()
    assert set(rows[0]) >= {"file", "dataset", "case", "modality", "axis", "slice", "original_shape", "spacing_zyx",
                            "labels", "split"}
    assert {r["dataset"] for r in rows} == {"mni152", "nuclei2d"}
    for r in rows:
        img = np.load(prepared / "imgs" / r["file"])
        gt = np.load(prepared / "gts" / r["file"])
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and gt.shape == img.shape[:2]
        assert gt.dtype == np.uint8
        present = {int(v): int(c) for v, c in zip(*np.unique(gt, return_counts=True)) if v}
        assert present == parse_labels(r["labels"])
    files = {r["file"] for r in rows}
    assert files == {p.name for p in (prepared / "imgs").glob("*.npy")} == {p.name for p in (prepared / "gts").glob("*.npy")}
    mni = [r for r in rows if r["dataset"] == "mni152"]
    assert {r["original_shape"] for r in mni} == {f"{Z1 - Z0}x233x197"}
    assert {r["spacing_zyx"] for r in mni} == {"1x1x1"} and {r["axis"] for r in mni} == {"z"}
    assert {r["modality"] for r in mni} == {"MR"}
    # split by case: a case is entirely on one side; 2 cases -> exactly 1 validation case
    sides = {}
    for r in rows:
        sides.setdefault(r["case"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert sorted(s.pop() for s in sides.values()) == ["train", "val"]


def test_mni_counts_match_hand_computed_labels(prepared: Path, mni_crop: Path) -> None:
    gm = np.asarray(nib.load(str(mni_crop / "gm_prob.nii.gz")).dataobj).transpose(2, 1, 0)
    wm = np.asarray(nib.load(str(mni_crop / "wm_prob.nii.gz")).dataobj).transpose(2, 1, 0)
    labels = np.zeros(gm.shape, np.uint8)
    labels[gm >= 128] = 1
    labels[wm >= 128] = 2
    for label_id in (1, 2):  # 3D components under 100 voxels removed, 26-connectivity
        comp, _ = ndimage.label(labels == label_id, np.ones((3, 3, 3)))
        sizes = np.bincount(comp.ravel())
        labels[(sizes < 100)[comp] & (comp > 0)] = 0
    expected = {}
    for z in range(labels.shape[0]):
        ids, counts = np.unique(labels[z], return_counts=True)
        kept = {int(i): int(c) for i, c in zip(ids, counts) if i and c >= 20}
        if kept:
            expected[z] = kept
    got = {int(r["slice"]): parse_labels(r["labels"]) for r in read_rows(prepared) if r["dataset"] == "mni152"}
    assert got == expected
    assert len(got) == 40


def test_nuclei_counts_match_instance_map(prepared: Path, data_root: Path) -> None:
    lab = tifffile.imread(str(data_root / "nuclei2d" / "labels.tif"))
    ids, counts = np.unique(lab, return_counts=True)
    expected = {int(i): int(c) for i, c in zip(ids, counts) if i and c >= 20}
    (row,) = [r for r in read_rows(prepared) if r["dataset"] == "nuclei2d"]
    assert len(expected) == 125 and parse_labels(row["labels"]) == expected
    assert row["axis"] == "2d" and row["original_shape"] == "512x512" and row["modality"] == "Microscopy"


def test_normalized_slice_matches_hand_computation(prepared: Path, mni_crop: Path, data_root: Path) -> None:
    t1 = np.asarray(nib.load(str(mni_crop / "t1.nii.gz")).dataobj).transpose(2, 1, 0).astype(np.float64)
    lo, hi = np.percentile(t1[t1 != 0], [0.5, 99.5])  # over the whole volume's non-zero voxels
    z = 20
    expected = np.round((np.clip(t1[z], lo, hi) - lo) / (hi - lo) * 255)
    expected[t1[z] == 0] = 0
    got = np.load(prepared / "imgs" / f"mni152__t1_z{z:03d}.npy")
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 0], got[..., 2])

    raw = tifffile.imread(str(data_root / "nuclei2d" / "image.tif")).astype(np.float64)
    lo, hi = np.percentile(raw[raw != 0], [0.5, 99.5])
    expected = np.round((np.clip(raw, lo, hi) - lo) / (hi - lo) * 255)
    expected[raw == 0] = 0
    assert np.array_equal(np.load(prepared / "imgs" / "nuclei2d__image.npy")[..., 1], expected)


def test_summary_table(prepared: Path) -> None:
    text = (prepared / "summary.md").read_text()
    rows = read_rows(prepared)
    n_mr = sum(r["modality"] == "MR" for r in rows)
    assert f"| MR | 1 | 1 | {n_mr} | {100 * n_mr / len(rows):.1f}% |" in text
    assert f"| Microscopy | 1 | 1 | 1 | {100 / len(rows):.1f}% |" in text
    assert f"| **Total** | 2 | 2 | {len(rows)} | 100.0% |" in text


def test_flags_instead_of_spec(mni_crop: Path, data_root: Path, tmp_path: Path, prepared: Path) -> None:
    out = tmp_path / "out"
    assert run_cli([str(data_root / "nuclei2d"), "-o", str(out), "--images", "image.tif", "--labels", "labels.tif",
                    "--modality", "microscopy", "--name", "nuclei2d", "--workers", "1", "--no-progress"]) == 0
    assert (out / "imgs" / "nuclei2d__image.npy").read_bytes() == (prepared / "imgs" / "nuclei2d__image.npy").read_bytes()
    out2 = tmp_path / "out2"
    assert run_cli([str(mni_crop), "-o", str(out2), "--images", "t1.nii.gz", "--label", "1=gm_prob.nii.gz@128",
                    "--label", "2=wm_prob.nii.gz@128", "--modality", "MR", "--name", "mni152", "--no-progress"]) == 0
    for p in (out2 / "gts").glob("*.npy"):
        assert p.read_bytes() == (prepared / "gts" / p.name).read_bytes()


def test_axes_and_filters(data_root: Path, mni_crop: Path, tmp_path: Path) -> None:
    spec = DatasetSpec(root=mni_crop, images="t1.nii.gz", modality="MR", name="mni",
                       labels=[{"path": "gm_prob.nii.gz", "id": 1, "threshold": 128}])
    res = prep_dataset(spec, tmp_path / "axes", PrepConfig(axes=("z", "y", "x"), progress=False))
    rows = read_rows(tmp_path / "axes")
    assert res.ok and {r["axis"] for r in rows} == {"z", "y", "x"}
    shapes = {r["axis"]: np.load(tmp_path / "axes" / "imgs" / r["file"]).shape[:2] for r in rows}
    assert shapes == {"z": (233, 197), "y": (40, 197), "x": (40, 233)}
    # --min-pixels: nuclei under 300 px are dropped, exactly as counted on the instance map
    lab = tifffile.imread(str(data_root / "nuclei2d" / "labels.tif"))
    _, counts = np.unique(lab[lab > 0], return_counts=True)
    nuclei = DatasetSpec(root=data_root / "nuclei2d", images="image.tif", labels="labels.tif", modality="Microscopy")
    prep_dataset(nuclei, tmp_path / "minpix", PrepConfig(min_pixels=300, progress=False))
    (row,) = read_rows(tmp_path / "minpix")
    assert len(parse_labels(row["labels"])) == int((counts >= 300).sum()) < 125


def test_nnunet_layout_split_by_case(nnunet_root: Path, tmp_path: Path) -> None:
    found = discover(nnunet_root)
    assert len(found.cases) == 8 and not found.failures
    assert {c.modality for c in found.cases} == {"MR"} and found.cases[0].case_id == "mni_000"
    res = prep_dataset(nnunet_root, tmp_path / "out", PrepConfig(val_fraction=0.05, seed=3, progress=False))
    assert res.ok and res.cases == 8
    rows = read_rows(tmp_path / "out")
    by_case: Dict[str, set] = {}
    for r in rows:
        by_case.setdefault(r["case"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_case.values())
    assert sum(s == {"val"} for s in by_case.values()) == 1  # 5% of 8 rounds to 0 -> at least 1
    # same seed, same split; groups keep channels of one case together
    split = assign_split([("d", f"c{i}") for i in range(40)], 0.05, 7)
    assert split == assign_split([("d", f"c{i}") for i in reversed(range(40))], 0.05, 7)
    assert sum(v == "val" for v in split.values()) == 2
    assert assign_split([("d", "only")]) == {("d", "only"): "train"}


def test_challenge_npz_folder(prepared: Path, tmp_path: Path) -> None:
    src = tmp_path / "npz"
    src.mkdir()
    rows = read_rows(prepared)
    vol = np.stack([np.load(prepared / "imgs" / r["file"])[..., 0] for r in rows if r["dataset"] == "mni152"][:6])
    gts = np.stack([np.load(prepared / "gts" / r["file"]) for r in rows if r["dataset"] == "mni152"][:6])
    np.savez_compressed(src / "3DBox_MR_mni.npz", imgs=vol, gts=gts, spacing=np.array([1.0, 1.0, 1.0]))
    np.savez_compressed(src / "Microscopy_nuclei.npz", imgs=np.load(prepared / "imgs" / "nuclei2d__image.npy"),
                        gts=np.load(prepared / "gts" / "nuclei2d__image.npy"))
    res = prep_dataset(src, tmp_path / "out", PrepConfig(min_voxels=0, progress=False))
    assert res.ok, res.failures
    out_rows = read_rows(tmp_path / "out")
    assert {r["modality"] for r in out_rows} == {"MR", "Microscopy"}
    assert {r["normalization"] for r in out_rows} == {"precomputed-uint8"}
    first = next(r for r in out_rows if r["case"] == "3DBox_MR_mni" and r["slice"] == "0")
    assert np.array_equal(np.load(tmp_path / "out" / "imgs" / first["file"])[..., 0], vol[0])
    assert np.array_equal(np.load(tmp_path / "out" / "imgs" / "npz__Microscopy_nuclei.npy"),
                          np.load(prepared / "imgs" / "nuclei2d__image.npy"))


# ------------------------------------------------------------------ resume
def test_resume_after_crash_gives_identical_files(nnunet_root: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    prep_dataset(nnunet_root, clean, PrepConfig(progress=False))

    resumed = tmp_path / "resumed"
    done: List[str] = []

    def crash_after_three(key: str) -> None:
        done.append(key)
        if len(done) == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        prep_dataset(nnunet_root, resumed, PrepConfig(progress=False), on_case_done=crash_after_three)
    assert len(list((resumed / "records").glob("*.json"))) == 3 and not (resumed / "manifest.csv").exists()
    # what a kill in the middle of case 4 leaves: some of its slices and a temp file, no record
    part = next(p for p in (clean / "imgs").glob("*__mni_003_*.npy"))
    (resumed / "imgs" / part.name).write_bytes(part.read_bytes()[:100])
    (resumed / "imgs" / ".x.abc123.tmp.npy").write_bytes(b"partial")
    res = prep_dataset(nnunet_root, resumed, PrepConfig(progress=False))
    assert res.skipped == 3 and res.converted == 5
    assert tree_hashes(resumed) == tree_hashes(clean)


def test_resume_after_killed_process(nnunet_root: Path, tmp_path: Path) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    prep_dataset(nnunet_root, clean, PrepConfig(progress=False))
    code = ("import argparse, sys; from medsam_lite.cli import prep; p = argparse.ArgumentParser(); "
            "prep.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code, "prep", str(nnunet_root), "-o", str(killed), "--workers",
                             "1", "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not list((killed / "records").glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_cli([str(nnunet_root), "-o", str(killed), "--workers", "2", "--no-progress"]) == 0
    assert tree_hashes(killed) == tree_hashes(clean)


# ------------------------------------------------------------------ bad input
@pytest.fixture
def bad_cases(mni_crop: Path, data_root: Path, tmp_path: Path) -> Path:
    """A folder of real cases, most of them broken in one way; ``good`` is intact."""
    src = tmp_path / "src"
    src.mkdir()
    t1 = nib.load(str(mni_crop / "t1.nii.gz"))
    data = np.asarray(t1.dataobj)[:, :, :8]
    gm = (np.asarray(nib.load(str(mni_crop / "gm_prob.nii.gz")).dataobj)[:, :, :8] >= 128).astype(np.uint8)
    _save_nifti(src / "good_img.nii.gz", data, t1)
    _save_nifti(src / "good_lab.nii.gz", gm, t1)
    (src / "unreadable_img.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    _save_nifti(src / "unreadable_lab.nii.gz", gm, t1)
    _save_nifti(src / "shape_img.nii.gz", data, t1)
    _save_nifti(src / "shape_lab.nii.gz", gm[:, :-1], t1)
    _save_nifti(src / "spacing_img.nii.gz", data, t1)
    _save_nifti(src / "spacing_lab.nii.gz", gm, t1, zooms=(1.0, 1.0, 2.5))
    _save_nifti(src / "empty_img.nii.gz", data, t1)
    _save_nifti(src / "empty_lab.nii.gz", np.zeros_like(gm), t1)
    _save_nifti(src / "fourd_img.nii.gz", np.stack([data, data], axis=-1), t1)
    _save_nifti(src / "fourd_lab.nii.gz", gm, t1)
    # real CT with negative HU written as uint16: the classic overflow (-1000 HU reads as 64536)
    ct = nib.load(str(data_root / "ct_organs" / "ct.nii.gz")) if (data_root / "ct_organs").is_dir() else None
    if ct is not None:
        hu = np.asarray(ct.dataobj)[:40, :40, :6].astype(np.int64)
        organs = (np.asarray(nib.load(str(data_root / "ct_organs" / "labels.nii.gz")).dataobj)[:40, :40, :6] > 0)
        assert hu.min() < 0
        _save_nifti(src / "overflowct_img.nii.gz", (hu % 65536).astype(np.uint16), ct)
        lab = np.zeros(hu.shape, np.uint8)
        lab[:10, :10, :] = 1
        lab[organs] = 1
        _save_nifti(src / "overflowct_lab.nii.gz", lab, ct)
    return src


def test_bad_inputs_named_and_others_finish(bad_cases: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"""
datasets:
  - {{name: mr, root: {bad_cases}, images: "[!o]*_img.nii.gz", image_suffix: _img, labels: "{{case}}_lab.nii.gz",
      modality: MR}}
  - {{name: ct, root: {bad_cases}, images: "overflowct_img.nii.gz", image_suffix: _img,
      labels: "{{case}}_lab.nii.gz", modality: CT, window: abdomen}}
""")
    rc = run_cli([str(spec), "-o", str(out), "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    expected = {
        "unreadable": "cannot read", "shape": "does not match image shape", "spacing": "does not match image spacing",
        "empty": "label map is empty", "fourd": "3D volume", "overflowct": "outside the plausible range",
    }
    if not (bad_cases / "overflowct_img.nii.gz").exists():
        expected.pop("overflowct")
    failures = (out / "failures.txt").read_text().splitlines()
    for case, problem in expected.items():
        lines = [line for line in failures if f"__{case}: " in line]
        assert len(lines) == 1 and problem in lines[0] and f"{case}_" in lines[0], (case, failures)
        (err_line,) = [line for line in err.splitlines() if f"__{case}: " in line]
        assert problem in err_line
    rows = read_rows(out)
    assert {r["case"] for r in rows} == {"good"}  # the good case finished, and only it
    assert "Failed cases" in (out / "summary.md").read_text()


def test_output_is_a_file_one_line_exit_2(data_root: Path, tmp_path: Path, capsys) -> None:
    """``prep -o FILE``: one line naming the file, exit 2, before any work (the file and its folder unchanged)."""
    from medsam_lite.cli.main import main

    target = tmp_path / "out.txt"
    target.write_text("keep me")
    code = main(["prep", str(data_root / "nuclei2d"), "-o", str(target), "--images", "image.tif", "--labels",
                 "labels.tif", "--modality", "Microscopy", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(target) in err and "not a folder" in err
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(InputError, match="not a folder"):
        prep_dataset(data_root / "nuclei2d", target, PrepConfig(progress=False))


def test_bad_configuration(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown modality 'Ultrasoundish'"):
        prep_dataset(DatasetSpec(root=data_root / "nuclei2d", images="image.tif", labels="labels.tif",
                                 modality="Ultrasoundish"), tmp_path / "o", PrepConfig(progress=False))
    with pytest.raises(InputError, match="no modality"):
        prep_dataset(DatasetSpec(root=data_root / "nuclei2d", images="image.tif", labels="labels.tif"), tmp_path / "o", PrepConfig(progress=False))
    with pytest.raises(InputError, match="cannot detect the layout"):
        discover(data_root / "nuclei2d")
    with pytest.raises(InputError, match="no image matches"):
        discover(data_root / "nuclei2d", Overrides(images="*.nrrd", labels="x", modality="CT"))


# ------------------------------------------------------------------ normalization table
def test_normalization_table() -> None:
    assert normalize.CT_WINDOWS == {"abdomen": (40.0, 400.0), "chest": (-600.0, 1500.0), "brain": (40.0, 80.0),
                                    "bone": (400.0, 1800.0)}
    assert normalize.parse_window("bone") == (400.0, 1800.0)
    assert normalize.parse_window("50,350") == (50.0, 350.0)
    assert normalize.parse_window("L-500,W1400") == (-500.0, 1400.0)
    with pytest.raises(InputError):
        normalize.parse_window("lungs")
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert np.allclose(normalize.normalize_to_unit(hu, "CT", (40, 400)), [0, 0, 0.5, 1, 1])
    assert np.allclose(normalize.normalize_to_unit(hu, "ct"), [0, 0, 0.5, 1, 1])  # table default: abdomen
    assert normalize.describe("CT", None, False) == "ct[L40,W400]"
    with pytest.raises(InputError, match="plausible range"):
        normalize.normalize_to_unit(np.array([-32768.0, 0.0]), "CT")
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    assert np.array_equal(normalize.unit_to_uint8(normalize.normalize_to_unit(rgb, "Fundus", is_rgb=True)), rgb)
    assert normalize.canonical_modality("T2") == "MR" and normalize.canonical_modality("X-Ray") == "XRay"
    with pytest.raises(InputError, match="unknown modality"):
        normalize.canonical_modality("photo")
    grey = np.arange(0.0, 1001.0)  # non-zero values 1..1000: percentiles 5.995 and 995.005
    out = normalize.normalize_to_unit(grey, "PET")
    lo, hi = np.percentile(grey[1:], [0.5, 99.5])
    assert out[0] == 0.0 and out[5] == 0.0 and out[1000] == 1.0 and np.isclose(out[500], (500 - lo) / (hi - lo))


# ------------------------------------------------------------------ more formats and edge cases
def test_nrrd_lesion_and_image_only(data_root: Path, mni_crop: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    if not (data_root / "lesions" / "breast1_image.nrrd").exists():
        pytest.skip("lesions not present")
    lesion = DatasetSpec(root=data_root / "lesions", images="breast1_image.nrrd", image_suffix="_image",
                         labels="{case}_label.nrrd", modality="MR", name="lesions")
    images = DatasetSpec(root=mni_crop, images="t1.nii.gz", modality="MR", name="mni_images")
    res = prep_dataset([lesion, images], tmp_path / "out", PrepConfig(progress=False))
    assert res.ok, res.failures
    rows = read_rows(tmp_path / "out")
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(data_root / "lesions" / "breast1_label.nrrd")))
    expected = {z: int(label[z].sum()) for z in range(label.shape[0]) if label[z].sum() >= 20}
    got = {int(r["slice"]): parse_labels(r["labels"]) for r in rows if r["dataset"] == "lesions"}
    assert got == {z: {1: c} for z, c in expected.items()} and label.sum() == 143
    img_rows = [r for r in rows if r["dataset"] == "mni_images"]
    assert len(img_rows) == Z1 - Z0 and all(not r["labels"] for r in img_rows)  # image-only: every non-blank slice
    assert not any((tmp_path / "out" / "gts" / r["file"]).exists() for r in img_rows)


@pytest.mark.slow  # SimpleITK/GDCM needs 10-15 s for this 20-file series on the 2-core test machine
def test_dicom_series_with_nrrd_label_and_image_only(data_root: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    series = data_root / "unlabeled" / "mr_brain_pd_series"
    if not series.is_dir():
        pytest.skip("mr_brain_pd_series not present")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image)
    label = sitk.GetImageFromArray((array > np.percentile(array, 90)).astype(np.uint8))  # bright tissue
    label.CopyInformation(image)
    sitk.WriteImage(label, str(tmp_path / "mr_brain_pd_series_label.nrrd"))
    labeled = DatasetSpec(root=series.parent, images="mr_brain_pd_series", modality="PD", name="pd",
                          labels=str(tmp_path / "{case}_label.nrrd"))
    unlabeled = DatasetSpec(root=series.parent, images="mr_brain_pd_series", modality="MR", name="pd_images")
    res = prep_dataset([labeled, unlabeled], tmp_path / "out", PrepConfig(progress=False))
    assert res.ok, res.failures
    rows = read_rows(tmp_path / "out")
    lab_rows = [r for r in rows if r["dataset"] == "pd"]
    img_rows = [r for r in rows if r["dataset"] == "pd_images"]
    assert lab_rows and all(r["labels"] for r in lab_rows) and all(not r["labels"] for r in img_rows)
    assert {r["original_shape"] for r in rows} == {"x".join(map(str, array.shape))}
    sx, sy, sz = image.GetSpacing()
    assert lab_rows[0]["spacing_zyx"] == f"{sz:g}x{sy:g}x{sx:g}"
    assert len(img_rows) == sum(int(s.min() != s.max()) for s in array)  # image-only: non-constant slices
    assert not any((tmp_path / "out" / "gts" / r["file"]).exists() for r in img_rows)


def test_rerun_with_new_settings_and_edge_cases(data_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    lab = tifffile.imread(str(data_root / "nuclei2d" / "labels.tif")).astype(np.uint16)
    tifffile.imwrite(str(src / "image.tif"), tifffile.imread(str(data_root / "nuclei2d" / "image.tif")))
    tifffile.imwrite(str(src / "labels.tif"), np.where(lab > 0, lab + 1000, 0).astype(np.uint16))  # ids > 255
    spec = DatasetSpec(root=src, images="image.tif", labels="labels.tif", modality="Microscopy", name="n")
    out = tmp_path / "out"
    first = prep_dataset(spec, out, PrepConfig(progress=False))
    gt = np.load(out / "gts" / "n__image.npy")
    assert first.converted == 1 and gt.dtype == np.uint16 and gt.max() > 1000
    again = prep_dataset(spec, out, PrepConfig(progress=False))
    assert again.skipped == 1 and again.converted == 0
    changed = prep_dataset(spec, out, PrepConfig(min_pixels=300, progress=False))  # new settings: case redone
    (row,) = read_rows(out)
    assert changed.converted == 1 and all(c >= 300 for c in parse_labels(row["labels"]).values())
    none_left = prep_dataset(spec, out, PrepConfig(min_pixels=100000, progress=False))
    assert none_left.ok and none_left.empty_cases == ["n__image"] and read_rows(out) == []
    assert not list((out / "imgs").glob("*.npy"))  # stale slice removed with its record
    assert "no slice left" in (out / "summary.md").read_text()


def test_uint8_path_equals_unit_path(mni_crop: Path) -> None:
    t1 = np.asarray(nib.load(str(mni_crop / "t1.nii.gz")).dataobj).transpose(2, 1, 0)
    assert np.array_equal(normalize.normalize_to_uint8(t1, "MR"),
                          normalize.unit_to_uint8(normalize.normalize_to_unit(t1, "MR")))
    hu = t1.astype(np.int16) * 8 - 1024
    assert np.array_equal(normalize.normalize_to_uint8(hu, "CT", (40, 400)),
                          normalize.unit_to_uint8(normalize.normalize_to_unit(hu, "CT", (40, 400))))


def test_discovery_case_ids_label_pairing_and_window_rules(tmp_path: Path) -> None:
    """Pairing rules shared by spec and npz discovery: stems that repeat in two folders become folder-prefixed case
    ids (in both), a label glob pairs by case id and then by folder, a template names the label per case, a missing
    label fails that case only, and a CT window is refused for another modality."""
    from medsam_lite.prep.layouts import discover_npz, discover_spec

    for name in ("a/case1.nii.gz", "b/case1.nii.gz", "a/case1_seg.nii.gz", "b/case1_seg.nii.gz", "c/case2.nii.gz",
                 "f/p.npz", "g/p.npz", "h/q.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    glob = discover_spec(DatasetSpec(root=tmp_path, images="*/case*[0-9].nii.gz", labels="*/case*_seg.nii.gz",
                                     label_suffix="_seg", modality="CT", name="d"))
    assert [(c.case_id, c.labels[0].path.relative_to(tmp_path).as_posix()) for c in glob.cases] == [
        ("a_case1", "a/case1_seg.nii.gz"), ("b_case1", "b/case1_seg.nii.gz")]
    assert [f.case for f in glob.failures] == ["d__c_case2"] and "no label file matches" in glob.failures[0].message
    template = discover_spec(DatasetSpec(root=tmp_path, images="c/*.nii.gz", labels="{dir}/{case}_seg.nii.gz",
                                         modality="MR", name="d"))
    assert not template.cases and "c/case2_seg.nii.gz not found" in template.failures[0].message
    npz = discover_npz(tmp_path, Overrides(modality="CT"))
    assert [c.case_id for c in npz.cases] == ["f_p", "g_p", "h_q"]  # p repeats: every id gets its folder
    assert [c.case_id for c in discover_npz(tmp_path / "f", Overrides(modality="CT")).cases] == ["p"]
    with pytest.raises(InputError, match="a CT window was given for modality MR"):
        discover_spec(DatasetSpec(root=tmp_path, images="c/*.nii.gz", modality="MR", window="chest"))
