"""The benchmark report: our default whole process against the LiteMedSAM baseline, where the time goes, install
size and first-mask time, on a named CPU (``medsam-lite benchmark report -o DIR``: report.json / report.md).

One run measures, on this machine:

* **machine**: the CPU's model, vendor and ISA class (:mod:`medsam_lite.backends.cpu`: the key the gate decision
  is stored under), the threads given to every runtime, the load averages before and after each case (a shared
  machine moves absolute seconds; ratios of interleaved runs move less);
* **whole process, interleaved**: ``medsam-lite segment CASE`` with defaults (ours) and ``medsam-lite segment
  --baseline CASE`` (the LiteMedSAM algorithm, :mod:`medsam_lite.baseline`) run alternately, ``repeats`` pairs
  (the order flips every pair), each a fresh process (:func:`medsam_lite.bench.inference.whole_process`: wall
  seconds from launch to exit, peak RSS from ``VmHWM``); the ratio is baseline median / ours median, with the
  range of the per-pair ratios beside it;
* **breakdown**: one more process per path, instrumented (:mod:`medsam_lite.bench.breakdown`): start-up,
  I/O, pre/post-processing, encoder, decoder (and the interpreter's exit, the rest of the measured total);
* **first mask, cold and warm**: ``medsam-lite segment`` on a one-box 2D case with an empty user cache
  (``MEDSAM_LITE_CACHE`` a new folder: OpenVINO compiles, the packaged IR is hashed) and then again with that
  cache (what a user sees every day);
* **install**: the venv size and package count of a base ``pip install .`` as recorded by
  ``scripts/check_fresh_install.py`` (its JSON summary, given with ``--install-record``; the report states its
  date), or ``not measured``.

Cases (:func:`report_cases`): from :func:`medsam_lite.bench.cases.inference_cases` (the cases of the earlier
inference benchmark) the bundled 5-organ CT, its 133 x 512 x 512 resampling (6 boxes: ours only by default, the
memory check), the MR tumour (1 box), the 125-nuclei 2D image, plus the nuclei image with its first box alone
(the one-box 2D case). Quick mode: that one-box case and the quick MR slices (tests).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from .cases import Case, inference_cases

RSS_LIMIT_MIB = 2048.0
"""Peak RSS our default whole process must stay under on the 133 x 512 x 512 CT (issue 27)."""

BREAKDOWN_PARTS = ("startup_s", "io_s", "prepost_s", "encoder_s", "decoder_s")
"""The measured parts of a whole process, in the order a process spends them (:mod:`.breakdown`)."""

DEFAULT_CASES = ("3d_ct_5organs", "2d_nuclei_1box", "3d_mr_1box", "2d_nuclei_125boxes", "3d_ct_133x512x512_6boxes")
"""The report's cases in run order (the long CT first, while the run is freshest in the budget)."""
HEAVY_CALLS = 50
"""A case whose baseline makes more encoder calls than this gets ``heavy_repeats`` pairs."""

ONE_BOX = "2d_nuclei_1box"
"""The one-box 2D case: whole-process ratio and cold / warm first-mask time."""


@dataclass
class ReportConfig:
    """Settings of one report run.

    Attributes:
        model: pretrained name or checkpoint path of both paths.
        quick: the quick cases (tests).
        cases: case names (None: :data:`DEFAULT_CASES`, or every quick case).
        repeats: interleaved (ours, baseline) whole-process pairs per case.
        heavy_repeats: pairs on a case whose baseline makes more than :data:`HEAVY_CALLS` encoder calls (None:
            ``repeats``): the baseline of the 5-organ CT runs minutes a process.
        threads: ``--threads`` of every child process.
        baseline_max_calls: cases whose baseline needs more encoder calls get ours only (None: no limit).
        cold_warm: (cold, warm) first-mask pairs on the one-box case (0: skip).
        install_record: ``scripts/check_fresh_install.py``'s JSON summary (None: not measured).
    """

    model: str = "lite_medsam"
    quick: bool = False
    cases: Optional[Sequence[str]] = None
    repeats: int = 3
    heavy_repeats: Optional[int] = None
    threads: int = 2
    baseline_max_calls: Optional[int] = 200
    cold_warm: int = 2
    install_record: Optional[Path] = None
    breakdown: bool = True


def report_cases(quick: bool, work: Path) -> List[Case]:
    """The cases of the module docstring, each with a challenge .npz ``path`` (generated ones written to ``work``)."""
    from ..resources import load_example

    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    one = Case(ONE_BOX, "2d", nuclei["imgs"], nuclei["boxes"][:1], nuclei["gts"],
               "bundled microscopy nuclei 512x512, its first box alone")
    one.path = work / f"2DBox_{ONE_BOX}.npz"
    np.savez_compressed(one.path, imgs=one.image, boxes=one.boxes)
    cases = [c for c in inference_cases(quick, work) if not c.name.startswith("2d_nuclei_1024")]
    return cases + [one]


def _select(cfg: ReportConfig, work: Path) -> List[Case]:
    cases = report_cases(cfg.quick, work)
    wanted = list(cfg.cases) if cfg.cases else ([c.name for c in cases] if cfg.quick else list(DEFAULT_CASES))
    unknown = sorted(set(wanted) - {c.name for c in cases})
    if unknown:
        raise InputError(f"unknown case(s) {', '.join(unknown)}; this mode has {', '.join(c.name for c in cases)}")
    by_name = {c.name: c for c in cases}
    return [by_name[name] for name in wanted]  # in the order asked


def baseline_calls(case: Case) -> int:
    """Encoder calls the baseline makes on ``case`` (one per 2D image; the boxes' z-ranges summed in 3D)."""
    if case.kind == "2d":
        return 1
    from ..baseline import baseline_encoder_calls_volume

    return baseline_encoder_calls_volume(case.image.shape, case.boxes)


def machine(threads: int) -> Dict[str, Any]:
    """CPU model / vendor / ISA class / gate key, threads, library versions, load averages now."""
    import platform

    from ..backends.cpu import cpu_kind, cpu_name, isa_kind, read_cpuinfo

    info = read_cpuinfo()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    versions: Dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("openvino", "torch", "cv2"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception:  # not installed: the report says so
            versions[module] = "not installed"
    return {"cpu": cpu_name(), "vendor": info.vendor, "isa_kind": isa_kind(info.flags), "cpu_kind": cpu_kind(info),
            "isa_flags": [f for f in wanted if f in info.flags], "logical_cpus": os.cpu_count(), "threads": threads,
            "platform": platform.platform(), "versions": versions, "load_average_start": list(os.getloadavg())}


def _whole(case: Case, baseline: bool, cfg: ReportConfig, work: Path,
           env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """One whole ``medsam-lite segment`` process on ``case``: defaults (ours) or ``--baseline``."""
    from .inference import whole_process

    out = work / ("out_base" if baseline else "out_ours")
    return whole_process(case, ["--model", cfg.model] + (["--baseline"] if baseline else []), out, cfg.threads,
                         env=env)


def interleaved(case: Case, cfg: ReportConfig, work: Path, with_baseline: bool,
                log: Callable[[str], None]) -> Dict[str, Any]:
    """``cfg.repeats`` (``heavy_repeats`` on a heavy case) whole-process pairs of ours and the baseline, alternating
    which runs first."""
    ours: List[Dict[str, Any]] = []
    base: List[Dict[str, Any]] = []
    heavy = cfg.heavy_repeats is not None and baseline_calls(case) > HEAVY_CALLS
    for r in range(cfg.heavy_repeats if heavy else cfg.repeats):
        order = [False, True] if r % 2 == 0 else [True, False]
        for baseline in order:
            if baseline and not with_baseline:
                continue
            run = _whole(case, baseline, cfg, work)
            (base if baseline else ours).append(run)
            log(f"    pair {r + 1}: {'baseline' if baseline else 'ours':8s} {run['seconds']:7.2f} s, "
                f"peak RSS {run['peak_rss_mib']:.0f} MiB")
    row: Dict[str, Any] = {}
    for name, runs in (("ours", ours), ("baseline", base)):
        if runs:
            row.update({f"{name}_s": [r["seconds"] for r in runs], f"{name}_cpu_s": [r["cpu_seconds"] for r in runs],
                        f"{name}_peak_rss_mib": max(r["peak_rss_mib"] for r in runs), f"{name}_command": runs[0]["command"]})
    if base:
        row["ratio"] = statistics.median(row["baseline_s"]) / statistics.median(row["ours_s"])
        row["pair_ratios"] = [b / o for b, o in zip(row["baseline_s"], row["ours_s"])]
        row["cpu_ratio"] = statistics.median(row["baseline_cpu_s"]) / statistics.median(row["ours_cpu_s"])
    return row


def breakdown_run(case: Case, baseline: bool, cfg: ReportConfig, work: Path) -> Dict[str, Any]:
    """One instrumented process (:mod:`.breakdown`): its parts, its measured total and the exit (the rest)."""
    out = work / ("bd_base" if baseline else "bd_ours")
    cmd = [sys.executable, "-m", "medsam_lite.bench.breakdown", str(case.path), str(out), "--threads",
           str(cfg.threads), "--model", cfg.model] + (["--baseline"] if baseline else [])
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launch = time.time()
    start = time.perf_counter()
    proc = subprocess.run(cmd + ["--launch", repr(launch)], capture_output=True, text=True)
    total = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["total_s"] = total
    row["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row["exit_s"] = total - (row.pop("end_s") - launch)
    return row


def first_mask(case: Case, cfg: ReportConfig, work: Path, log: Callable[[str], None]) -> Dict[str, Any]:
    """``cfg.cold_warm`` (cold, warm) pairs of whole ``medsam-lite segment`` processes on ``case``: cold with a new
    empty cache root (``MEDSAM_LITE_CACHE``), warm right after with that cache."""
    runs: Dict[str, List[Dict[str, Any]]] = {"cold": [], "warm": []}
    for i in range(cfg.cold_warm):
        with tempfile.TemporaryDirectory(prefix="cold-cache-", dir=work) as cache:
            env = {**os.environ, "MEDSAM_LITE_CACHE": cache}
            for kind in ("cold", "warm"):
                runs[kind].append(_whole(case, False, cfg, work, env))
        log(f"    first mask {i + 1}: cold {runs['cold'][-1]['seconds']:.2f} s, warm {runs['warm'][-1]['seconds']:.2f} s")
    return {"case": case.name, **{f"{k}_s": [r["seconds"] for r in v] for k, v in runs.items()},
            **{f"{k}_cpu_s": [r["cpu_seconds"] for r in v] for k, v in runs.items()}}


def install_section(record: Optional[Path]) -> Dict[str, Any]:
    """The install-size facts of a ``scripts/check_fresh_install.py`` summary (``{"measured": False}`` without)."""
    if record is None:
        return {"measured": False}
    try:
        data = json.loads(Path(record).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable install record ({type(exc).__name__})", record) from None
    keys = ("venv_mb", "packages", "heavy_packages", "install_seconds", "failures", "date", "command")
    return {"measured": True, **{k: data[k] for k in keys if k in data},
            "first_run_s": {k: v.get("seconds") for k, v in data.get("cases", {}).items()}}


def run_case(case: Case, cfg: ReportConfig, work: Path, log: Callable[[str], None]) -> Dict[str, Any]:
    """Everything the report measures on one case."""
    calls = baseline_calls(case)
    with_baseline = cfg.baseline_max_calls is None or calls <= cfg.baseline_max_calls
    log(f"  case {case.name} ({'x'.join(map(str, case.image.shape))}, {len(case.boxes)} boxes, baseline {calls} "
        f"encoder calls{'' if with_baseline else ': skipped'}), load {os.getloadavg()[0]:.2f}")
    entry: Dict[str, Any] = {"name": case.name, "kind": case.kind, "shape": list(case.image.shape),
                             "n_boxes": int(len(case.boxes)), "note": case.note, "baseline_encoder_calls": calls,
                             "load_average_before": list(os.getloadavg())}
    if not with_baseline:
        entry["baseline_skipped"] = f"{calls} encoder calls > {cfg.baseline_max_calls}"
    entry["process"] = interleaved(case, cfg, work, with_baseline, log)
    if cfg.breakdown:
        entry["breakdown"] = {"ours": breakdown_run(case, False, cfg, work)}
        if with_baseline:
            entry["breakdown"]["baseline"] = breakdown_run(case, True, cfg, work)
    entry["load_average_after"] = list(os.getloadavg())
    return entry


def run_report(cfg: ReportConfig, log: Callable[[str], None] = print,
               checkpoint: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Run the report's measurements (module docstring); returns ``report.json``'s content. ``checkpoint`` gets the
    result so far after the first-mask runs and after each case (a long run that is stopped keeps its cases)."""
    if cfg.repeats < 1 or cfg.threads < 1 or cfg.cold_warm < 0 or (cfg.heavy_repeats or 1) < 1:
        raise InputError("--repeats, --heavy-repeats and --threads must be at least 1, --cold-warm at least 0")
    result: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(cfg.threads),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
                              "install": install_section(cfg.install_record), "cases": []}
    with tempfile.TemporaryDirectory(prefix="medsam-report-") as tmp:
        work = Path(tmp)
        cases = _select(cfg, work)
        one = next((c for c in cases if c.name == ONE_BOX), None)
        if one is not None and cfg.cold_warm:
            result["first_mask"] = first_mask(one, cfg, work, log)
        for case in cases:
            result["cases"].append(run_case(case, cfg, work, log))
            result["machine"]["load_average_end"] = list(os.getloadavg())
            _rss_check(result)
            if checkpoint is not None:
                checkpoint(result)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def _rss_check(result: Dict[str, Any]) -> None:
    """``result["rss_check"]``: our peak RSS on the 133 x 512 x 512 CT against :data:`RSS_LIMIT_MIB` (when run)."""
    big = next((c for c in result["cases"] if c["name"].startswith("3d_ct_133x512x512")), None)
    if big is not None:
        peak = big["process"]["ours_peak_rss_mib"]
        result["rss_check"] = {"case": big["name"], "peak_rss_mib": peak, "limit_mib": RSS_LIMIT_MIB,
                               "passed": peak < RSS_LIMIT_MIB}

def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _fmt_runs(values: Sequence[float]) -> str:
    return f"{_med(values):.2f} ({', '.join(f'{v:.1f}' for v in values)})"


def _machine_lines(result: Dict[str, Any]) -> List[str]:
    m = result["machine"]
    return [f"Measured {result['date']} on **{m['cpu']}** ({m['vendor']}, ISA class `{m['isa_kind']}`, gate key "
            f"`{m['cpu_kind']}`; flags: {', '.join(m['isa_flags']) or 'none of the listed'}), {m['logical_cpus']} "
            f"logical CPUs, {m['threads']} threads per process. Versions: "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
            f"Load averages (1 / 5 / 15 min): {_load(m['load_average_start'])} at the start, "
            f"{_load(m['load_average_end'])} at the end; per case below. The machine was shared: absolute "
            "seconds move with the load, the ratios come from interleaved pairs of fresh processes.", ""]


def _load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _process_lines(result: Dict[str, Any]) -> List[str]:
    lines = ["## Whole process: `medsam-lite segment` (defaults) against `segment --baseline`", "",
             "Interleaved pairs of fresh processes (the order flips every pair); seconds from launch to exit, "
             "median (each run). Ratio: baseline median / ours median, [range of the per-pair ratios]. CPU s: the "
             "process's user + system seconds (median), which the other jobs of a shared machine move less than "
             "the wall time.", "",
             "| case | boxes | baseline s | ours s | ratio | CPU s baseline / ours (ratio) | peak RSS MiB ours / "
             "baseline | load before / after |", "|---|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        p = c["process"]
        if "ratio" in p:
            base, ratio = _fmt_runs(p["baseline_s"]), (f"**{p['ratio']:.1f}x** [{min(p['pair_ratios']):.1f}-"
                                                        f"{max(p['pair_ratios']):.1f}]")
            rss = f"{p['ours_peak_rss_mib']:.0f} / {p['baseline_peak_rss_mib']:.0f}"
            cpu = f"{_med(p['baseline_cpu_s']):.1f} / {_med(p['ours_cpu_s']):.1f} ({p['cpu_ratio']:.1f}x)"
        else:
            base, ratio, rss = f"skipped: {c.get('baseline_skipped', '')}", "-", f"{p['ours_peak_rss_mib']:.0f} / -"
            cpu = f"- / {_med(p['ours_cpu_s']):.1f}"
        lines.append(f"| {c['name']} | {c['n_boxes']} | {base} | {_fmt_runs(p['ours_s'])} | {ratio} | {cpu} | {rss} | "
                     f"{c['load_average_before'][0]:.1f} / {c['load_average_after'][0]:.1f} |")
    lines += [""] + [f"- {c['name']}: {c['note']}" for c in result["cases"]] + [""]
    return lines


def _breakdown_lines(result: Dict[str, Any]) -> List[str]:
    lines = ["## Where the time goes", "",
             "One instrumented process per path (`python -m medsam_lite.bench.breakdown`: the predictor `segment` "
             "builds, run through `segment_paths`). Start-up: launch to predictor ready (interpreter, imports, "
             "building the backend); I/O: reading the case, writing the mask; pre/post: the predictor's work outside "
             "the encoder and decoder calls; exit: the interpreter's exit, the rest of the measured total. Seconds "
             "(share of the total).", "",
             "| case | path | total s (CPU s) | start-up | I/O | pre/post | encoder (calls) | decoder (calls) | exit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        for path, row in c.get("breakdown", {}).items():
            total = row["total_s"]

            def cell(key: str, calls: str = "") -> str:
                extra = f" ({row[calls]})" if calls else ""
                return f"{row[key]:.2f} ({100 * row[key] / total:.0f} %){extra}"

            lines.append(f"| {c['name']} | {path} | {total:.2f} ({row['cpu_s']:.1f}) | {cell('startup_s')} | {cell('io_s')} | "
                         f"{cell('prepost_s')} | {cell('encoder_s', 'encoder_calls')} | "
                         f"{cell('decoder_s', 'decoder_calls')} | {cell('exit_s')} |")
    return lines + [""]


def _other_lines(result: Dict[str, Any]) -> List[str]:
    lines: List[str] = []
    fm = result.get("first_mask")
    if fm:
        lines += ["## First mask, cold and warm", "",
                  f"`medsam-lite segment` on {fm['case']} (one box), whole processes. Cold: a new empty user cache "
                  "(`MEDSAM_LITE_CACHE`; OpenVINO compiles the packaged IR, its files are hashed); warm: the same "
                  "command again with that cache.", "",
                  f"- cold: {_fmt_runs(fm['cold_s'])} s (CPU {_fmt_runs(fm['cold_cpu_s'])} s)",
                  f"- warm: {_fmt_runs(fm['warm_s'])} s (CPU {_fmt_runs(fm['warm_cpu_s'])} s)", ""]
    inst = result["install"]
    lines += ["## Install", ""]
    if inst.get("measured"):
        lines += [f"Base install (`pip install .` into a fresh venv, `scripts/check_fresh_install.py`, recorded "
                  f"{inst.get('date', 'undated')}): **{inst.get('venv_mb', 0) / 1024:.2f} GB** venv "
                  f"({inst.get('venv_mb')} MiB), {inst.get('packages')} packages, heavy packages: "
                  f"{', '.join(inst.get('heavy_packages') or []) or 'none'} (no torch, no CUDA); install took "
                  f"{inst.get('install_seconds')} s; first runs in it (cold cache): "
                  + ", ".join(f"{k} {v} s" for k, v in inst.get("first_run_s", {}).items())
                  + f"; failures: {inst.get('failures') or 'none'}.", ""]
    else:
        lines += ["Not measured in this run (give `--install-record` with `scripts/check_fresh_install.py`'s JSON).",
                  ""]
    rss = result.get("rss_check")
    if rss:
        lines += ["## Memory", "", f"Peak RSS of `medsam-lite segment` (defaults) on {rss['case']}: "
                  f"{rss['peak_rss_mib']:.0f} MiB, limit {rss['limit_mib']:.0f} MiB: "
                  f"{'passed' if rss['passed'] else '**FAILED**'}.", ""]
    return lines


def markdown(result: Dict[str, Any]) -> str:
    """``report.md``: the tables of ``result`` (:func:`run_report`)."""
    lines = ["# medsam-lite benchmark report", ""] + _machine_lines(result) + _process_lines(result)
    return "\n".join(lines + _breakdown_lines(result) + _other_lines(result))


def write_report(out: Path, result: Dict[str, Any]) -> List[Path]:
    """Write ``report.json`` and ``report.md`` into ``out`` (atomically); returns their paths."""
    from ..io_utils import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=str))
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(markdown(result))
    return paths
