"""bench.fidelity: the student-vs-teacher agreement measure and the held-out list (distill.fidelity)."""
from __future__ import annotations

import numpy as np
import pytest

from medsam_lite.bench.fidelity import (HELD_OUT, add_noise, agreement, ground_truth, load_held_out, mask_iou, random_boxes,
                              stable_rows, summarize, write_report)


def test_random_boxes_are_fixed_and_inside() -> None:
    a, b = random_boxes((120, 45), 8, seed=3), random_boxes((120, 45), 8, seed=3)
    assert np.array_equal(a, b) and a.shape == (8, 4)
    assert (a[:, 0] >= 0).all() and (a[:, 2] <= 44).all() and (a[:, 3] <= 119).all()
    assert (a[:, 2] > a[:, 0]).all() and (a[:, 3] > a[:, 1]).all()


def test_mask_iou() -> None:
    a = np.zeros((4, 4), bool)
    assert mask_iou(a, a) == 1.0
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)


def test_held_out_excluded_from_recipe() -> None:
    """No held-out shared-data file may appear in the distillation prep specs."""
    from pathlib import Path

    recipe = (Path(__file__).parents[1] / "scripts" / "recipe")
    text = (recipe / "prep_volumes.yaml").read_text() + (recipe / "prep_images.yaml").read_text()
    for item in HELD_OUT:
        if item.path.startswith("pydicom:"):
            continue
        folder, name = item.path.split("/")
        if folder in ("lesions", "unlabeled"):  # folders shared with training files: the file is out
            assert name not in text, item
        else:  # the whole folder is out
            assert f"shared/data/{folder}\n" not in text, item


def test_agreement_of_a_model_with_itself(shared_data, fast_checkpoint, tmp_path) -> None:
    from medsam_lite.checkpoint import load_model
    from medsam_lite.predictor import Predictor

    images = [x for x in load_held_out(shared_data) if x[0].name in ("breast1", "pydicom_mr_small")]
    assert len(images) == 4
    model = Predictor(load_model(str(fast_checkpoint)))
    rows = agreement(model, model, images, n_boxes=3)
    summary = summarize(rows)
    assert summary["all"]["boxes"] == 12 and summary["all"]["mean_iou"] == 1.0
    write_report({"student": "s", "teacher": "t", "n_boxes": 3, "seed": 0, "summary": summary,
                  "ground_truth": {"nuclei2d": {"teacher": 0.7, "student": 0.6}}, "images": rows}, tmp_path)
    assert summary["all"]["sem_iou"] == 0.0
    assert "| MR | 4 | 12 | 1.000 +- 0.000 |" in (tmp_path / "fidelity.md").read_text()

    noisy = add_noise(images, 2.0)
    assert all(n[2].dtype == np.uint8 and n[2].shape == i[2].shape for n, i in zip(noisy, images))
    assert any(not np.array_equal(n[2], i[2]) for n, i in zip(noisy, images))
    same = agreement(model, model, images, n_boxes=3, student_images=add_noise(images, 0.0))
    assert summarize(same)["all"]["mean_iou"] == 1.0
    write_report({"student": "s", "teacher": "t", "n_boxes": 3, "seed": 0, "summary": summary, "noise_sigma": 2.0,
                  "noise_floor": summarize(same), "stable_iou": 0.9, "stable": summarize(stable_rows(rows, same)),
                  "ground_truth": {}, "images": rows}, tmp_path)
    assert "| MR | 4 | 12 | 1.000 +- 0.000 | 1.00 | 1.000 | 1.00 | 12 | 1.000 +- 0.000 |" in \
        (tmp_path / "fidelity.md").read_text()


def test_stable_rows_keep_boxes_the_teacher_repeats() -> None:
    rows = [{"modality": "CT", "iou": [0.2, 0.8, 0.5]}, {"modality": "MR", "iou": [0.4]}]
    noisy = [{"modality": "CT", "iou": [0.95, 0.3, 0.9]}, {"modality": "MR", "iou": [0.1]}]
    kept = stable_rows(rows, noisy)
    assert kept == [{"modality": "CT", "iou": [0.2, 0.5]}]
    summary = summarize(kept)
    assert summary["all"]["boxes"] == 2 and summary["all"]["mean_iou"] == pytest.approx(0.35)
    assert summary["all"]["sem_iou"] == pytest.approx(0.15 / np.sqrt(2))


def test_join_logs_of_stages(tmp_path) -> None:
    from scripts.recipe.join_logs import main as join_main

    header = "epoch,train_loss,val_loss,lr,seconds,images_per_s\n"
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "log.csv").write_text(header + "1,0.5,0.3,0.005,10,2\n2,0.1,0.05,0.005,10,2\n")
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "log.csv").write_text(header + "1,0.04,,0.001,9,2.2\n")
    assert join_main([str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", str(tmp_path / "out")]) == 0
    lines = (tmp_path / "out" / "log.csv").read_text().splitlines()
    assert lines[0] == "stage," + header.strip()
    assert [line.split(",")[:3] for line in lines[1:]] == [["1", "1", "0.5"], ["1", "2", "0.1"], ["2", "3", "0.04"]]
    assert lines[3].split(",")[3] == "" and (tmp_path / "out" / "loss.png").stat().st_size > 0
    with pytest.raises(SystemExit) as err:
        join_main([str(tmp_path / "missing"), "-o", str(tmp_path / "out2")])
    assert err.value.code == 2


def test_error_scaling_blend_ends(shared_data, fast_checkpoint, tmp_path) -> None:
    """alpha 0 reproduces the teacher (IoU 1, MSE 0); alpha 1 is the student itself (its fidelity IoU)."""
    import torch

    from scripts.recipe.error_scaling import error_scaling, write_report as write_scaling
    from medsam_lite.checkpoint import load_model
    from medsam_lite.model import build_medsam
    from medsam_lite.predictor import Predictor

    images = [x for x in load_held_out(shared_data) if x[0].name == "pydicom_mr_small"]
    teacher_model = load_model(str(fast_checkpoint))
    torch.manual_seed(7)
    other = build_medsam("repvit_m0_6").eval()
    other.prompt_encoder, other.mask_decoder = teacher_model.prompt_encoder, teacher_model.mask_decoder
    student, teacher = Predictor(other, backend="torch"), Predictor(teacher_model, backend="torch")
    result = error_scaling(student, teacher, images, alphas=(0.0, 1.0), n_boxes=4)
    zero, one = result["rows"]
    assert result["boxes"] == 4 and zero["mse"] == 0.0 and zero["iou_blend"] == 1.0 and one["mse"] > 0
    assert one["iou_blend"] == pytest.approx(summarize(agreement(student, teacher, images, n_boxes=4))["all"]["mean_iou"])
    assert result["student_mse_by_modality"] == {"MR": {"images": 1, "mse": pytest.approx(one["mse"])}}
    assert [r["image"] for r in result["student_mse_by_image"]] == [images[0][1]]
    write_scaling(result, tmp_path, "s", "t")
    text = (tmp_path / "error_scaling.md").read_text()
    assert "| 0.00 | 0.000000 | 0.00 | 1.000 |" in text and f"| MR | 1 | {one['mse']:.5f} |" in text


def test_predictor_set_embedding_equals_set_image(fast_checkpoint) -> None:
    from medsam_lite.checkpoint import load_model
    from medsam_lite.predictor import Predictor

    image = (np.arange(90 * 70) % 251).reshape(90, 70).astype(np.uint8)
    boxes = np.array([[5, 8, 40, 60]], dtype=np.float32)
    a, b = Predictor(load_model(str(fast_checkpoint))), Predictor(load_model(str(fast_checkpoint)))
    a.set_image(image)
    b.set_embedding(a.embedding, image.shape)
    assert np.array_equal(a.predict(boxes), b.predict(boxes))
    with pytest.raises(ValueError, match="1, 256, 64, 64"):
        b.set_embedding(a.embedding[0], image.shape)


def test_object_boxes_dsc_and_agreement(shared_data, fast_checkpoint, tmp_path) -> None:
    from medsam_lite.bench.fidelity import object_cases
    from medsam_lite.checkpoint import load_model
    from medsam_lite.metrics import dice
    from medsam_lite.predictor import Predictor
    from medsam_lite.transforms import box_from_mask

    cases = object_cases(shared_data)
    assert set(cases) == {"nuclei2d", "mni152_gm_wm", "mr_organs", "breast1_lesion"}
    assert sum(len(m) for _, m in cases["nuclei2d"]) == 125 and len(cases["breast1_lesion"]) == 3
    assert all(m.sum() >= 20 for _, masks in cases["mr_organs"] for m in masks)
    model = Predictor(load_model(str(fast_checkpoint)))
    lesion = {"breast1_lesion": cases["breast1_lesion"]}
    row = ground_truth({"teacher": model, "student": model}, shared_data, cases=lesion)["breast1_lesion"]
    assert row["boxes"] == 3 and row["agreement"] == 1.0 and row["teacher"] == row["student"]
    scores = []
    for image, masks in cases["breast1_lesion"]:  # the DSC is the plain mean over the lesion boxes
        model.set_image(image)
        pred = model.predict(np.array([box_from_mask(masks[0], shift=0)], dtype=np.float32), label_map=False)[0]
        scores.append(dice(pred, masks[0]))
    assert row["teacher"] == pytest.approx(float(np.mean(scores)))


def test_committed_fidelity_report_reproduces(shared_data, lite_medsam) -> None:
    """docs/distill/fidelity.json is the shipped student's: its first held-out image (nuclei2d, 8 boxes)
    and the breast1 lesion boxes give the same numbers when recomputed now."""
    import json
    from pathlib import Path

    from medsam_lite.bench.fidelity import object_cases
    from medsam_lite.checkpoint import load_model
    from medsam_lite.predictor import Predictor

    report = json.loads((Path(__file__).parents[1] / "docs" / "distill" / "fidelity.json").read_text())
    assert report["student"] == "repvit_m0_6_lite" and report["teacher"] == "lite_medsam"
    student, teacher = Predictor(load_model("repvit_m0_6_lite"), backend="torch"), Predictor(lite_medsam, backend="torch")
    images = load_held_out(shared_data, HELD_OUT[:1])
    rows = agreement(student, teacher, images, n_boxes=report["n_boxes"], seed=report["seed"])
    committed = report["images"][0]
    assert rows[0]["image"] == committed["image"]
    # 1e-4, not 1e-6: the report was computed on an Intel Xeon; on an AMD EPYC one of the 8 IoUs differs by
    # 2.5e-5 (a few pixels of one mask; oneDNN picks other kernels per CPU). Any pipeline change moves far more.
    np.testing.assert_allclose(rows[0]["iou"], committed["iou"], atol=1e-4)
    lesion = {"breast1_lesion": object_cases(shared_data)["breast1_lesion"]}
    row = ground_truth({"teacher": teacher, "student": student}, shared_data, cases=lesion)["breast1_lesion"]
    for key in ("teacher", "student", "agreement"):
        assert row[key] == pytest.approx(report["ground_truth"]["breast1_lesion"][key], abs=1e-4)


def test_volume_box_starts_on_the_middle_slice() -> None:
    """x / y of the 3D box: the object's tight box on z_mid = int((z_max - z_min) / 2 + z_min); z: its extent;
    an empty middle slice falls back to the xy extent over all slices."""
    from medsam_lite.bench.fidelity import volume_box

    mask = np.zeros((9, 20, 30), bool)
    mask[2, 1:3, 1:3] = True  # z_min = 2, a small blob
    mask[4, 5:10, 6:20] = True  # z_mid = int((6 - 2) / 2 + 2) = 4
    mask[6, 0:19, 0:29] = True  # z_max = 6, large: must not widen the box
    assert volume_box(mask).tolist() == [6, 5, 2, 19, 9, 6]
    mask[4] = False
    assert volume_box(mask).tolist() == [0, 0, 2, 28, 18, 6]


def test_volume_cases_are_held_out_and_labelled(shared_data) -> None:
    """The 3D rows use whole held-out volumes with one box per labelled object (z extent = the object's),
    none of them a source of the distillation data list."""
    import csv
    from pathlib import Path

    from medsam_lite.bench.fidelity import volume_cases

    cases = volume_cases(shared_data)
    assert set(cases) == {"mr_organs_3d", "breast1_lesion_3d", "mni152_gm_wm_3d"}
    for name, case in cases.items():
        assert case.volume.dtype == np.uint8 and case.volume.ndim == 3, name
        assert len(case.objects) == len(case.boxes) > 0 and case.boxes.shape[1] == 6, name
        for obj, box in zip(case.objects, case.boxes):
            zs = np.nonzero(obj.any(axis=(1, 2)))[0]
            assert (box[2], box[5]) == (zs.min(), zs.max()), name
    assert len(cases["mni152_gm_wm_3d"].objects) == 2 and len(cases["breast1_lesion_3d"].objects) == 1
    listed = {row["dataset"] for row in csv.DictReader(open(Path(__file__).parents[1] / "docs/distill/data_list.csv"))}
    assert not listed & {"mr_organs", "breast1", "mni152", "nuclei2d"}
    assert {"ct_organs", "brain1"} <= listed  # why the bundled 3D examples are not in the 3D rows


def _teacher_like(perturb: float):
    """A fast real teacher: the shipped student ``repvit_m0_6_lite`` (trained, so boxes give real masks);
    ``perturb`` > 0 adds that relative Gaussian noise to every encoder weight."""
    import torch

    from medsam_lite.checkpoint import load_model

    model = load_model("repvit_m0_6_lite")
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.image_encoder.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb * (p.abs().mean() + 1e-8))
    return model


def test_side_by_side_report_identical_and_perturbed_students(shared_data, tmp_path) -> None:
    """Two students in one run: one equal to the teacher gets IoU 1 and DSC difference 0 on every row (2D
    object boxes, 3D propagation, random and stable boxes); a perturbed one gets less; both have encoder ms
    on the same backend and the headline table names both."""
    import json

    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.bench.fidelity import FidelityConfig, TimingConfig, fidelity_report, object_cases

    teacher = save_checkpoint(_teacher_like(0.0), tmp_path / "teacher.pth", "repvit_m0_6_fpn")
    same = save_checkpoint(_teacher_like(0.0), tmp_path / "same.pth", "repvit_m0_6_fpn")
    other = save_checkpoint(_teacher_like(0.3), tmp_path / "perturbed.pth", "repvit_m0_6_fpn")
    images = [x for x in load_held_out(shared_data) if x[0].name == "pydicom_mr_small"]
    objects = {"breast1_lesion": object_cases(shared_data)["breast1_lesion"]}
    config = FidelityConfig(n_boxes=4, volume_names=("breast1_lesion_3d",),
                            timing=TimingConfig("torch", threads=1, repeats=1, warmup=0))
    result = fidelity_report([str(same), str(other)], str(teacher), shared_data, tmp_path / "out", config,
                             objects=objects, images=images)
    a, b = result["per_student"][str(same)], result["per_student"][str(other)]
    for key in ("ground_truth", "ground_truth_3d"):
        row_a, row_b = a[key]["breast1_lesion" + ("_3d" if key.endswith("3d") else "")], \
            b[key]["breast1_lesion" + ("_3d" if key.endswith("3d") else "")]
        assert row_a["teacher"] > 0.05, "the fast teacher must segment something for the test to mean anything"
        assert row_a["agreement"] == 1.0 and row_a["student"] == row_a["teacher"], key
        assert row_b["agreement"] < 1.0 and row_b["student"] != row_b["teacher"], key
    assert a["summary"]["all"]["mean_iou"] == 1.0 and b["summary"]["all"]["mean_iou"] < 1.0
    assert all(v["mean_iou"] == 1.0 for v in a["stable"].values())
    assert result["teacher_ms"] > 0 and a["encoder_ms"] > 0 and b["encoder_ms"] > 0
    assert "summary" not in result  # several students: no single-student top-level rows
    text = (tmp_path / "out" / "fidelity.md").read_text()
    assert f"`{same}`" in text and f"`{other}`" in text
    gt3 = a["ground_truth_3d"]["breast1_lesion_3d"]
    assert f"| GT DSC, 3D propagation: breast1_lesion_3d | MR | 1 | {gt3['teacher']:.4f} | {gt3['teacher']:.4f} (+0.0000)" in text
    assert "| encoder ms (torch fp32, 1 threads, median of 1)" in text
    assert json.loads((tmp_path / "out" / "fidelity.json").read_text())["students"] == [str(same), str(other)]


def test_single_student_report_keeps_the_flat_rows(shared_data, tmp_path) -> None:
    """One student: its rows also sit at the top level (the committed report's layout) and the markdown has
    the detail tables including the 3D one; a missing shared folder is one InputError."""
    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.bench.fidelity import FidelityConfig, fidelity_report
    from medsam_lite.cli.main import main
    from medsam_lite.errors import InputError

    teacher = save_checkpoint(_teacher_like(0.0), tmp_path / "teacher.pth", "repvit_m0_6_fpn")
    images = [x for x in load_held_out(shared_data) if x[0].name == "pydicom_mr_small"]
    config = FidelityConfig(n_boxes=2, volume_names=("breast1_lesion_3d",), timing=None)
    result = fidelity_report(str(teacher), str(teacher), shared_data, tmp_path / "out", config, objects={},
                             images=images)
    assert result["student"] == str(teacher) and result["summary"]["all"]["mean_iou"] == 1.0
    assert result["ground_truth_3d"]["breast1_lesion_3d"]["agreement"] == 1.0
    text = (tmp_path / "out" / "fidelity.md").read_text()
    assert "| breast1_lesion_3d | MR | 1 |" in text and "encoder ms" not in text
    with pytest.raises(InputError, match="nuclei2d"):
        fidelity_report("x", "y", tmp_path, None, config)
    code = main(["benchmark", "fidelity", "--student", "a", "--shared", str(tmp_path), "--timing-backend", "none"])
    assert code == 2  # one line on stderr (the CLI's exit code for bad input), no traceback
