"""The package's shape: one top-level module, layers that point down, no import cycles.

Layers (bottom up): core (everything directly in ``medsam_lite`` plus ``encoders`` / ``backends``) <-
``prep``, ``distill``, ``export`` <- ``benchmark``, ``evaluate``, ``segment``, ``serve`` <- ``cli``.
Every import counts, also the ones inside functions (lazy imports are still dependencies).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Set

import pytest

import medsam_lite

PACKAGE = Path(medsam_lite.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[1]
MIDDLE = ("prep", "distill", "export")
APPS = ("bench", "evaluate", "segment", "serve")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """medsam_lite modules imported anywhere in the file (relative imports resolved, ``from X import y``
    counted as X.y when that is a module)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` depends on pkg.sub, not on pkg's __init__; ``from pkg import name`` on pkg
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.startswith("medsam_lite") and target != name:
                found.add(target)
    return found


def graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) - {"medsam_lite"} for name, path in modules.items()}


def layer(name: str) -> int:
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "cli":
        return 3
    if top in APPS:
        return 2
    if top in MIDDLE:
        return 1
    return 0


def test_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert len(edges) > 40  # the walk saw the whole package


def test_layers_point_down() -> None:
    edges = graph()
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a)]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))
    core = [name for name in edges if layer(name) == 0]
    assert {"medsam_lite.predictor", "medsam_lite.propagation", "medsam_lite.backends",
            "medsam_lite.transforms", "medsam_lite.normalize"} <= set(core)


def test_one_top_level_module_in_the_wheel(tmp_path: Path) -> None:
    """``pip install .`` puts only ``medsam_lite`` into site-packages, with the examples and weights as
    package data (so ``benchmark --quick`` and ``segment`` on an example work from a wheel)."""
    import shutil

    source = tmp_path / "src"  # build from a copy: pip builds in the tree and would leave build/ in the repo
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "out",
                                                               "__pycache__", ".pytest_cache", "*.onnx"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("medsam_lite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"medsam_lite"}, tops
    for data in ("medsam_lite/examples/2DBox_Microscopy_nuclei.npz", "medsam_lite/examples/3DBox_CT_abdomen.npz",
                 "medsam_lite/examples/3DBox_MR_brain_tumour.npz", "medsam_lite/weights/repvit_m0_6_lite.pth",
                 "medsam_lite/weights/lite_medsam_openvino/manifest.json",
                 "medsam_lite/weights/lite_medsam_openvino/encoder.bin"):
        assert data in names, data
    assert not any(n.startswith("medsam_lite/scripts") or "/recipe/" in n for n in names)


# ----------------------------------------------------------------------------- one concept, one place
def _trees() -> Dict[str, ast.AST]:
    return {name: ast.parse(path.read_text()) for name, path in all_modules().items()}


def test_one_embedding_store() -> None:
    """Embedding stores (a class with ``get`` and ``put``) and embedding keys live in ``embedding_cache`` only:
    every other caller goes through its stores and :class:`~medsam_lite.embedding_cache.CachedEncoder`."""
    found = []
    for name, tree in _trees().items():
        if name == "medsam_lite.embedding_cache":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                if {"get", "put"} <= methods:
                    found.append(f"{name}.{node.name} (a get / put store)")
            elif isinstance(node, ast.Attribute) and node.attr in ("blake2b",):
                found.append(f"{name}: hashlib.{node.attr} (a second key scheme)")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "embedding_key", "input_digest"):
                found.append(f"{name}: calls {getattr(node.func, 'id', getattr(node.func, 'attr', ''))} (keys are "
                             "CachedEncoder.key's)")
    assert not found, "embedding caching outside medsam_lite.embedding_cache:\n" + "\n".join(found)


def _backend_names() -> Set[str]:
    from medsam_lite.backends import backend_names

    return set(backend_names())


def test_runtime_names_are_compared_only_inside_the_backends_registry() -> None:
    """No ``x == "openvino"`` / ``x in ("torch", ...)`` outside ``medsam_lite.backends``: the registry decides."""
    names = _backend_names()
    found = []
    for name, tree in _trees().items():
        if name.startswith("medsam_lite.backends"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                values = [side] + (list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [])
                hits = [v.value for v in values if isinstance(v, ast.Constant) and v.value in names]
                if hits:
                    found.append(f"{name}:{node.lineno} compares with {hits}")
    assert not found, "runtime names compared outside medsam_lite.backends:\n" + "\n".join(found)


OUTSIDE = ("..", "docs/", "tests/", "benchmarks/", "scripts/", "runs/", "shared/")


def _default_strings(tree: ast.AST) -> List[ast.Constant]:
    """String constants in default positions: argument defaults, ``default=`` keywords, class-level values
    (dataclass fields) and the arguments of ``Path(...)`` calls."""
    out: List[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
        elif isinstance(node, ast.Call):
            out += [k.value for k in node.keywords if k.arg == "default"]
            if getattr(node.func, "id", None) == "Path":
                out += node.args
        elif isinstance(node, ast.ClassDef):
            out += [n.value for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None]
    strings = []
    for item in out:
        strings += [c for c in ast.walk(item) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return strings


def test_no_library_default_points_outside_the_package() -> None:
    """Defaults never name the repository's folders (``../shared/data``, ``docs/...``): a wheel has none."""
    found = [f"{name}:{c.lineno} {c.value!r}" for name, tree in _trees().items() for c in _default_strings(tree)
             if c.value.startswith(OUTSIDE) or "shared/data" in c.value]
    assert not found, "defaults pointing outside the package:\n" + "\n".join(found)


MAX_FUNCTION_LINES = 60
LONG_FUNCTION_EXCEPTIONS: Dict[str, str] = {}
"""``module.function`` -> why it may stay longer than :data:`MAX_FUNCTION_LINES` (none today)."""


def test_no_function_over_60_lines() -> None:
    long = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{name}.{node.name}" not in LONG_FUNCTION_EXCEPTIONS:
                    long.append(f"{name}.{node.name}: {lines} lines (line {node.lineno})")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_public_api_is_lazy() -> None:
    """``from medsam_lite import Predictor, load_model`` works, and ``import medsam_lite`` imports no torch."""
    code = ("import sys, medsam_lite; assert 'torch' not in sys.modules, 'eager torch import'; "
            "from medsam_lite import Predictor, load_model, create_backend; "
            "from medsam_lite.predictor import Predictor as P; assert Predictor is P; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
