"""``medsam-lite benchmark``: one subcommand per measurement, each with a working ``--help``; the old spellings
(no subcommand, ``--inference``) still reach the same functions; no default folder points into a checkout."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import medsam_lite
from medsam_lite.cli.main import main

PACKAGE = Path(medsam_lite.__file__).resolve().parent
MEASUREMENTS = ("speed", "inference", "gate", "fidelity", "serve", "interactive", "report")


def test_benchmark_lists_every_measurement(capsys) -> None:
    from medsam_lite.cli.benchmark import MEASUREMENTS as registered

    assert tuple(registered) == MEASUREMENTS
    with pytest.raises(SystemExit) as err:
        main(["benchmark", "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    for name in MEASUREMENTS:
        assert f"    {name} " in text, name
    assert "--inference" in text and "--quick" in text  # the old spellings are documented


@pytest.mark.parametrize("name", MEASUREMENTS)
def test_each_measurement_has_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["benchmark", name, "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: medsam-lite benchmark {name} ")
    if name in ("speed", "inference", "gate"):
        assert "-o OUT, --out OUT" in text
    if name in ("gate", "fidelity"):
        assert "MEDSAM_LITE_SHARED" in text


def test_help_imports_no_torch() -> None:
    code = ("import sys\nfrom medsam_lite.cli.main import main\n"
            "for argv in (['benchmark', '--help'], ['benchmark', 'fidelity', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("TORCH False")


def test_old_spellings_reach_the_same_functions(tmp_path, monkeypatch) -> None:
    """``benchmark --inference CONFIG ...`` is ``benchmark inference CONFIG ...``; without -o it is one line."""
    import medsam_lite.cli.benchmark as cli

    seen = []
    monkeypatch.setattr(cli, "run_inference", lambda args: seen.append(("inference", list(args.configs))) or 0)
    monkeypatch.setattr(cli, "run_speed", lambda args: seen.append(("speed", args.quick)) or 0)
    assert main(["benchmark", "--inference", "torch:fp32", "openvino:bf16", "-o", str(tmp_path)]) == 0
    assert main(["benchmark", "--quick", "-o", str(tmp_path)]) == 0
    assert seen == [("inference", ["torch:fp32", "openvino:bf16"]), ("speed", True)]
    assert main(["benchmark", "--quick"]) == 2


def test_comparison_vocabulary_is_the_registry() -> None:
    from medsam_lite.bench import ALIASES, COMPARE_DEFAULT, TORCHSCRIPT, compare_choice
    from medsam_lite.errors import InputError

    assert [compare_choice(old) for old in ("eager", "torchscript", "onnxruntime", "onnxruntime-int8")] == \
        list(COMPARE_DEFAULT)
    assert compare_choice("torch") == "torch:fp32" and compare_choice("openvino:bf16") == "openvino:bf16"
    assert set(ALIASES.values()) <= set(COMPARE_DEFAULT) and TORCHSCRIPT in COMPARE_DEFAULT
    for bad in ("tensorrt", "auto", "onnxruntime:bf16x"):
        with pytest.raises(InputError):
            compare_choice(bad)


def _folder_defaults(path: Path):
    """String defaults (function parameters and ``default=`` keywords) that look like folders of a checkout."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        values = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            values = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
        elif isinstance(node, ast.keyword) and node.arg == "default":
            values = [node.value]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path":
            values = list(node.args)
        for value in values:
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Path":
                value = value.args[0] if value.args else value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and \
                    value.value.startswith(("../", "docs/", "docs\\", "shared/")):
                yield f"{path.name}:{value.lineno}: {value.value!r}"


def test_no_default_folder_points_into_the_repository() -> None:
    files = sorted((PACKAGE / "bench").glob("*.py")) + [PACKAGE / "cli" / "benchmark.py"]
    assert len(files) >= 10
    found = [hit for path in files for hit in _folder_defaults(path)]
    assert not found, found
    assert not list((PACKAGE / "benchmark").glob("*.py"))  # the old package is gone, not shadowed
