"""Join the ``log.csv`` files of consecutive distillation stages into one log and loss curve.

A multi-stage recipe (stage 2 started with ``--init-student`` from stage 1's ``student.pth``, at a
lower learning rate) leaves one run folder per stage, each with its own epoch count starting at 1.
This writes ``OUT/log.csv`` (column ``stage`` first, then the per-run columns, epochs numbered
cumulatively) and ``OUT/loss.png``.

Usage::

    python -m scripts.recipe.join_logs runs/student_cpu runs/student_cpu2 runs/student_cpu3 -o docs/distill
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from medsam_lite.errors import InputError

from medsam_lite.distill.loop import LOG_COLUMNS, plot_losses, read_log, write_log

PathLike = Union[str, Path]


def join_logs(run_dirs: Sequence[PathLike]) -> List[Dict[str, object]]:
    """Rows of all stages in order: ``stage`` (1-based), cumulative ``epoch``, the other columns as
    floats (``val_loss`` None when empty)."""
    rows: List[Dict[str, object]] = []
    for stage, run_dir in enumerate(run_dirs, start=1):
        path = Path(run_dir) / "log.csv"
        if not path.is_file():
            raise InputError("no log.csv in this run folder", path)
        for row in read_log(path):
            out: Dict[str, object] = {"stage": stage, "epoch": len(rows) + 1}
            for key in LOG_COLUMNS[1:]:
                value = row.get(key, "")
                out[key] = float(value) if value not in ("", None) else None
            rows.append(out)
    return rows


def write_joined(run_dirs: Sequence[PathLike], out_dir: PathLike, title: str = "distillation, all stages") -> Path:
    """Write ``out_dir/log.csv`` and ``out_dir/loss.png`` for the stages; returns the csv path."""
    rows = join_logs(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_log(out / "log.csv", rows, ("stage",) + tuple(LOG_COLUMNS))
    plot_losses(out / "loss.png", rows, title)
    return out / "log.csv"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders of the stages, in training order")
    p.add_argument("-o", "--output", required=True, help="folder for log.csv and loss.png")
    args = p.parse_args(argv)
    try:
        path = write_joined(args.runs, args.output)
    except InputError as exc:
        p.exit(2, f"error: {exc}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
