"""Exports: one-file TorchScript predictor (loaded without medsam_lite), ONNX encoder/decoder + ORT backend.

Agreement is measured against the eager :class:`Predictor` on the bundled real cases, cropped to a
few boxes / slices so the default suite stays fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from medsam_lite.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "medsam_lite" / "examples"

# Runs in a fresh interpreter (-I: no PYTHONPATH / user site, cwd = tmp dir). The editable install
# of medsam_lite lives in site-packages, so a meta-path blocker makes any import of medsam_lite or
# export fail: the artifact must work with torch alone.
_CHILD = textwrap.dedent(
    """
    import json, sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("medsam_lite", "export"):
                raise ImportError("blocked: " + name)
            return None
    sys.meta_path.insert(0, _Block())
    try:
        import medsam_lite
        raise SystemExit("medsam_lite is importable in the child")
    except ImportError:
        pass
    import torch
    torch.set_num_threads(2)
    artifact, inputs, output = sys.argv[1:4]
    extra = {"metadata.json": ""}
    module = torch.jit.load(artifact, map_location="cpu", _extra_files=extra)
    data = torch.load(inputs)
    out = {}
    for key, (method, array, boxes) in data.items():
        out[key] = getattr(module, method)(array, boxes)
    torch.save(out, output)
    assert not any(m.split(".")[0] in ("medsam_lite", "export") for m in sys.modules)
    print(json.loads(extra["metadata.json"])["model"])
    """
)


def run_isolated(artifact: Path, jobs: Dict[str, Tuple[str, np.ndarray, np.ndarray]], tmp: Path) -> Dict[str, np.ndarray]:
    """Run ``method(array, boxes)`` for each job in a fresh ``python -I`` process; returns numpy outputs."""
    inputs, output = tmp / "inputs.pt", tmp / "outputs.pt"
    torch.save({k: (m, torch.from_numpy(np.ascontiguousarray(a)), torch.as_tensor(b, dtype=torch.float32))
                for k, (m, a, b) in jobs.items()}, inputs)
    proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(artifact), str(inputs), str(output)],
                          cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: v.numpy() for k, v in torch.load(output).items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground DSC between two label maps (any non-zero label)."""
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def assert_equal_labels(out: np.ndarray, ref: np.ndarray, what: str) -> None:
    """The same algorithm on the same inputs: label maps must be identical, pixel for pixel."""
    assert out.shape == ref.shape and out.dtype == np.uint8 == ref.dtype, what
    mismatch = int((out != ref).sum())
    assert mismatch == 0, f"{what}: {mismatch} pixels differ"


def assert_agree(out: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Another runtime (ONNX Runtime): same objects, near-identical pixels."""
    assert out.shape == ref.shape and out.dtype == np.uint8, what
    agreement = float((out == ref).mean())
    assert agreement >= 0.999, f"{what}: pixel agreement {agreement:.5f}"
    assert dice(out, ref) >= 0.995, f"{what}: DSC {dice(out, ref):.5f}"


def load_case(name: str) -> Tuple[np.ndarray, np.ndarray]:
    data = np.load(EXAMPLES / name)
    return data["imgs"], data["boxes"]


def crop_3d(volume: np.ndarray, boxes: np.ndarray, box_ids, z_lo: int, z_hi: int) -> Tuple[np.ndarray, np.ndarray]:
    """Keep slices [z_lo, z_hi) and the given boxes, with z clipped into the crop."""
    sub = boxes[list(box_ids)].astype(np.float64).copy()
    sub[:, 2] = np.clip(sub[:, 2] - z_lo, 0, z_hi - z_lo - 1)
    sub[:, 5] = np.clip(sub[:, 5] - z_lo, 0, z_hi - z_lo - 1)
    return np.ascontiguousarray(volume[z_lo:z_hi]), sub


@pytest.fixture(scope="module")
def random_repvit():
    from medsam_lite.model import build_medsam

    torch.manual_seed(0)
    return build_medsam("repvit_m0_6").eval()


@pytest.fixture(scope="module")
def repvit_artifact(random_repvit, tmp_path_factory) -> Path:
    from medsam_lite.export.torchscript import export_torchscript

    return export_torchscript(random_repvit, tmp_path_factory.mktemp("ts") / "predictor.pt", "repvit_m0_6")


@pytest.fixture(scope="module")
def lite_artifact(lite_medsam, tmp_path_factory) -> Path:
    from medsam_lite.export.torchscript import export_torchscript

    return export_torchscript(lite_medsam, tmp_path_factory.mktemp("ts_lite") / "predictor.pt", "lite_medsam")


def _jobs(n_2d: int, mr_slices: int, ct_ids, ct_range: Tuple[int, int]) -> Dict[str, Tuple[str, np.ndarray, np.ndarray]]:
    """Real jobs cut from the bundled cases: nuclei 2D (every 125 // n_2d-th box), MR brain, CT abdomen."""
    img, boxes = load_case("2DBox_Microscopy_nuclei.npz")
    mr, mr_boxes = load_case("3DBox_MR_brain_tumour.npz")
    z0 = int(mr_boxes[0, 2])
    mr, mr_boxes = crop_3d(mr, mr_boxes, [0], z0, z0 + mr_slices)
    ct, ct_boxes = load_case("3DBox_CT_abdomen.npz")
    ct, ct_boxes = crop_3d(ct, ct_boxes, ct_ids, *ct_range)
    return {
        "nuclei_2d": ("segment_2d", img, boxes[:: len(boxes) // n_2d][:n_2d].astype(np.float64)),
        "mr_3d": ("segment_3d", mr, mr_boxes),
        "ct_3d": ("segment_3d", ct, ct_boxes),
    }


@pytest.fixture(scope="module")
def cases() -> Dict[str, Tuple[str, np.ndarray, np.ndarray]]:
    """Small real jobs (the CPU is shared): 3 nuclei boxes, 3 MR slices, 1 CT box over 3 slices."""
    return _jobs(3, 3, [1], (87, 90))


@pytest.fixture(scope="module")
def big_cases() -> Dict[str, Tuple[str, np.ndarray, np.ndarray]]:
    """Larger real jobs for the slow tests: 13 nuclei boxes, all 7 MR tumour slices, 2 CT boxes over 8 slices."""
    return _jobs(13, 7, [1, 2], (84, 92))


def reference(predictor: Predictor, method: str, array: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    if method == "segment_2d":
        predictor.set_image(array)
        return predictor.predict(boxes)
    return predictor.predict_volume(array, boxes, progress=False)


# ---------------------------------------------------------------------------------------------- TorchScript
def test_metadata_present(repvit_artifact: Path) -> None:
    from medsam_lite.export.torchscript import read_metadata

    import medsam_lite

    meta = read_metadata(repvit_artifact)
    assert meta["model"] == "repvit_m0_6"
    assert meta["medsam_lite_version"] == medsam_lite.__version__
    assert meta["encoder"] == "RepViTEncoder"
    assert set(meta["methods"]) >= {"segment_2d", "segment_3d", "encode", "decode"}


def test_repvit_artifact_fused_and_matches_predictor(random_repvit, repvit_artifact: Path, cases, tmp_path) -> None:
    module = torch.jit.load(str(repvit_artifact))
    kinds = {getattr(m, "original_name", type(m).__name__) for m in module.encoder.modules()}
    assert not any("BatchNorm" in kind for kind in kinds), f"BatchNorm not fused: {sorted(kinds)}"
    predictor = Predictor(random_repvit, backend="torch")
    jobs = {"nuclei_2d": cases["nuclei_2d"], "ct_3d": cases["ct_3d"]}
    outs = run_isolated(repvit_artifact, jobs, tmp_path)
    for key, (method, array, boxes) in jobs.items():
        assert_equal_labels(outs[key], reference(predictor, method, array, boxes), f"repvit {key}")


def test_lite_medsam_artifact_matches_predictor_isolated(lite_medsam, lite_artifact: Path, cases, tmp_path) -> None:
    predictor = Predictor(lite_medsam, backend="torch")
    outs = run_isolated(lite_artifact, cases, tmp_path)
    for key, (method, array, boxes) in cases.items():
        ref = reference(predictor, method, array, boxes)
        assert ref.any(), key
        assert_equal_labels(outs[key], ref, f"lite_medsam {key}")


def full_cases() -> Dict[str, Tuple[str, np.ndarray, np.ndarray]]:
    """The three bundled real cases, whole: nuclei 512x512 with all 125 boxes, CT abdomen with its 5 organ
    boxes over their full z-ranges, MR brain tumour."""
    jobs = {}
    for key, name in (("nuclei_2d", "2DBox_Microscopy_nuclei.npz"), ("ct_3d", "3DBox_CT_abdomen.npz"),
                      ("mr_3d", "3DBox_MR_brain_tumour.npz")):
        array, boxes = load_case(name)
        jobs[key] = ("segment_2d" if key.endswith("2d") else "segment_3d", array, boxes.astype(np.float64))
    return jobs


@pytest.mark.slow
def test_artifact_equals_predictor_on_full_real_cases(tmp_path) -> None:
    """One algorithm: the TorchScript file (loaded without medsam_lite) and the Predictor give identical label
    maps on the whole bundled cases (the fastest registry encoder with random weights; the real weights on
    crops above, whole in the slow test)."""
    from medsam_lite.export.torchscript import export_torchscript
    from medsam_lite.model import build_medsam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_medsam("repvit_m0_6_fpn").eval()
    artifact = export_torchscript(model, tmp_path / "fpn.pt", "repvit_m0_6_fpn")
    predictor = Predictor(model, backend="torch")
    jobs = full_cases()
    outs = run_isolated(artifact, jobs, tmp_path)
    for key, (method, array, boxes) in jobs.items():
        ref = reference(predictor, method, array, boxes)
        assert ref.any(), key
        assert_equal_labels(outs[key], ref, f"repvit full {key}")


@pytest.mark.slow
def test_lite_medsam_artifact_equals_cli_on_full_real_cases(lite_artifact: Path, tmp_path) -> None:
    """The real weights, whole bundled cases: the artifact's label maps equal ``medsam-lite segment``'s files."""
    from medsam_lite.cli.main import main

    jobs = full_cases()
    outs = run_isolated(lite_artifact, jobs, tmp_path)
    out_dir = tmp_path / "cli"
    for key, name in (("nuclei_2d", "2DBox_Microscopy_nuclei.npz"), ("ct_3d", "3DBox_CT_abdomen.npz"),
                      ("mr_3d", "3DBox_MR_brain_tumour.npz")):
        assert main(["segment", str(EXAMPLES / name), "-o", str(out_dir), "--model", "lite_medsam", "--backend",
                     "torch", "--no-progress"]) == 0
        with np.load(out_dir / name) as seg:
            assert_equal_labels(outs[key], seg["segs"], f"lite_medsam full {key}")


@pytest.mark.slow
def test_lite_medsam_artifact_matches_predictor_bigger(lite_medsam, lite_artifact: Path, big_cases, tmp_path) -> None:
    predictor = Predictor(lite_medsam, backend="torch")
    outs = run_isolated(lite_artifact, big_cases, tmp_path)
    for key, (method, array, boxes) in big_cases.items():
        ref = reference(predictor, method, array, boxes)
        assert ref.any(), key
        assert_equal_labels(outs[key], ref, f"lite_medsam {key}")


def test_3d_encodes_each_slice_once(repvit_artifact: Path) -> None:
    """Two overlapping boxes over 4 slices: the in-artifact cache means 4 encoder runs, like the Predictor."""
    module = torch.jit.load(str(repvit_artifact))
    volume = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 40, 50), dtype=np.uint8))
    boxes = torch.tensor([[5.0, 5.0, 0.0, 30.0, 30.0, 3.0], [10.0, 8.0, 1.0, 40.0, 35.0, 3.0]])
    assert module.encoder_calls == 0
    out = module.segment_3d(volume, boxes)
    assert module.encoder_calls == 4
    assert out.shape == (4, 40, 50) and out.dtype == torch.uint8


@pytest.mark.parametrize(
    "method, array, boxes, message",
    [
        ("segment_2d", np.zeros((2, 3, 4, 5), np.uint8), [[1, 1, 3, 3]], "must be \\(H, W\\)"),
        ("segment_2d", np.arange(64, dtype=np.float32).reshape(8, 8), [[1, 1, 3, 3]], "uint8"),
        ("segment_2d", np.arange(64, dtype=np.uint8).reshape(8, 8), [[20, 20, 30, 30]], "outside the image"),
        ("segment_2d", np.arange(64, dtype=np.uint8).reshape(8, 8), np.zeros((0, 4)), "no boxes"),
        ("segment_2d", np.arange(64, dtype=np.uint8).reshape(8, 8), [[5, 1, 2, 3]], "inverted along x"),
        ("segment_2d", np.arange(64, dtype=np.uint8).reshape(8, 8), [[1, 1, 3]], "shape \\(N, 4\\)"),
        ("segment_2d", np.full((8, 8), 7, np.uint8), [[1, 1, 3, 3]], "constant"),
        ("segment_3d", np.arange(64, dtype=np.uint8).reshape(8, 8), [[1, 1, 0, 3, 3, 0]], "\\(D, H, W\\)"),
        ("segment_3d", np.arange(128, dtype=np.uint8).reshape(2, 8, 8), [[1, 1, 1, 3, 3, 0]], "inverted along z"),
        ("segment_3d", np.arange(128, dtype=np.uint8).reshape(2, 8, 8), [[1, 1, 5, 3, 3, 6]], "outside the image"),
    ],
)
def test_bad_inputs_raise_readable_errors(repvit_artifact: Path, method, array, boxes, message) -> None:
    module = torch.jit.load(str(repvit_artifact))
    with pytest.raises(Exception, match=message):
        getattr(module, method)(torch.from_numpy(array), torch.as_tensor(np.asarray(boxes, np.float64)))


def test_partial_box_is_clipped_like_predictor(random_repvit, repvit_artifact: Path) -> None:
    img, _ = load_case("2DBox_Microscopy_nuclei.npz")
    boxes = np.array([[-10.0, 400.0, 100.0, 530.0]])
    module = torch.jit.load(str(repvit_artifact))
    out = module.segment_2d(torch.from_numpy(img), torch.from_numpy(boxes)).numpy()
    predictor = Predictor(random_repvit, backend="torch")
    with pytest.warns(UserWarning):
        ref = reference(predictor, "segment_2d", img, boxes)
    assert_equal_labels(out, ref, "clipped box")


def test_cli_export_torchscript(fast_checkpoint: Path, tmp_path: Path) -> None:
    from medsam_lite.cli.main import main

    out = tmp_path / "predictor.pt"
    assert main(["export", "--model", str(fast_checkpoint), "--format", "torchscript", "-o", str(out)]) == 0
    from medsam_lite.export.torchscript import read_metadata

    assert read_metadata(out)["model"] == str(fast_checkpoint)


def test_export_metadata_records_the_training_normalisation(tmp_path: Path) -> None:
    """A checkpoint's recorded intensity normalisation travels into the artifact's metadata, beside the
    model-frame preprocessing, so a downstream app maps intensities as training did."""
    from medsam_lite.checkpoint import save_checkpoint
    from medsam_lite.cli.main import main
    from medsam_lite.export.torchscript import read_metadata
    from medsam_lite.model import build_medsam

    norm = {"CT": "ct[L40,W400]", "MR": "percentile[0.5,99.5]"}
    ckpt = save_checkpoint(build_medsam("repvit_m0_6_fpn").eval(), tmp_path / "s.pth", "repvit_m0_6_fpn",
                           {"normalization": norm})
    out = tmp_path / "p.pt"
    assert main(["export", "--model", str(ckpt), "--format", "torchscript", "-o", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["training_normalization"] == norm
    assert "INTER_AREA" in meta["preprocessing"]["model_frame"]


def test_cli_export_bad_model(tmp_path: Path, capsys) -> None:
    from medsam_lite.cli.main import main

    assert main(["export", "--model", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def repvit_onnx(fast_checkpoint: Path, tmp_path_factory) -> Path:
    """ONNX export through the CLI (random RepViT checkpoint)."""
    from medsam_lite.cli.main import main

    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "--model", str(fast_checkpoint), "--format", "onnx", "-o", str(out)]) == 0
    return out


def test_onnx_files_checked_and_shaped(repvit_onnx: Path) -> None:
    import onnx
    import onnxruntime as ort

    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(repvit_onnx / name))
    dec = ort.InferenceSession(str(repvit_onnx / "decoder.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        logits = dec.run(None, {"embedding": np.random.rand(1, 256, 64, 64).astype(np.float32),
                                "boxes": np.tile(np.array([[10, 10, 100, 90]], np.float32), (n, 1))})[0]
        assert logits.shape == (n, 1, 256, 256)


def test_onnx_backend_matches_eager(fast_checkpoint: Path, repvit_onnx: Path, cases) -> None:
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
    from medsam_lite.checkpoint import load_checkpoint

    eager = Predictor(load_checkpoint(fast_checkpoint), backend="torch")
    onnx_pred = Predictor(backend=OnnxRuntimeBackend(repvit_onnx, threads=2))
    for key in ("nuclei_2d", "ct_3d"):
        method, array, boxes = cases[key]
        assert_agree(reference(onnx_pred, method, array, boxes), reference(eager, method, array, boxes), f"onnx {key}")


def test_onnx_backend_missing_dir(tmp_path: Path) -> None:
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
    from medsam_lite.errors import InputError

    with pytest.raises(InputError, match="encoder.onnx"):
        OnnxRuntimeBackend(tmp_path)


def test_shipped_student_exports_match_predictor(cases, tmp_path: Path) -> None:
    """The shipped repvit_m0_6_lite (whatever RepViT layout it records) through the TorchScript artifact and
    ONNX Runtime gives the eager Predictor's masks."""
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
    from medsam_lite.export.onnx_export import export_onnx
    from medsam_lite.export.torchscript import export_torchscript
    from medsam_lite.checkpoint import load_model

    student = load_model("repvit_m0_6_lite")
    method, array, boxes = cases["nuclei_2d"]
    ref = reference(Predictor(student, backend="torch"), method, array, boxes)
    artifact = torch.jit.load(str(export_torchscript(student, tmp_path / "student.pt", "repvit_m0_6_lite")))
    scripted = artifact.segment_2d(torch.from_numpy(array), torch.from_numpy(boxes)).numpy()
    assert_equal_labels(scripted, ref, "torchscript student")
    export_onnx(student, tmp_path / "onnx")
    onnx_masks = reference(Predictor(backend=OnnxRuntimeBackend(tmp_path / "onnx", threads=2)), method, array, boxes)
    assert_agree(onnx_masks, ref, "onnx student")


@pytest.mark.slow
def test_onnx_lite_medsam_and_int8(lite_medsam, big_cases, tmp_path: Path) -> None:
    """Real LiteMedSAM through ONNX Runtime (fp32 and dynamic int8) against the eager Predictor."""
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
    from medsam_lite.export.onnx_export import export_onnx

    paths = export_onnx(lite_medsam, tmp_path, quantize=True)
    assert {"encoder", "decoder", "encoder_int8", "decoder_int8"} <= set(paths)
    eager = Predictor(lite_medsam, backend="torch")
    fp32 = Predictor(backend=OnnxRuntimeBackend(tmp_path, threads=2))
    int8 = Predictor(backend=OnnxRuntimeBackend(tmp_path, int8=True, threads=2))
    scores = {}
    for key, (method, array, boxes) in big_cases.items():
        ref = reference(eager, method, array, boxes)
        assert_agree(reference(fp32, method, array, boxes), ref, f"onnx lite {key}")
        q = reference(int8, method, array, boxes)
        scores[key] = (dice(q, ref), float((q == ref).mean()))
        print(json.dumps({"case": key, "int8_dsc": scores[key][0], "int8_agreement": scores[key][1]}))
    # dynamic int8 is lossy and its kernels differ by CPU: DSC vs fp32 nuclei / MR / CT was >= 0.8 on an AMD
    # EPYC VM and 0.53 / 0.43 / 0.83 on an Intel Xeon VM (pixel agreement 0.98 there). The bar is the same
    # objects segmented, roughly (unrelated or empty masks give DSC ~0), not fp32 fidelity.
    assert all(d >= 0.3 and a >= 0.95 for d, a in scores.values()), scores


# ---------------------------------------------------------------------------------------------- C++
@pytest.mark.slow
def test_cpp_example_builds_and_matches(repvit_artifact: Path, tmp_path: Path) -> None:
    """Build examples/cpp against the torch wheel, run segment_2d from C++ on a raw grey image."""
    import os
    import shutil

    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.skip("cmake / g++ not installed")
    torch_root = os.path.dirname(torch.__file__)
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(REPO / "examples" / "cpp"), "-B", str(build), f"-DTORCH_ROOT={torch_root}",
                    f"-DTORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, timeout=1800)
    img, boxes = load_case("2DBox_Microscopy_nuclei.npz")
    grey = np.ascontiguousarray(img[:200, :300, 0])
    raw, mask_path = tmp_path / "image.raw", tmp_path / "mask.raw"
    grey.tofile(raw)
    box_args = ["10", "20", "120", "150", "100", "50", "250", "180"]
    proc = subprocess.run([str(build / "segment"), str(repvit_artifact), str(raw), "200", "300", str(mask_path),
                           *box_args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mask = np.fromfile(mask_path, dtype=np.uint8).reshape(200, 300)
    module = torch.jit.load(str(repvit_artifact))
    expected = module.segment_2d(torch.from_numpy(grey), torch.tensor([float(v) for v in box_args]).reshape(2, 4))
    assert np.array_equal(mask, expected.numpy())
    bad = subprocess.run([str(build / "segment"), str(repvit_artifact), str(raw), "200", "300", str(mask_path),
                          "500", "20", "520", "40"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "outside the image" in bad.stderr


def test_inline_shared_initializers_keeps_outputs(tmp_path: Path) -> None:
    """An Identity of an initializer (the exporter's de-duplication of equal weights) becomes a real
    initializer, so ONNX Runtime's dynamic quantiser accepts the graph; outputs are unchanged."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from medsam_lite.export.onnx_export import inline_shared_initializers

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["w_shared"]), helper.make_node("MatMul", ["x", "w"], ["a"]),
         helper.make_node("MatMul", ["x", "w_shared"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"])],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fixed = inline_shared_initializers(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(fixed)
    assert [n.op_type for n in fixed.graph.node] == ["MatMul", "MatMul", "Add"]
    assert {i.name for i in fixed.graph.initializer} == {"w", "w_shared"}
    x = np.random.default_rng(0).random((2, 3), dtype=np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for m in (model, fixed)]
    np.testing.assert_array_equal(outs[0], outs[1])
