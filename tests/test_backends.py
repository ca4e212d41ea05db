"""Fast-inference backends: shapes, fidelity against eager fp32, the artifact cache, precision choice, the gate."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from medsam_lite.backends import installed, make_backend
from medsam_lite.backends.artifacts import ArtifactKey, cache_root, ensure_entry, entry_dir, is_complete
from medsam_lite.backends.torch import TorchBackend

REPO = Path(__file__).resolve().parents[1]

_SLOW = pytest.mark.slow  # quantisation (NNCF calibration, ORT dynamic int8) takes minutes on 2 shared cores
VARIANTS = [
    ("torch", "fp32"), ("onnxruntime", "fp32"), pytest.param("onnxruntime", "int8", marks=_SLOW),
    ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "bf16-encoder"),
    pytest.param("openvino", "int8", marks=_SLOW),
]
needs_openvino = pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")


def _repvit():
    from medsam_lite.model import build_medsam

    torch.manual_seed(0)
    return build_medsam("repvit_m0_6").eval()


@pytest.fixture(scope="module")
def repvit():
    return _repvit()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def _build(model, backend: str, precision: str, cache: Path):
    if backend == "torch":
        return TorchBackend(model)
    if backend == "onnxruntime":
        from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.from_model(model, precision=precision, cache_dir=cache, threads=2)
    from medsam_lite.backends.openvino import OpenVINOBackend

    return OpenVINOBackend(model, precision=precision, cache_dir=cache, threads=2)


BOXES = torch.tensor([[10.0, 12.0, 100.0, 90.0], [40.0, 30.0, 220.0, 250.0], [0.0, 0.0, 255.0, 255.0]])


# ----------------------------------------------------------------------------- graphs
def test_decoder_graph_is_model_decode(repvit) -> None:
    from medsam_lite.backends.graphs import decoder_graph
    from medsam_lite.encoders import inference_encoder

    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(decoder_graph(repvit)(emb, BOXES), repvit.decode(emb, BOXES)[0])
        image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
        fused = inference_encoder(repvit.image_encoder)
        assert fused is not repvit.image_encoder  # RepViT is reparameterised on a copy
        torch.testing.assert_close(fused(image), repvit.encode(image), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("weights", ["random", "lite_medsam"])
def test_split_decoder_equals_decoder_graph(repvit, weights: str, request) -> None:
    """The OpenVINO decoder's two parts (box-independent once per embedding, then per box) give the
    logits of the one-graph decoder, for a random decoder and LiteMedSAM's trained one."""
    from medsam_lite.backends.graphs import DecoderBoxGraph, DecoderImageGraph
    from medsam_lite.model import DecoderGraph

    model = repvit if weights == "random" else request.getfixturevalue("lite_medsam")
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = DecoderGraph(model)(emb, BOXES)
        parts = DecoderImageGraph(model)(emb)
        assert [tuple(p.shape) for p in parts] == [(1, 4096, 256), (1, 8, 16, 4096), (1, 8, 4096, 16), (1, 4096, 128)]
        together = DecoderBoxGraph(model)(*parts, BOXES)
        one_by_one = torch.cat([DecoderBoxGraph(model)(*parts, BOXES[i:i + 1]) for i in range(len(BOXES))])
    for logits in (together, one_by_one):
        assert logits.shape == reference.shape
        torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
        assert (logits > 0).ne(reference > 0).float().mean() < 1e-4  # sign flips only where |logit| ~ 1e-5


@needs_openvino
def test_openvino_runs_the_image_part_once_per_embedding(repvit, shared_cache: Path) -> None:
    from medsam_lite.backends.openvino import OpenVINOBackend

    backend = OpenVINOBackend(repvit, precision="fp32", cache_dir=shared_cache, threads=2)
    g = torch.Generator().manual_seed(4)
    first, second = torch.randn(1, 256, 64, 64, generator=g), torch.randn(1, 256, 64, 64, generator=g)
    calls = backend.image_part_calls
    box_by_box = [backend.decode(first, BOXES[i:i + 1]) for i in range(len(BOXES))]
    assert backend.image_part_calls == calls + 1  # three boxes, one image part
    all_at_once = backend.decode(first.clone(), BOXES)  # equal values reuse it too
    assert backend.image_part_calls == calls + 1
    other = backend.decode(second, BOXES[:1])
    assert backend.image_part_calls == calls + 2
    again = backend.decode(first, BOXES[:1])  # back to the first embedding: recomputed, same logits
    assert backend.image_part_calls == calls + 3
    with torch.no_grad():
        reference = repvit.decode(first, BOXES)[0]
    torch.testing.assert_close(torch.cat(box_by_box), reference, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(all_at_once, reference, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(again, box_by_box[0], rtol=0, atol=0)
    assert not torch.allclose(other, box_by_box[0])


# ----------------------------------------------------------------------------- every variant
@needs_openvino
def test_predictor_decodes_openvino_boxes_in_batches(repvit, shared_cache: Path) -> None:
    """The Predictor takes the OpenVINO backend's decode batch by default (4 boxes a call) and gives
    the label map of one box per call; torch stays at one box a call."""
    from medsam_lite.backends.openvino import OpenVINOBackend
    from medsam_lite.predictor import Predictor
    from medsam_lite.resources import example_path

    case = np.load(example_path("2DBox_Microscopy_nuclei.npz"))
    image, boxes = case["imgs"], case["boxes"][:20]
    backend = OpenVINOBackend(repvit, precision="fp32", cache_dir=shared_cache, threads=2)
    batched, single = Predictor(backend=backend), Predictor(backend=backend, decode_batch=1)
    assert batched.decode_batch == OpenVINOBackend.decode_batch == 4 and single.decode_batch == 1
    assert Predictor(repvit, backend="torch").decode_batch == 1
    maps = []
    for predictor in (batched, single):
        predictor.set_image(image)
        calls = predictor.propagator.decoder_calls
        maps.append(predictor.predict(boxes))
        assert predictor.propagator.decoder_calls - calls == (5 if predictor is batched else 20)
    assert len(np.unique(maps[0])) > 5  # random weights: not every box keeps pixels, but many do
    assert (maps[0] != maps[1]).mean() < 1e-4


@pytest.mark.parametrize("backend,precision", VARIANTS)
def test_variant_shapes_and_agreement(repvit, shared_cache: Path, backend: str, precision: str) -> None:
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    if precision == "int8" and backend == "openvino":
        pytest.importorskip("nncf")
    b = _build(repvit, backend, precision, shared_cache)
    assert b.name == backend and b.precision == precision
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    emb = b.encode(images)
    assert emb.shape == (2, 256, 64, 64) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    ref = TorchBackend(repvit)
    ref_emb = ref.encode(images)
    logits = b.decode(ref_emb[:1], BOXES)
    assert logits.shape == (3, 1, 256, 256) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert b.decode(ref_emb[:1], BOXES[:1]).shape == (1, 1, 256, 256)  # dynamic box count
    agreement = ((logits > 0) == (ref.decode(ref_emb[:1], BOXES) > 0)).float().mean().item()
    emb_err = ((emb - ref_emb).norm() / ref_emb.norm()).item()
    if precision == "fp32":
        assert emb_err < 1e-4 and agreement >= 0.9999, (emb_err, agreement)
    else:  # reduced precision: close, not equal (fidelity on real images is the gate's job)
        assert emb_err < 0.25 and agreement >= 0.95, (emb_err, agreement)


def test_make_backend_builds_openvino_and_onnxruntime(repvit, shared_cache: Path) -> None:
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend

    ort = make_backend(repvit, "onnxruntime", "fp32", cache_dir=shared_cache, threads=2)
    assert isinstance(ort, OnnxRuntimeBackend)
    if installed("openvino"):
        from medsam_lite.backends.openvino import OpenVINOBackend

        ov = make_backend(repvit, "openvino", "fp32", cache_dir=shared_cache, threads=2)
        assert isinstance(ov, OpenVINOBackend) and ov.precision == "fp32"


def test_onnxruntime_from_model_rejects_bf16(repvit, tmp_path: Path) -> None:
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
    from medsam_lite.errors import InputError

    with pytest.raises(InputError, match="bf16"):
        OnnxRuntimeBackend.from_model(repvit, precision="bf16", cache_dir=tmp_path)
    assert not any(tmp_path.rglob("*.onnx"))


# ----------------------------------------------------------------------------- artifact cache
def test_cache_root_argument_env_and_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDSAM_LITE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MEDSAM_LITE_CACHE")
    import platformdirs

    assert cache_root() == Path(platformdirs.user_cache_dir("medsam-lite"))


def test_key_separates_weights_precision_and_versions(tmp_path: Path) -> None:
    base = ArtifactKey("openvino", "a" * 64, "fp32", "2026.4", 1)
    others = [ArtifactKey("openvino", "b" * 64, "fp32", "2026.4", 1), ArtifactKey("openvino", "a" * 64, "int8", "2026.4", 1),
              ArtifactKey("openvino", "a" * 64, "fp32", "2026.5", 1), ArtifactKey("openvino", "a" * 64, "fp32", "2026.4", 2),
              ArtifactKey("onnx", "a" * 64, "fp32", "2026.4", 1)]
    assert len({entry_dir(k, tmp_path) for k in [base, *others]}) == 6


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_conversion_happens_once(repvit, tmp_path: Path, capfd, backend: str) -> None:
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    first = _build(repvit, backend, "fp32", tmp_path)
    err = capfd.readouterr().err
    assert err.count("medsam-lite: converting") == 1 and str(tmp_path) in err and err.rstrip().endswith(" s")
    second = _build(repvit, backend, "fp32", tmp_path)
    assert "converting" not in capfd.readouterr().err
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.encode(x), second.encode(x))
    if backend == "openvino":
        assert any((second.entry / "compiled").iterdir()), "OpenVINO compiled-model cache not written"


@needs_openvino
def test_openvino_from_weights_reopens_the_cache_without_the_torch_model(repvit, tmp_path: Path, capfd,
                                                                        monkeypatch) -> None:
    """A second process-like start from the same weights file opens the cached IR through the file's
    SHA-256 and never builds the model; other weights or a stale record fall back to converting."""
    import medsam_lite.checkpoint as checkpoint
    from medsam_lite.backends.artifacts import read_alias
    from medsam_lite.backends.openvino import OpenVINOBackend

    weights = checkpoint.save_checkpoint(repvit, tmp_path / "model.pth", "repvit_m0_6")
    first = OpenVINOBackend.from_weights(str(weights), "fp32", cache_dir=tmp_path / "cache", threads=2)
    assert capfd.readouterr().err.count("medsam-lite: converting") == 1
    assert read_alias("openvino", checkpoint.sha256_of(weights), tmp_path / "cache") == first.weights_sha256

    def no_model(*_args, **_kwargs):
        raise AssertionError("the torch model was built although the IR is cached")

    monkeypatch.setattr(checkpoint, "load_model", no_model)
    second = OpenVINOBackend.from_weights(str(weights), "fp32", cache_dir=tmp_path / "cache", threads=2)
    assert "converting" not in capfd.readouterr().err
    assert second.entry == first.entry and second.weights_sha256 == first.weights_sha256
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.encode(x), second.encode(x))
    emb = first.encode(x)
    torch.testing.assert_close(first.decode(emb, BOXES), second.decode(emb, BOXES), rtol=1e-5, atol=1e-5)
    # a record pointing at a missing entry: the model is needed again (and the record rewritten)
    monkeypatch.undo()
    shutil.rmtree(first.entry)
    third = OpenVINOBackend.from_weights(str(weights), "fp32", cache_dir=tmp_path / "cache", threads=2)
    assert capfd.readouterr().err.count("medsam-lite: converting") == 1 and is_complete(third.entry)


@needs_openvino
def test_corrupt_entry_is_rebuilt(repvit, tmp_path: Path, capfd) -> None:
    backend = _build(repvit, "openvino", "fp32", tmp_path)
    entry = backend.entry
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    expected = backend.encode(x)
    capfd.readouterr()
    weights = entry / "encoder.bin"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated weights
    assert not is_complete(entry)
    rebuilt = _build(repvit, "openvino", "fp32", tmp_path)
    assert capfd.readouterr().err.count("converting") == 1
    assert torch.equal(rebuilt.encode(x), expected)
    assert is_complete(entry)


@pytest.mark.parametrize("damage", ["no_manifest", "broken_manifest", "missing_file", "other_key"])
def test_partial_entry_is_rebuilt(tmp_path: Path, capfd, damage: str) -> None:
    key = ArtifactKey("test", "0" * 64, "fp32", "1", 1)
    builds: List[int] = []

    def build(folder: Path) -> None:
        builds.append(1)
        (folder / "a.bin").write_bytes(b"a" * 100)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.bin").write_bytes(b"b" * 10)

    entry = ensure_entry(key, build, "test", tmp_path)
    assert ensure_entry(key, build, "test", tmp_path) == entry and len(builds) == 1  # a hit
    manifest = entry / "manifest.json"
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "broken_manifest":
        manifest.write_text('{"files": ')
    elif damage == "missing_file":
        (entry / "sub" / "b.bin").unlink()
    else:
        data = json.loads(manifest.read_text())
        data["key"]["weights_sha256"] = "1" * 64
        manifest.write_text(json.dumps(data))
    assert not is_complete(entry, key)
    capfd.readouterr()
    stale = tmp_path / "test" / f".{entry.name}.abc123.tmp"  # what a process killed mid-build leaves
    stale.mkdir()
    (stale / "a.bin").write_bytes(b"half")
    assert ensure_entry(key, build, "test", tmp_path) == entry and len(builds) == 2
    assert not stale.exists()
    assert capfd.readouterr().err.count("medsam-lite: converting test") == 1
    assert is_complete(entry, key) and (entry / "sub" / "b.bin").read_bytes() == b"b" * 10


def test_failed_build_leaves_nothing(tmp_path: Path, capfd) -> None:
    key = ArtifactKey("test", "0" * 64, "fp32", "1", 1)

    def build(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        ensure_entry(key, build, "test", tmp_path)
    assert "failed" in capfd.readouterr().err
    assert not entry_dir(key, tmp_path).exists()
    assert [p.name for p in (tmp_path / "test").iterdir() if not p.name.endswith(".lock")] == []
    path = ensure_entry(key, lambda f: (f / "ok.bin").write_bytes(b"y"), "test", tmp_path)
    assert (path / "ok.bin").read_bytes() == b"y" and is_complete(path, key)


_CHILD = """
import sys, torch
from medsam_lite.model import build_medsam
from medsam_lite.backends.openvino import OpenVINOBackend
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_medsam("repvit_m0_6").eval()
b = OpenVINOBackend(model, precision="fp32", cache_dir=sys.argv[1], threads=1)
print(float(b.encode(torch.ones(1, 3, 256, 256)).sum()))
"""


_CHILD_ENSURE = """
import sys, time
from pathlib import Path
from medsam_lite.backends.artifacts import ArtifactKey, ensure_entry

def build(folder):
    time.sleep(2.0)  # a slow conversion: the other process must wait on the lock, not convert again
    (folder / "model.bin").write_bytes(b"m" * 1000)

entry = ensure_entry(ArtifactKey("test", "0" * 64, "fp32", "1", 1), build, "test model", sys.argv[1])
print(len((Path(entry) / "model.bin").read_bytes()))
"""


def test_concurrent_ensure_entry_builds_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD_ENSURE, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert sum(err.count("medsam-lite: converting test model") for _, err in results) == 1
    assert [out.strip() for out, _ in results] == ["1000", "1000"]
    assert [p.name for p in (tmp_path / "test").iterdir() if not p.name.endswith(".lock")] == \
        [entry_dir(ArtifactKey("test", "0" * 64, "fp32", "1", 1), tmp_path).name]


@pytest.mark.slow
@needs_openvino
def test_concurrent_processes_convert_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert sum(err.count("medsam-lite: converting") for _, err in results) == 1
    assert results[0][0].strip() == results[1][0].strip()
    entries = [p for p in (tmp_path / "openvino").iterdir() if p.is_dir()]
    assert len(entries) == 1 and is_complete(entries[0])  # no leftover temporary folder


# ----------------------------------------------------------------------------- CPU and auto precision
def test_cpuinfo_flags_and_native_bf16(tmp_path: Path) -> None:
    from medsam_lite.backends import cpu

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu.cpuinfo_flags(fake) >= {"avx512_bf16", "fpu"}
    assert cpu.cpuinfo_flags(tmp_path / "missing") == frozenset()
    caps = cpu.openvino_capabilities()
    real_flags = cpu.cpuinfo_flags()
    expected = ("BF16" in caps) if caps is not None else bool(real_flags & cpu.BF16_FLAGS)
    assert cpu.native_bf16() is expected
    assert cpu.cpu_name()


def test_auto_precision_needs_gate_and_native_support(tmp_path: Path, monkeypatch) -> None:
    """OpenVINO's ``auto``: the gate entry of this CPU's kind, and a bf16 precision only with native bf16
    (the kinds, the speed rule and the committed decision: tests/test_gate.py)."""
    from medsam_lite.backends import cpu, openvino

    gate = tmp_path / "gate.json"
    kind = "AuthenticAMD/avx512_bf16"
    entry = {"fp32": {"encoder_ms": 300.0, "decoder_ms": 10.0},
             "precisions": {"bf16": {"passes": True, "encoder_ms": 180.0, "decoder_ms": 9.0},
                            "int8": {"passes": False, "encoder_ms": 150.0, "decoder_ms": 10.0}}}
    gate.write_text(json.dumps({"format": 2, "kinds": {kind: entry}}))
    assert openvino.auto_precision([gate], kind, native_bf16=True) == "bf16"
    assert openvino.auto_precision([gate], kind, native_bf16=False) == "fp32"  # passed, but no native bf16
    assert openvino.auto_precision([gate], "GenuineIntel/avx512_bf16", native_bf16=True) == "fp32"  # other kind
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)  # the defaults: this CPU's kind and native bf16
    monkeypatch.setattr(cpu, "this_cpu_kind", lambda: kind)
    assert openvino.auto_precision([gate]) == "bf16"
    entry["precisions"]["bf16"]["passes"] = False
    gate.write_text(json.dumps({"format": 2, "kinds": {kind: entry}}))
    assert openvino.auto_precision([gate]) == "fp32"  # did not pass
    gate.write_text("{broken")
    assert openvino.auto_precision([gate]) == "fp32"
    assert openvino.auto_precision([tmp_path / "missing.json"]) == "fp32"


@pytest.mark.slow
@needs_openvino
def test_decided_default_precision_agrees_on_bundled_case(lite_medsam, tmp_path: Path) -> None:
    """Recompute the agreement of the precision ``auto`` picks here on the bundled examples (quick gate)."""
    from medsam_lite.backends.openvino import auto_precision
    from medsam_lite.bench.gate import GateConfig, build_cases, compare, make_variant, passes, run_backend

    precision = auto_precision()
    cfg = GateConfig(quick=True, cache_dir=tmp_path, nuclei_boxes=20)
    cases_2d, cases_3d = build_cases(cfg)
    ref = run_backend(TorchBackend(lite_medsam), cases_2d, cases_3d)
    out = run_backend(make_variant(lite_medsam, "openvino", precision, cfg), cases_2d, cases_3d)
    metrics = compare(ref, out, cases_2d, cases_3d)
    assert passes(metrics), metrics
    if precision == "fp32":
        assert metrics["box_iou_mean"] >= 0.999 and metrics["label_dsc_vs_fp32_min"] >= 0.99, metrics


@pytest.mark.slow
@needs_openvino
def test_openvino_lite_medsam_fp32_masks_match_eager_bf16_runs(lite_medsam, tmp_path: Path) -> None:
    """Real weights, real image: OpenVINO fp32 masks equal eager fp32 (IoU >= 0.999 per box); bf16 runs."""
    from medsam_lite.backends.openvino import OpenVINOBackend
    from medsam_lite.bench.gate import GateConfig, build_cases, run_backend

    cases_2d, _ = build_cases(GateConfig(quick=True, nuclei_boxes=30))
    ref = run_backend(TorchBackend(lite_medsam), cases_2d, [])
    for precision, bar in (("fp32", 0.999), ("bf16", 0.9)):
        out = run_backend(OpenVINOBackend(lite_medsam, precision, cache_dir=tmp_path, threads=2), cases_2d, [])
        ious = [np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))
                for ra, oa in zip(ref.masks_2d, out.masks_2d) for a, b in zip(ra, oa)]
        assert len(ious) >= 30
        score = min(ious) if precision == "fp32" else float(np.mean(ious))
        assert score >= bar, (precision, ious)


@needs_openvino
def test_warm_openvino_process_imports_no_torch_model_stack(repvit, tmp_path: Path) -> None:
    """A second process segmenting with a cached OpenVINO conversion neither builds the torch model nor
    imports segment-anything / timm / torchvision (seconds of start-up), and gives the first one's labels."""
    from medsam_lite.checkpoint import save_checkpoint

    weights = save_checkpoint(repvit, tmp_path / "model.pth", "repvit_m0_6")
    script = (
        "import sys, numpy as np\n"
        "from medsam_lite.predictor import Predictor\n"
        "from medsam_lite.resources import load_example\n"
        f"p = Predictor({str(weights)!r}, backend='openvino', precision='fp32', threads=2)\n"
        "case = load_example('2DBox_Microscopy_nuclei.npz')\n"
        "p.set_image(case['imgs'])\n"
        f"np.save({str(tmp_path)!r} + '/labels_' + sys.argv[1] + '.npy', p.predict(case['boxes'][:6]))\n"
        "print(' '.join(m for m in ('timm', 'torchvision', 'segment_anything') if m in sys.modules))\n"
    )
    env = {**os.environ, "MEDSAM_LITE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", script, str(i)], env=env, capture_output=True, text=True, timeout=600)
            for i in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert "converting" in runs[0].stderr and "converting" not in runs[1].stderr
    assert runs[0].stdout.split() == ["timm", "torchvision", "segment_anything"]  # the first run built the model
    assert runs[1].stdout.split() == []
    first, second = np.load(tmp_path / "labels_1.npy"), np.load(tmp_path / "labels_2.npy")
    assert first.any() and np.array_equal(first, second)


def test_encoder_stages_compose_to_the_tiny_vit_encoder(repvit) -> None:
    from medsam_lite.backends.graphs import encoder_stages
    from medsam_lite.encoders import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder("tiny_vit").eval()
    stages = encoder_stages(encoder)
    assert [name for name, _ in stages] == ["stem", "layer0", "layer1", "layer2", "layer3", "neck"]
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        y = x
        for _, stage in stages:
            y = stage(y)
        assert torch.equal(y, encoder(x))
    assert encoder_stages(repvit.image_encoder) == []


@needs_openvino
@pytest.mark.slow
def test_openvino_mixed_schemes_run_the_planned_stage_precisions(repvit, tmp_path: Path) -> None:
    from medsam_lite.backends.openvino import MIXED_F32_STAGES, OpenVINOBackend
    from medsam_lite.errors import InputError
    from medsam_lite.model import build_medsam

    torch.manual_seed(0)
    tiny = build_medsam("tiny_vit").eval()
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        e_ref = tiny.encode(x)
    for scheme, kept in MIXED_F32_STAGES.items():
        mixed = OpenVINOBackend(tiny, scheme, cache_dir=tmp_path, threads=2)
        assert mixed.stage_precisions == {s: ("f32" if s in kept else "bf16")
                                          for s in ("stem", "layer0", "layer1", "layer2", "layer3", "neck")}
        e = mixed.encode(x)
        rel = float((e - e_ref).norm() / e_ref.norm())
        assert 0 < rel < 0.1, rel  # bf16 somewhere (not identical), still the same network
    with pytest.raises(InputError, match="TinyViT"):
        OpenVINOBackend(repvit, "bf16-mixed", cache_dir=tmp_path, threads=2)
