"""The default path runs without torch: a process where ``import torch`` fails runs the Predictor on OpenVINO
and ``medsam-lite segment`` on bundled 2D and 3D cases, an interactive session (an object and a correction) and the
annotator's server on a 2D case, and its label maps equal the torch reference
(:class:`medsam_lite.propagation.Propagator` on the same backend) computed here, in a process with torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_lite.backends import create_backend, installed
from medsam_lite.resources import example_path, load_example

REPO = Path(__file__).resolve().parents[1]
CASES = ("2DBox_Microscopy_nuclei.npz", "3DBox_MR_brain_tumour.npz")

_CHILD = r'''
import importlib.abc, sys
from pathlib import Path

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked: this process must run without torch")
        return None

sys.meta_path.insert(0, NoTorch())

import numpy as np
from medsam_lite.predictor import Predictor
from medsam_lite.resources import example_path, load_example
from medsam_lite.cli.main import main

out = Path(sys.argv[1])
SESSION_FIX_Z = 16
predictor = Predictor(backend="openvino", precision="fp32")
nuclei, mr = load_example("2DBox_Microscopy_nuclei.npz"), load_example("3DBox_MR_brain_tumour.npz")
predictor.set_image(nuclei["imgs"])
labels_2d = predictor.predict(nuclei["boxes"])
labels_3d = predictor.predict_volume(mr["imgs"], mr["boxes"], progress=False)
np.savez(out / "predictor.npz", labels_2d=labels_2d, labels_3d=labels_3d)
# an interactive session (issue 29) on the default backend: an object, then a correction box
from medsam_lite.transforms import box_from_mask
session = predictor.session(mr["imgs"])
k = session.add_object(tuple(int(v) for v in mr["boxes"][0]))
session.correct(k, SESSION_FIX_Z, box=tuple(int(v) for v in box_from_mask(mr["gts"][SESSION_FIX_Z] > 0, shift=0)))
np.savez(out / "session.npz", labels=session.labels)
for name in ("2DBox_Microscopy_nuclei.npz", "3DBox_MR_brain_tumour.npz"):
    code = main(["segment", str(example_path(name)), "-o", str(out / "segment"), "--backend", "openvino:fp32",
                 "--no-progress"])
    assert code == 0, code
# the annotator's server on the default backend: its 2D label map equals the Predictor's
from fastapi.testclient import TestClient
from medsam_lite.serve.app import create_app
from medsam_lite.serve.config import ServeConfig

config = ServeConfig(roots=[example_path("2DBox_Microscopy_nuclei.npz").parent], output_root=out)
with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as client:
    case = client.post("/api/cases", json={"path": str(example_path("2DBox_Microscopy_nuclei.npz"))}).json()
    for box in nuclei["boxes"][:3]:
        r = client.post(f"/api/cases/{case['id']}/segment", json={"box": box.tolist(), "z": 0})
        assert r.status_code == 200, r.text
    served = np.frombuffer(client.get(f"/api/cases/{case['id']}/labels/0.bin").content, np.uint8)
assert np.array_equal(served.reshape(labels_2d.shape), predictor.predict(nuclei["boxes"][:3])), "server != Predictor"
assert "torch" not in sys.modules, "torch was imported"
print("ok")
'''


def _reference(backend, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The torch Propagator's label map on ``backend`` (the reference algorithm, torch twins)."""
    from medsam_lite.embedding_cache import CachedEncoder
    from medsam_lite.predictor import BackendDecoder
    from medsam_lite.propagation import Propagator

    propagator = Propagator(CachedEncoder(backend), BackendDecoder(backend), decode_batch=4)
    with torch.inference_mode():
        if boxes.shape[1] == 6:
            return propagator.segment_3d(torch.from_numpy(image), torch.from_numpy(boxes.astype(np.float64))).numpy()
        return propagator.segment_2d(torch.from_numpy(image), torch.from_numpy(boxes.astype(np.float64))).numpy()


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
def test_openvino_predictor_and_segment_run_without_torch(tmp_path: Path) -> None:
    backend = create_backend(None, "openvino", "fp32")  # converts (with torch) on first use; records the alias
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    nuclei, mr = load_example(CASES[0]), load_example(CASES[1])
    ref_2d = _reference(backend, nuclei["imgs"], nuclei["boxes"])
    ref_3d = _reference(backend, mr["imgs"], mr["boxes"])
    assert len(np.unique(ref_2d)) > 100 and ref_3d.any()
    with np.load(tmp_path / "predictor.npz") as child:
        assert np.array_equal(child["labels_2d"], ref_2d)
        assert np.array_equal(child["labels_3d"], ref_3d)
    for name, ref in zip(CASES, (ref_2d, ref_3d)):
        with np.load(tmp_path / "segment" / name) as written:
            assert np.array_equal(written["segs"], ref), name
    with np.load(tmp_path / "session.npz") as child:
        assert np.array_equal(child["labels"], _reference_session(backend, mr))


def _reference_session(backend, mr) -> np.ndarray:
    """The child's session actions on the torch segmenter (the torch Propagator) over the same backend."""
    from medsam_lite.embedding_cache import MemoryEmbeddingStore
    from medsam_lite.predictor import BackendDecoder
    from medsam_lite.segmenter import PropagatorSegmenter
    from medsam_lite.session import Session
    from medsam_lite.transforms import box_from_mask

    z = 16
    s = Session(PropagatorSegmenter(mr["imgs"], backend, BackendDecoder(backend), MemoryEmbeddingStore()))
    k = s.add_object(tuple(int(v) for v in mr["boxes"][0]))
    first = s.labels.copy()
    s.correct(k, z, box=tuple(int(v) for v in box_from_mask(mr["gts"][z] > 0, shift=0)))
    assert first.any() and not np.array_equal(first, s.labels)  # the correction changed the object
    return s.labels.copy()


def test_default_path_modules_import_no_torch() -> None:
    """``import medsam_lite``, the Predictor, ``segment``, the OpenVINO backend, the numpy twin, the embedding
    stores and the interactive session (its numpy segmenter, prompt scripts) load without torch (the torch twins and the reference Propagator stay importable beside them)."""
    code = ("import sys; import medsam_lite, medsam_lite.predictor, medsam_lite.segment, medsam_lite.backends.openvino, "
            "medsam_lite.propagation_numpy, medsam_lite.embedding_cache, medsam_lite.transforms, medsam_lite.validation, "
            "medsam_lite.session, medsam_lite.segmenter, medsam_lite.prompts; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from medsam_lite.transforms import preprocess_image_torch; assert 'torch' in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
def test_segment_with_threads_does_not_import_torch_where_torch_is_installed(tmp_path: Path) -> None:
    """``medsam-lite segment --threads N`` on the default backend sets OpenVINO's threads only: torch (installed
    here) stays unimported, as importing it just to set its pool cost a warm process ~1-5 s of start-up."""
    code = ("import sys; from medsam_lite.cli.main import main; "
            f"code = main(['segment', {str(example_path(CASES[0]))!r}, '-o', {str(tmp_path)!r}, '--no-progress', "
            "'--threads', '2', '--box', '10', '10', '60', '60']); "
            "assert code == 0, code; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False", "torch was imported"
    assert (tmp_path / CASES[0]).is_file()
