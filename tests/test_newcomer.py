"""Issue 31, "a newcomer's first day": the Python API's intensity mapping, evaluate on NIfTI files, named
objects end to end, --version, the README's links / options / runnable Python blocks, the overlay's slice."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from medsam_lite.cli.main import build_parser, main
from medsam_lite.errors import InputError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SLAB = slice(88, 93)  # 5 axial slices of ct_organs holding spleen (1) and liver (5)
NAMED = {1: "spleen", 5: "liver"}


def _box(labels_xyz: np.ndarray, value: int) -> list:
    idx = np.argwhere(labels_xyz == value)
    (x0, y0, z0), (x1, y1, z1) = idx.min(0), idx.max(0)
    return [int(x0), int(y0), int(z0), int(x1), int(y1), int(z1)]


@pytest.fixture(scope="module")
def ct_run(shared_data, tmp_path_factory):
    """A real CT slab (raw int16 HU NIfTI, its labels and names), segmented by the CLI from a JSON of named
    boxes with --modality CT on the eager reference backend."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("ct")
    (root / "img").mkdir()
    (root / "gt").mkdir()
    ct = nib.load(str(shared_data / "ct_organs" / "ct.nii.gz")).slicer[:, :, SLAB]
    lab = nib.load(str(shared_data / "ct_organs" / "labels.nii.gz")).slicer[:, :, SLAB]
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj).astype(np.int16), ct.affine), str(root / "img" / "ct.nii.gz"))
    nib.save(lab, str(root / "gt" / "labels.nii.gz"))
    (root / "gt" / "label_names.json").write_bytes((shared_data / "ct_organs" / "label_names.json").read_bytes())
    labels_xyz = np.asarray(lab.dataobj)
    objects = [{"box": _box(labels_xyz, v), "name": n, "color": "#ff8800" if v == 1 else None}
               for v, n in NAMED.items()]
    boxes_json = root / "boxes.json"
    boxes_json.write_text(json.dumps({"boxes": objects}))
    out = root / "out"
    code = main(["segment", str(root / "img" / "ct.nii.gz"), "-o", str(out), "--boxes", str(boxes_json),
                 "--modality", "CT", "--backend", "torch", "--no-progress", "--overlay", str(root / "ov.png")])
    assert code == 0
    return root, objects


def test_predictor_modality_ct_gives_the_cli_masks_on_raw_hu(ct_run) -> None:
    import nibabel as nib

    from medsam_lite.imageio import read_case
    from medsam_lite.predictor import Predictor

    root, objects = ct_run
    case = read_case(root / "img" / "ct.nii.gz")
    assert case.array.dtype == np.int16 and case.array.min() < -500  # raw HU, as a user passes it
    boxes = np.array([o["box"] for o in objects], dtype=np.float64)
    cli = np.asarray(nib.load(str(root / "out" / "ct_mask.nii.gz")).dataobj).transpose(2, 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a modality given: no warning
        got = Predictor(backend="torch", modality="CT").predict_volume(case.array, boxes, progress=False)
    assert np.array_equal(got, cli) and set(np.unique(got)) == {0, 1, 2}
    with pytest.warns(UserWarning, match="give Predictor\\(modality=") as caught:
        raw = Predictor(backend="torch").predict_volume(case.array[:, :, :], boxes[:1] * [1, 1, 0, 1, 1, 0]
                                                       + [0, 0, 2, 0, 0, 2], progress=False)
    assert len([w for w in caught if "modality" in str(w.message)]) == 1 and raw.shape == case.array.shape
    with pytest.raises(InputError, match="CT only"):
        Predictor(backend="torch", modality="MR", window="40,400")


def test_named_boxes_then_evaluate_on_nifti_equals_metrics_on_arrays(ct_run) -> None:
    import csv

    import nibabel as nib

    from medsam_lite.metrics import dice

    root, objects = ct_run
    table = json.loads((root / "out" / "ct.labels.json").read_text())
    assert table == {"1": {"name": "spleen", "color": "#ff8800"},
                     "2": {"name": "liver", "color": table["2"]["color"]}} and table["2"]["color"].startswith("#")
    code = main(["evaluate", "--pred", str(root / "out" / "ct_mask.nii.gz"), "--gt", str(root / "gt" / "labels.nii.gz"),
                 "--out", str(root / "report")])
    assert code == 0
    rows = {r["name"]: r for r in csv.DictReader(open(root / "report" / "per_label.csv"))}
    assert sorted(rows) == ["liver", "spleen"]
    pred = np.asarray(nib.load(str(root / "out" / "ct_mask.nii.gz")).dataobj)
    gt = np.asarray(nib.load(str(root / "gt" / "labels.nii.gz")).dataobj)
    for pred_value, (gt_value, name) in enumerate(NAMED.items(), start=1):
        expected = dice(pred == pred_value, gt == gt_value)
        assert 0.3 < expected <= 1 and float(rows[name]["dsc"]) == pytest.approx(expected, abs=1e-6)
        assert int(rows[name]["label"]) == gt_value
    # the same by an explicit --map, and by folder pairing (ct.nii.gz <-> ct_mask.nii.gz)
    (root / "gt2").mkdir()
    (root / "gt2" / "ct.nii.gz").write_bytes((root / "gt" / "labels.nii.gz").read_bytes())
    assert main(["evaluate", "--pred", str(root / "out"), "--gt", str(root / "gt2"), "--map", "1=1,2=5",
                 "--out", str(root / "report2")]) == 0
    rows2 = list(csv.DictReader(open(root / "report2" / "per_label.csv")))
    assert sorted((r["label"], r["dsc"]) for r in rows2) == sorted((r["label"], r["dsc"]) for r in rows.values())
    assert (root / "ov.png").is_file()


def test_evaluate_errors_state_the_naming_rule(tmp_path, capsys) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    vol = np.zeros((4, 5, 6), np.uint8)
    vol[1:3, 1:3, 1:3] = 1
    np.savez(gt / "CT_case.npz", gts=vol)  # a volume without the '3D' prefix
    np.savez(pred / "CT_case.npz", segs=vol)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "r")]) == 1
    assert "a name starting with '3D' is a volume" in capsys.readouterr().err
    import nibabel as nib

    gt2, pred2 = tmp_path / "gt2", tmp_path / "pred2"
    gt2.mkdir()
    pred2.mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(gt2 / "a.nii.gz"))
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(pred2 / "b_mask.nii.gz"))
    assert main(["evaluate", "--pred", str(pred2), "--gt", str(gt2), "--out", str(tmp_path / "r2")]) == 2
    assert "<stem>_mask.<ext>" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0])), str(pred2 / "a_mask.nii.gz"))
    assert main(["evaluate", "--pred", str(pred2), "--gt", str(gt2), "--out", str(tmp_path / "r3")]) == 1
    assert "does not match the ground truth's" in capsys.readouterr().err  # another grid: a failed case
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(pred2 / "a_mask.nii.gz"))
    assert main(["evaluate", "--pred", str(pred2), "--gt", str(gt2), "--out", str(tmp_path / "r4")]) == 0
    assert "DSC 1.0000" in capsys.readouterr().out
    from medsam_lite.evaluate import parse_label_map

    assert parse_label_map("1=5, 2=7") == {1: 5, 2: 7}
    with pytest.raises(InputError, match="PRED=GT"):
        parse_label_map("1:2")


def test_box_objects_names_colours_and_errors(tmp_path) -> None:
    from medsam_lite.imageio import read_box_objects, read_boxes_file

    path = tmp_path / "b.json"
    path.write_text(json.dumps([{"box": [1, 2, 3, 4], "name": " kidney ", "color": [255, 0, 16]}, [5, 6, 7, 8]]))
    objects = read_box_objects(path)
    assert objects.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] == read_boxes_file(path).tolist()
    assert objects.names == ["kidney", None] and objects.colors == ["#ff0010", None]
    path.write_text(json.dumps([{"box": [1, 2, 3, 4], "color": "red"}]))
    with pytest.raises(InputError, match='color "red"'):
        read_box_objects(path)
    path.write_text(json.dumps([{"bbox": [1, 2, 3, 4]}]))
    with pytest.raises(InputError, match='needs "box"'):
        read_box_objects(path)


def test_dicom_seg_is_semiautomatic_with_the_given_names(tmp_path) -> None:
    import pydicom

    from medsam_lite.imageio import read_case, write_dicom_seg

    case = read_case(REPO / "tests" / "fixtures" / "ct_slab_series")
    mask = np.zeros(case.array.shape, np.uint8)
    mask[2:5, 30:50, 30:60] = 1
    mask[6:8, 60:70, 70:90] = 2
    seg = pydicom.dcmread(str(write_dicom_seg(case, mask, tmp_path / "x_seg.dcm", ["spleen", "liver"])))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["spleen", "liver"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}


def test_version_and_user_facing_help(capsys) -> None:
    from medsam_lite import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"medsam-lite {__version__}"
    text = build_parser().format_help()
    assert "segment" in text and "subcommand" not in text.split("positional")[0].lower()
    seg_help = " ".join(_subparser("segment").format_help().split())
    assert "nibabel" in seg_help and "i / j / k" in seg_help


def test_volume_overlay_says_which_slice(tmp_path) -> None:
    import cv2

    from medsam_lite.overlay import write_overlay, write_volume_overlay

    vol = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (6, 64, 1))
    labels = np.zeros(vol.shape, np.uint8)
    labels[4, 20:40, 20:40] = 1
    write_volume_overlay(tmp_path / "a.png", vol, labels, np.array([[18, 18, 3, 42, 42, 5]], float))
    write_overlay(tmp_path / "b.png", vol[4], labels[4], np.array([[18, 18, 42, 42]], float), [1])
    a, b = cv2.imread(str(tmp_path / "a.png")), cv2.imread(str(tmp_path / "b.png"))
    assert not np.array_equal(a[:12], b[:12]) and np.array_equal(a[30:], b[30:])  # a caption, the same slice


# ------------------------------------------------------------------ README drift
def _subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices[name]


def _options(name: str) -> set:
    """Each option of a subcommand by its long name, or its short one when that is how the README writes it
    (``-o`` for ``--output``)."""
    return {next((s for s in a.option_strings if s.startswith("--")), a.option_strings[0])
            for a in _subparser(name)._actions if a.option_strings and "--help" not in a.option_strings}


def _short_of(name: str) -> dict:
    return {long: short for a in _subparser(name)._actions for long in a.option_strings if long.startswith("--")
            for short in a.option_strings if not short.startswith("--")}


def _command_block() -> str:
    text = README.read_text()
    start = text.index("## Command line")
    block = text[start:].split("```", 2)[1]
    return block


@pytest.mark.parametrize("command", ["segment", "evaluate", "serve"])
def test_readme_command_block_lists_every_option_and_no_other(command) -> None:
    lines = [ln for ln in _command_block().splitlines()]
    text, own, inside = README.read_text(), [], False
    for ln in lines:  # a command's lines: its first line and the indented continuation lines
        if ln.startswith("medsam-lite "):
            inside = ln.startswith(f"medsam-lite {command} ")
        if inside:
            own.append(ln.split("#")[0])
    documented = set(re.findall(r"--[a-z][a-z0-9-]*", " ".join(own)))
    shorts = set(re.findall(r"(?<![\w-])-[a-zA-Z](?![\w-])", " ".join(own)))
    documented |= {long for long, short in _short_of(command).items() if short in shorts}
    parser_options = _options(command)
    tables = set(re.findall(r"`(--[a-z][a-z0-9-]*)", text))  # also documented in a table / text
    assert parser_options <= documented | tables, sorted(parser_options - documented - tables)
    assert documented <= parser_options, sorted(documented - parser_options)


def test_readme_command_block_names_every_subcommand() -> None:
    block = _command_block()
    for name in ("segment", "serve", "evaluate", "benchmark", "export", "prep", "train-teacher", "distill", "campaign"):
        assert f"medsam-lite {name}" in block, name
    for option in ("--series", "--dicom-series", "--label", "--no-progress", "--onnx-dir", "--map"):
        assert option in block, option


def test_readme_links_to_repository_files_exist() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    paths = [ln for ln in links if not re.match(r"[a-z]+://", ln)]
    code_paths = re.findall(r"`((?:medsam_lite|docs|tests|scripts|benchmarks|examples)/[A-Za-z0-9_./-]+)`", text)
    assert paths or code_paths
    missing = [p for p in paths + code_paths if not (REPO / p.rstrip("/")).exists() and "*" not in p]
    assert missing == [], missing


def _runnable_blocks() -> list:
    return re.findall(r"<!-- runnable -->\s*```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch) -> None:
    blocks = _runnable_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}  # one after the other, as a reader runs them
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code


def test_evaluate_dicom_seg_matches_segments_by_name(tmp_path) -> None:
    """Two DICOM-SEGs of the real CT slab series (ground truth: its spleen / liver labels; prediction: the same
    organs shifted by 2 px, listed in the other order, empty frames omitted differently): scored by segment
    label, with the DSC of the arrays themselves."""
    import csv

    from medsam_lite.evaluate import evaluate_dirs
    from medsam_lite.imageio import read_case, write_dicom_seg
    from medsam_lite.metrics import dice

    case = read_case(REPO / "tests" / "fixtures" / "ct_slab_series")
    with np.load(REPO / "tests" / "fixtures" / "ct_slab_labels.npz") as f:
        labels = f["labels"]
    gt = np.zeros(labels.shape, np.uint8)
    gt[labels == 1], gt[labels == 5] = 1, 2
    pred = np.zeros(labels.shape, np.uint8)
    shifted = np.roll(labels, 2, axis=2)
    pred[shifted == 5], pred[shifted == 1] = 1, 2  # liver first now
    pred[:2] = 0  # the prediction's first frames are empty (omitted), the ground truth's are not
    write_dicom_seg(case, gt, tmp_path / "gt_seg.dcm", ["spleen", "liver"])
    write_dicom_seg(case, pred, tmp_path / "pred_seg.dcm", ["Liver", "spleen"])
    result = evaluate_dirs(tmp_path / "pred_seg.dcm", tmp_path / "gt_seg.dcm", tmp_path / "report")
    assert result.ok, result.failures
    rows = {r["name"]: float(r["dsc"]) for r in csv.DictReader(open(tmp_path / "report" / "per_label.csv"))}
    assert rows == {"spleen": pytest.approx(dice(pred == 2, gt == 1), abs=1e-6),
                    "liver": pytest.approx(dice(pred == 1, gt == 2), abs=1e-6)}
    assert 0.3 < rows["liver"] < 1


@pytest.mark.parametrize("fixture, modality, window", [("ct_small.dcm", "CT", "chest"),
                                                       ("nuclei_crop_image.tif", "Microscopy", None)])
def test_predictor_2d_input_is_the_cli_model_input(fixture, modality, window) -> None:
    """set_image maps a raw 2D image exactly as segment's model_input does (one code path)."""
    from medsam_lite.imageio import read_case
    from medsam_lite.normalize import parse_window
    from medsam_lite.predictor import Predictor
    from medsam_lite.segment import model_input

    case = read_case(REPO / "tests" / "fixtures" / fixture)
    assert case.array.dtype != np.uint8
    p = Predictor(backend="torch", modality=modality, window=window)
    expected, _, _ = model_input(case, modality, parse_window(window))
    got = p._to_uint8(case.array, is_rgb=False)
    assert got.dtype == np.uint8 and np.array_equal(got, expected) and len(np.unique(got)) > 20
