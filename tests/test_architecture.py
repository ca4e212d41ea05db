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
                 "medsam_lite/examples/3DBox_MR_brain_tumour.npz", "medsam_lite/weights/repvit_m0_6_lite.pth"):
        assert data in names, data
    assert not any(n.startswith("medsam_lite/scripts") or "/recipe/" in n for n in names)
