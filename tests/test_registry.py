"""Every registry encoder x every backend gives the Predictor's label map (as timm's tests/test_models.py
covers its whole registry), and every pretrained entry loads with its SHA-256 checked.

Models are random (seeded) instances of each registry encoder with segment-anything's decoder: the
comparison is between runtimes on the same weights, so the weights need not be trained. Inputs are
crops of the bundled real cases (2D nuclei, 3D CT slab) to keep the matrix quick.

* ``torchscript``: the exported file runs the same algorithm (:class:`medsam_lite.propagation.Propagator`)
  and must give the identical label map.
* ``onnxruntime`` / ``openvino`` (fp32): other runtimes; pixel agreement >= 0.999 with the eager map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from medsam_lite.backends import installed
from medsam_lite.encoders import ENCODERS
from medsam_lite.model import MedSAMLite, build_medsam
from medsam_lite.predictor import Predictor
from medsam_lite.resources import load_example

RUNTIMES = ["torchscript", "onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def jobs() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    image = np.ascontiguousarray(nuclei["imgs"][:160, :200])
    boxes = nuclei["boxes"][(nuclei["boxes"][:, 2] < 200) & (nuclei["boxes"][:, 3] < 160)][:3].astype(np.float64)
    ct = load_example("3DBox_CT_abdomen.npz")
    box = ct["boxes"][1].astype(np.float64).copy()
    lo = int((box[5] - box[2]) / 2 + box[2]) - 1
    volume = np.ascontiguousarray(ct["imgs"][lo:lo + 3])
    box[2], box[5] = 0, 2
    return {"2d": (image, boxes), "3d": (volume, box[None])}


_MODELS: Dict[str, MedSAMLite] = {}


def random_model(encoder: str) -> MedSAMLite:
    if encoder not in _MODELS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _MODELS[encoder] = build_medsam(encoder).eval()
    return _MODELS[encoder]


def run_predictor(predictor: Predictor, jobs) -> Dict[str, np.ndarray]:
    image, boxes = jobs["2d"]
    predictor.set_image(image)
    volume, boxes3 = jobs["3d"]
    return {"2d": predictor.predict(boxes), "3d": predictor.predict_volume(volume, boxes3, progress=False)}


def eager(model: MedSAMLite, jobs) -> Dict[str, np.ndarray]:
    return run_predictor(Predictor(model, backend="torch"), jobs)


def run_runtime(runtime: str, model: MedSAMLite, jobs, tmp_path: Path) -> Dict[str, np.ndarray]:
    if runtime == "torchscript":
        from medsam_lite.export.torchscript import export_torchscript

        module = torch.jit.load(str(export_torchscript(model, tmp_path / "p.pt")))
        image, boxes = jobs["2d"]
        volume, boxes3 = jobs["3d"]
        return {"2d": module.segment_2d(torch.from_numpy(image), torch.from_numpy(boxes)).numpy(),
                "3d": module.segment_3d(torch.from_numpy(volume), torch.from_numpy(boxes3)).numpy()}
    if not installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    from medsam_lite.backends import make_backend

    return run_predictor(Predictor(backend=make_backend(model, runtime, "fp32", cache_dir=tmp_path / "cache")), jobs)


FAST_ON_EVERY_RUNTIME = ("tiny_vit", "repvit_m0_6")
"""Encoders the default suite runs on every runtime (the teacher's family, the shipped student); every other
encoder runs on ONNX Runtime there and on every runtime under ``-m slow`` (each conversion costs 10-25 s on 2 cores)."""


def _encoder_runtime_params():
    for encoder in sorted(ENCODERS):
        for runtime in RUNTIMES:
            fast = encoder in FAST_ON_EVERY_RUNTIME or runtime in ("torch", "onnxruntime")
            yield pytest.param(encoder, runtime, marks=() if fast else pytest.mark.slow, id=f"{encoder}-{runtime}")


@pytest.mark.parametrize("encoder, runtime", list(_encoder_runtime_params()))
def test_every_encoder_on_every_backend(encoder: str, runtime: str, jobs, tmp_path: Path) -> None:
    model = random_model(encoder)
    reference = eager(model, jobs)
    got = run_runtime(runtime, model, jobs, tmp_path)
    for kind in ("2d", "3d"):
        ref, out = reference[kind], got[kind]
        assert out.shape == ref.shape and out.dtype == np.uint8, (encoder, runtime, kind)
        if runtime == "torchscript":
            assert np.array_equal(out, ref), (encoder, kind, int((out != ref).sum()))
        else:
            assert float((out == ref).mean()) >= 0.999, (encoder, runtime, kind, float((out == ref).mean()))


def test_every_pretrained_entry_loads_with_its_sha256() -> None:
    """Each registry name resolves to a file whose SHA-256 is recorded and checked before loading."""
    from medsam_lite import checkpoint as ck

    for name in ck.PRETRAINED:
        path, expected = ck.pretrained_file(name)
        assert ck.sha256_of(path) == expected, name
        model = ck.load_model(name)
        assert isinstance(model, MedSAMLite) and not model.training, name


def test_pretrained_sha_mismatch_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A pretrained file whose bytes changed is refused with one line naming it."""
    from medsam_lite import checkpoint as ck
    from medsam_lite.errors import InputError

    path, _ = ck.pretrained_file("repvit_m0_6_lite")
    copy = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(ck, "STUDENT_PATH", copy)
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        ck.load_model("repvit_m0_6_lite")


# ----------------------------------------------------------------------------- the backend registry
def test_backend_vocabulary_is_one_and_checked() -> None:
    """``BACKEND[:PRECISION]`` parses the same everywhere; unknown names, precisions a backend cannot run and
    conflicting precisions are one-line InputErrors; every spelling in ``choices()`` parses."""
    from medsam_lite import backends
    from medsam_lite.errors import InputError

    assert backends.parse_choice("openvino:bf16") == ("openvino", "bf16")
    assert backends.parse_choice("torch") == ("torch", "auto")
    assert backends.parse_choice("onnxruntime", "int8") == ("onnxruntime", "int8")
    assert backends.format_choice(*backends.parse_choice("openvino:int8")) == "openvino:int8"
    for spelling in backends.choices():
        name, precision = backends.parse_choice(spelling)
        assert name == "auto" or name in backends.backend_names()
    assert set(backends.backend_names()) == {"torch", "onnxruntime", "openvino"}
    for bad, message in (("tensorrt", "unknown backend"), ("openvino:fp8", "unknown precision")):
        with pytest.raises(InputError, match=message):
            backends.parse_choice(bad)
    with pytest.raises(InputError, match="names precision"):
        backends.parse_choice("openvino:bf16", "int8")
    with pytest.raises(InputError, match="runs fp32, not 'int8'"):
        backends.resolve("torch:int8")
    assert backends.is_reference("auto") and backends.is_reference("torch:fp32")
    assert not backends.is_reference("openvino") and not backends.is_reference("auto", "bf16")
    with pytest.raises(ValueError):
        backends.register_backend("torch", "torch", "medsam_lite.backends.torch:TorchBackend", ("fp32",))


def test_auto_prefers_the_installed_backend_of_highest_preference(monkeypatch) -> None:
    from medsam_lite import backends

    monkeypatch.setattr(backends, "installed", lambda name: name in ("torch", "onnxruntime"))
    assert backends.resolve("auto", "fp32") == ("onnxruntime", "fp32")
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    assert backends.resolve("auto") == ("torch", "fp32")


def test_create_backend_uses_each_entry_point(monkeypatch) -> None:
    """A module goes to ``from_model``; a name to ``from_weights`` when the class has one (OpenVINO's warm start),
    else through ``load_model`` to ``from_model``: the registry, not the caller, knows the runtime."""
    from medsam_lite import backends

    calls = []

    class WithWeights:
        @classmethod
        def from_weights(cls, name, precision, cache_dir=None, threads=None):
            calls.append(("from_weights", name, precision))
            return cls()

        @classmethod
        def from_model(cls, model, precision, cache_dir=None, threads=None):
            calls.append(("from_model", type(model).__name__, precision))
            return cls()

    monkeypatch.setattr(backends.BackendEntry, "load", lambda self: WithWeights)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    model = random_model("repvit_m0_6")
    backends.create_backend("lite_medsam", "openvino", "fp32")
    backends.create_backend(model, "onnxruntime:int8")
    assert calls == [("from_weights", "lite_medsam", "fp32"), ("from_model", "MedSAMLite", "int8")]
