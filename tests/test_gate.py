"""The per-CPU gate: CPU kinds from /proc/cpuinfo texts, ``auto``'s choice from agreement AND speed per kind, the
user's own measurement (``medsam-lite gate``) in the cache folder, never in the package; the committed decision."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import medsam_lite
from medsam_lite.backends import cpu, decision
from medsam_lite.backends.decision import FORMAT, GATE_FILE, auto_precision, choose, read_decision

REPO = Path(__file__).resolve().parents[1]
CPUINFO = REPO / "tests" / "fixtures" / "cpuinfo"
PACKAGE = Path(medsam_lite.__file__).resolve().parent


# ----------------------------------------------------------------------------- CPU kinds
def test_kind_of_this_machine_recorded_cpuinfo() -> None:
    info = cpu.read_cpuinfo(CPUINFO / "amd_epyc_avx2.txt")
    assert (info.vendor, info.model) == ("AuthenticAMD", "AMD EPYC")
    assert {"avx2", "fma"} <= info.flags and not any(f.startswith("avx512") for f in info.flags)
    assert cpu.cpu_kind(info) == "AuthenticAMD/avx2"


def test_kind_of_the_issue_xeon_reconstructed_cpuinfo() -> None:
    info = cpu.read_cpuinfo(CPUINFO / "intel_xeon_avx512_bf16_reconstructed.txt")
    assert info.vendor == "GenuineIntel" and "RECONSTRUCTED" in info.model
    assert cpu.cpu_kind(info) == "GenuineIntel/avx512_bf16"  # AVX-512 BF16 + VNNI, no AMX
    # the same ISA class on the other vendor is another kind (bf16 was faster there, slower on the Xeon)
    assert cpu.cpu_kind(cpu.CpuInfo("AuthenticAMD", "AMD EPYC", info.flags)) == "AuthenticAMD/avx512_bf16"


@pytest.mark.parametrize("extra, kind", [
    ({"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}, "amx"),
    ({"avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}, "avx512_bf16"),  # AMX without its bf16 / tiles
    ({"avx512f", "avx512_vnni"}, "avx512_vnni"),
    ({"avx512f"}, "avx512"),
    (set(), "avx2"),
])
def test_isa_kind_from_flags(extra, kind) -> None:
    base = cpu.read_cpuinfo(CPUINFO / "amd_epyc_avx2.txt").flags
    assert cpu.isa_kind(frozenset(base | extra)) == kind


def test_kind_without_avx2_or_without_cpuinfo(tmp_path: Path) -> None:
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm\n"
    assert cpu.cpu_kind(cpu.parse_cpuinfo(arm)) == "unknown/baseline"
    assert cpu.cpu_kind(cpu.read_cpuinfo(tmp_path / "missing")) == "unknown"
    assert cpu.this_cpu_kind() == cpu.cpu_kind(cpu.read_cpuinfo())


# ----------------------------------------------------------------------------- auto's choice
def _entry(fp32=(300.0, 10.0), **precisions: Any) -> Dict[str, Any]:
    """A decision entry: fp32's (encoder, decoder) ms and per precision (passes, encoder ms, decoder ms)."""
    return {"cpu": "test", "fp32": {"encoder_ms": fp32[0], "decoder_ms": fp32[1]},
            "precisions": {p: {"passes": ok, "encoder_ms": e, "decoder_ms": d} for p, (ok, e, d) in precisions.items()}}


def _file(path: Path, **kinds: Dict[str, Any]) -> Path:
    path.write_text(json.dumps({"format": FORMAT, "kinds": kinds}))
    return path


def test_fastest_passing_faster_precision_wins() -> None:
    both = _entry(bf16=(True, 180.0, 9.0), int8=(True, 150.0, 10.0))
    assert choose(both) == "int8"
    assert choose(_entry(bf16=(True, 180.0, 9.0), int8=(False, 100.0, 10.0))) == "bf16"  # failing never chosen
    assert choose(_entry(bf16=(True, 870.0, 10.0))) == "fp32"  # the issue's Xeon: passes, but slower
    assert choose(_entry(bf16=(True, 295.0, 9.9))) == "fp32"  # faster, but within the 5 % margin
    assert choose(_entry(bf16=(True, 200.0, 14.0))) == "fp32"  # encoder faster, decoder 40 % slower
    assert choose(_entry(**{"bf16-mixed3": (True, 100.0, 9.0)})) == "fp32"  # not a candidate of auto
    assert choose(both, native_bf16=False) == "int8"
    assert choose(_entry(bf16=(True, 150.0, 9.0), int8=(True, 180.0, 10.0)), native_bf16=False) == "int8"
    no_speed = _entry(bf16=(True, 180.0, 9.0))
    del no_speed["precisions"]["bf16"]["encoder_ms"]
    assert choose(no_speed) == "fp32"  # agreement without a measured speed is not enough
    assert choose({"precisions": {"int8": {"skipped": "why"}}, "fp32": None}) == "fp32"


def test_auto_reads_this_kind_user_first_then_committed(tmp_path: Path) -> None:
    fast = _entry(bf16=(True, 180.0, 9.0))
    committed = _file(tmp_path / "committed.json", **{"AuthenticAMD/avx512_bf16": fast})
    user = tmp_path / "user.json"
    files = (user, committed)
    assert auto_precision(files, kind="AuthenticAMD/avx512_bf16", native_bf16=True) == "bf16"  # no user file
    assert auto_precision(files, kind="GenuineIntel/avx512_bf16", native_bf16=True) == "fp32"  # unknown kind
    _file(user, **{"AuthenticAMD/avx512_bf16": _entry(bf16=(True, 400.0, 9.0))})  # the user's CPU: bf16 slower
    assert auto_precision(files, kind="AuthenticAMD/avx512_bf16", native_bf16=True) == "fp32"
    _file(user, **{"GenuineIntel/amx": _entry(bf16=(True, 90.0, 5.0))})  # the user measured another kind only
    assert auto_precision(files, kind="AuthenticAMD/avx512_bf16", native_bf16=True) == "bf16"
    assert auto_precision(files, kind="GenuineIntel/amx", native_bf16=True) == "bf16"
    user.write_text("{broken")
    assert auto_precision(files, kind="AuthenticAMD/avx512_bf16", native_bf16=True) == "bf16"
    old = {"auto_order": ["bf16"], "passed": {"bf16": True}}  # the format before CPU kinds is not read
    committed.write_text(json.dumps(old))
    assert read_decision(committed) == {} and auto_precision(files, kind="AuthenticAMD/avx512_bf16") == "fp32"


def test_user_gate_file_is_in_the_cache_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDSAM_LITE_CACHE", str(tmp_path))
    assert decision.user_gate_file() == tmp_path / "gate.json"
    assert PACKAGE not in decision.user_gate_file().parents
    _file(tmp_path / "gate.json", **{cpu.this_cpu_kind(): _entry(int8=(True, 100.0, 9.0))})
    assert auto_precision() == "int8"  # the default lookup finds the user's measurement of this kind


# ----------------------------------------------------------------------------- the committed decision
def test_committed_decision_names_this_machines_kind_and_matches_its_report() -> None:
    from medsam_lite.bench.gate import THRESHOLDS, decision as entry_of, passes

    committed = read_decision(GATE_FILE)
    assert committed, f"{GATE_FILE} is missing or not of format {FORMAT}"
    report = json.loads((REPO / "docs" / "backends" / "gate.json").read_text())
    assert report["kind"] in committed["kinds"]
    assert committed["kinds"][report["kind"]] == entry_of(report, "docs/backends/gate.md")  # the decision is the report's, unedited
    assert report["kind"] == "AuthenticAMD/avx2"  # the kind of the machine it was measured on (fixture above)
    for kind, entry in committed["kinds"].items():
        for precision, m in entry["precisions"].items():
            if "skipped" in m:
                continue
            assert m["passes"] == passes(m, entry["thresholds"]), (kind, precision)
        assert entry["thresholds"] == THRESHOLDS
        assert choose(entry) in ("fp32",) + decision.AUTO_CANDIDATES


# ----------------------------------------------------------------------------- medsam-lite gate
def _tree_state(folder: Path) -> Dict[str, Any]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if "__pycache__" not in p.parts}


def test_gate_command_writes_the_users_decision_not_the_package(tmp_path: Path, monkeypatch, capsys) -> None:
    """The command's plumbing with the measurement replaced by the committed (real) report of this machine's
    kind: the report and the entry go to the cache folder, the package is untouched, ``auto`` reads them."""
    import medsam_lite.bench.gate as bench_gate
    import medsam_lite.checkpoint as checkpoint
    from medsam_lite.cli.main import main

    report = json.loads((REPO / "docs" / "backends" / "gate.json").read_text())
    report["kind"] = cpu.this_cpu_kind()
    report["speed"]["int8"] = {**report["speed"]["fp32"], "encoder_ms": report["speed"]["fp32"]["encoder_ms"] / 2}
    report["results"]["openvino/int8"]["passes"] = True  # a decision that differs from the committed one
    seen = []
    monkeypatch.setattr(bench_gate, "run_gate", lambda model, cfg: seen.append(cfg) or report)
    monkeypatch.setattr(checkpoint, "load_model", lambda name: None)
    monkeypatch.setenv("MEDSAM_LITE_CACHE", str(tmp_path))
    before, committed = _tree_state(PACKAGE), GATE_FILE.read_bytes()
    assert main(["gate", "--quick", "--precisions", "int8"]) == 0
    assert seen[0].quick and seen[0].variants == ("openvino:fp32", "openvino:int8")
    entry = read_decision(tmp_path / "gate.json")["kinds"][cpu.this_cpu_kind()]
    assert entry["precisions"]["int8"]["passes"] is True and entry["report"] == str(tmp_path / "gate-report" / "gate.md")
    assert "'auto' now runs OpenVINO int8" in capsys.readouterr().out
    assert auto_precision() == "int8"
    assert GATE_FILE.read_bytes() == committed and _tree_state(PACKAGE) == before
    assert main(["gate", "--precisions", "bf16-mixed"]) == 2  # not a precision auto may run


@pytest.mark.slow
def test_gate_command_quick_writes_the_user_cache_only(tmp_path: Path) -> None:
    """``medsam-lite gate --quick`` end to end on the bundled examples: the report and this kind's entry land in
    $MEDSAM_LITE_CACHE, the package is untouched, and ``auto`` in a new process reads the user's entry."""
    before = _tree_state(PACKAGE)
    committed = GATE_FILE.read_bytes()
    env = {**os.environ, "MEDSAM_LITE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "medsam_lite.cli.main", "gate", "--quick", "--precisions", "bf16"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    user = read_decision(tmp_path / "cache" / "gate.json")
    entry = user["kinds"][cpu.this_cpu_kind()]
    assert entry["fp32"]["encoder_ms"] > 0 and entry["fp32"]["decoder_ms"] > 0
    assert set(entry["precisions"]) == {"bf16"}
    if cpu.native_bf16():
        assert entry["precisions"]["bf16"]["encoder_ms"] > 0
    else:
        assert "native bf16" in entry["precisions"]["bf16"]["skipped"]
    assert (tmp_path / "cache" / "gate-report" / "gate.md").is_file()
    assert f"'auto' now runs OpenVINO {choose(entry, native_bf16=cpu.native_bf16())}" in run.stdout
    probe = "from medsam_lite.backends.decision import auto_precision; print(auto_precision())"
    again = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == choose(entry, native_bf16=cpu.native_bf16())
    assert GATE_FILE.read_bytes() == committed and _tree_state(PACKAGE) == before
