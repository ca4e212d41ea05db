"""Pick the distillation images from prep output folders: drop near-blank slices, thin neighbours.

Neighbouring slices of a volume are near-duplicates, and the teacher costs ~2 s per image on a laptop
CPU, so the recipe keeps at most ``--per-axis`` evenly spaced informative slices per (case, axis) and
every 2D image. A slice is informative when at least ``--min-foreground`` of its pixels are brighter
than 5 % of full scale and its standard deviation is at least ``--min-std`` (uint8 units).

Writes ``OUT/manifest.csv`` (columns ``file, source, dataset, case, modality, axis, slice, split``) and
``OUT/imgs/`` holding symbolic links to the chosen ``.npy`` files, a layout that
:class:`medsam_lite.prep.dataset.ImageOnlyDataset` reads.

    python -m scripts.recipe.select_slices runs/distill_data/volumes runs/distill_data/images \\
        -o runs/distill_data/selected --per-axis 40
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from medsam_lite.prep.dataset import read_manifest
from medsam_lite.errors import InputError


def informative(image: np.ndarray, min_foreground: float, min_std: float) -> bool:
    """True when an (H, W[, 3]) uint8 slice is not (almost) blank."""
    grey = image if image.ndim == 2 else image.mean(axis=-1)
    return float((grey > 12).mean()) >= min_foreground and float(grey.std()) >= min_std


def select(sources: Sequence[Path], per_axis: int, min_foreground: float, min_std: float) -> List[Dict[str, str]]:
    """Rows of the chosen slices (``source`` = the prep folder each file lives in)."""
    groups: Dict[Tuple[str, str, str, str], List[Dict[str, str]]] = {}
    for src in sources:
        if not (src / "manifest.csv").is_file():
            raise InputError("no manifest.csv (run medsam-lite prep first)", src)
        for row in read_manifest(src / "manifest.csv"):
            image = np.load(src / "imgs" / row["file"], allow_pickle=False)
            if informative(image, min_foreground, min_std):
                groups.setdefault((str(src), row["dataset"], row["case"], row["axis"]), []).append(
                    {**row, "source": str(src)})
    chosen: List[Dict[str, str]] = []
    for rows in groups.values():
        rows.sort(key=lambda r: int(r.get("slice") or 0))
        if len(rows) > per_axis:
            rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, per_axis).round()]
        chosen.extend(rows)
    return chosen


def write_subset(rows: Sequence[Dict[str, str]], out: Path) -> None:
    """Links + manifest; the manifest is written last (temp name, then rename)."""
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    columns = ["file", "source", "dataset", "case", "modality", "axis", "slice", "split"]
    for row in rows:
        link = out / "imgs" / row["file"]
        if not link.exists():
            os.symlink(os.path.relpath(Path(row["source"]) / "imgs" / row["file"], link.parent), link)
    tmp = out / ".manifest.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "split": "train"})
    tmp.replace(out / "manifest.csv")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", type=Path, help="prep output folders")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--per-axis", type=int, default=40, help="most slices kept per (case, axis)")
    p.add_argument("--min-foreground", type=float, default=0.05)
    p.add_argument("--min-std", type=float, default=8.0)
    args = p.parse_args(argv)
    rows = select(args.sources, args.per_axis, args.min_foreground, args.min_std)
    write_subset(rows, args.out)
    counts: Dict[str, int] = {}
    for r in rows:
        counts[f"{r['dataset']} {r['axis']}"] = counts.get(f"{r['dataset']} {r['axis']}", 0) + 1
    for k, v in sorted(counts.items()):
        print(f"{k}: {v}")
    print(f"total: {len(rows)} images -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
