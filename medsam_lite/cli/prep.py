"""``medsam-lite prep``: convert datasets into normalized .npy slices + manifest.csv (see medsam_lite.prep.prep)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "prep",
        help="convert datasets into normalized .npy slices with a manifest",
        description="Convert 3D volumes (NIfTI, MHA/MHD, NRRD, DICOM series) with label maps, 2D images with masks "
        "and challenge .npz cases into imgs/*.npy (H, W, 3) uint8 + gts/*.npy label maps, manifest.csv and "
        "summary.md. SOURCE is a folder (nnU-Net/MSD imagesTr+labelsTr, challenge npz folder, folder with "
        "prep.yaml, or any folder with --images/--labels) or a YAML/JSON spec. Reruns skip finished cases.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="dataset folders or spec files")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--spec", action="append", default=[], help="YAML/JSON spec (same as giving it as a SOURCE)")
    p.add_argument("--images", help="image glob relative to each SOURCE folder (simple case without a spec)")
    p.add_argument("--labels", help="label glob (paired by case id) or template like 'labels/{case}.nii.gz'")
    p.add_argument("--label", action="append", default=[], metavar="ID=PATTERN[@THRESHOLD]",
                   help="one file per label id: voxels >= THRESHOLD (or > 0) become ID; repeat per label")
    p.add_argument("--image-suffix", default="", help="stripped from image stems to get case ids (e.g. _0000)")
    p.add_argument("--label-suffix", default="", help="stripped from label stems when pairing a glob")
    p.add_argument("--modality", help="modality (CT, MR, PET, US, XRay, Microscopy, ...); overrides detection")
    p.add_argument("--window", help="CT window: abdomen, chest, brain, bone or LEVEL,WIDTH")
    p.add_argument("--name", help="dataset name (default: the folder's name)")
    p.add_argument("--axes", default="z", help="slice axes of volumes: z (default), or e.g. z,y,x / all")
    p.add_argument("--min-pixels", type=int, default=20, help="drop labels under this many pixels in a slice")
    p.add_argument("--min-voxels", type=int, default=100, help="remove 3D components under this many voxels")
    p.add_argument("--val-fraction", type=float, default=0.05, help="fraction of cases for validation")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="parallel processes (default: min(4, CPUs))")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _label_files(items: List[str]) -> List[Tuple[int, str, Optional[float]]]:
    from ..errors import InputError

    out = []
    for item in items:
        try:
            label_id, rest = item.split("=", 1)
            pattern, _, threshold = rest.partition("@")
            out.append((int(label_id), pattern, float(threshold) if threshold else None))
        except ValueError as exc:
            raise InputError(f"--label must be ID=PATTERN[@THRESHOLD], got {item!r}") from exc
    return out


def run(args: argparse.Namespace) -> int:
    from .common import report_failures
    from medsam_lite.prep.layouts import Overrides
    from medsam_lite.prep.prep import PrepConfig, check_output_folder, prep_dataset

    from ..errors import InputError

    check_output_folder(args.output)
    sources = list(args.sources) + list(args.spec)
    if not sources:
        raise InputError("give at least one SOURCE folder or --spec file")
    axes = ("z", "y", "x") if args.axes.strip().lower() == "all" else tuple(a for a in args.axes.split(",") if a)
    overrides = Overrides(images=args.images, labels=args.labels, label_files=_label_files(args.label),
                          modality=args.modality, window=args.window, name=args.name,
                          image_suffix=args.image_suffix, label_suffix=args.label_suffix)
    config = PrepConfig(axes=axes, min_pixels=args.min_pixels, min_voxels=args.min_voxels,
                        val_fraction=args.val_fraction, seed=args.seed, workers=args.workers,
                        progress=not args.no_progress, overrides=overrides)
    result = prep_dataset(sources, args.output, config)
    print(result.summary_markdown.rstrip())
    print(f"{result.slices} slices from {result.cases} cases ({result.converted} converted now, "
          f"{result.skipped} already done) -> {result.manifest}")
    code = report_failures("prep", (f"{failure.case}: {failure.message}" for failure in result.failures))
    for line in result.errors:  # run-level (manifest / summary), not a case
        print(f"medsam-lite prep: error: {line}", file=sys.stderr)
    return 1 if result.errors else code
