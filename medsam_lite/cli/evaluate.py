"""``medsam-lite evaluate``: DSC / NSD of predictions against ground truth (challenge ``.npz`` or NIfTI / MHA / NRRD)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Score prediction .npz files (key 'segs') against ground-truth .npz files of the same name
(key 'gts'; 3D cases, whose names start with '3D', also 'spacing'), CVPR24 "MedSAM on Laptop"
style: per case, DSC and NSD averaged over the label ids present in the ground truth; NSD = 0
for a label whose DSC <= 0.2. A missing prediction scores 0 (warning); when every prediction is missing the exit status is 1. Cases that cannot be
scored (shape mismatch, unreadable file, missing key) are listed and make the exit status 1.
Writes metrics.csv, per_label.csv, summary.md and dsc_boxplot.png into --out.

NIfTI / MHA / NRRD: --pred and --gt may be two volume files (one case) or two folders of them, read
in the files' own axes and spacing (no transposing, no '3D' prefix, no 'spacing' key). Folders pair
by name: ground truth <stem>.nii.gz <-> prediction <stem>_mask.nii.gz (what 'segment' writes),
<stem>_0000_mask.* or <stem>.*, in any of the volume formats. Labels: --map PRED=GT,... maps
prediction values to ground-truth values (only the mapped ground-truth labels are scored); without
it, when the prediction has its names table (<case>.labels.json, written by 'segment' for named
boxes) and the ground truth one (<stem>.labels.json or label_names.json beside it, or --gt-names),
labels are matched by name; otherwise values are compared as they are. DICOM-SEG: a prediction
<stem>_seg.dcm is scored against a DICOM-SEG of the same series, segments matched by label."""


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate", help="DSC / NSD of predictions against ground truth (challenge .npz, NIfTI, MHA, NRRD)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, metavar="PATH",
                   help="folder of prediction .npz files (key 'segs'), or a NIfTI / MHA / NRRD file or folder")
    p.add_argument("--gt", required=True, metavar="PATH",
                   help="folder of ground-truth .npz files (key 'gts'), or a NIfTI / MHA / NRRD file or folder")
    p.add_argument("--map", dest="label_map", metavar="PRED=GT,...", default=None,
                   help="volume files: prediction label value = ground-truth label value, comma separated "
                        "(e.g. 1=1,2=5,3=7); default: by the names tables when both exist, else as is")
    p.add_argument("--gt-names", metavar="JSON", default=None,
                   help="volume files: ground-truth label names, {\"1\": \"spleen\", ...} (default: <stem>.labels.json "
                        "or label_names.json beside the ground truth)")
    p.add_argument("--out", metavar="REPORT_DIR", default=None,
                   help="report folder (default: <PRED>_evaluation, beside the prediction folder)")
    p.add_argument("--spacing-order", choices=("zyx", "xyz"), default="zyx",
                   help="order of the 'spacing' stored in 3D ground-truth files; arrays are (z, y, x). "
                        "zyx (default): use the stored spacing as is, as the challenge script does. "
                        "xyz: the stored spacing is SimpleITK (x, y, z) order (as the challenge data "
                        "preparation wrote it) and is reversed before use. The report states which was used")
    p.add_argument("--tolerance", type=float, default=2.0,
                   help="NSD tolerance: mm for 3D cases, pixels for 2D cases (default: 2.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; 0 when every case was scored, 1 when some case failed."""
    from .common import report_failures
    import warnings

    from ..evaluate import EvaluationWarning, evaluate_dirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)  # printed below, one line each
        result = evaluate_dirs(args.pred, args.gt, args.out, spacing_order=args.spacing_order,
                               tolerance=args.tolerance, label_map=args.label_map, gt_names=args.gt_names)
    for message in result.warnings:
        print(f"medsam-lite evaluate: warning: {message}", file=sys.stderr)
    print(f"{len(result.cases)} case(s), spacing order {result.spacing_order}, tolerance "
          f"{result.tolerance:g}: DSC {result.dsc_mean_over_modalities:.4f}, "
          f"NSD {result.nsd_mean_over_modalities:.4f} (mean over modalities); report in {result.out_dir}")
    failures = [str(failure) for failure in result.failures]
    if result.all_missing:
        failures.append(f"{result.pred_dir}: no prediction file for any of the {len(result.cases)} case(s) "
                        f"(wrong --pred folder?)")
    return report_failures("evaluate", failures, total=len(result.cases))
