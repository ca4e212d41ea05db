"""``medsam-lite train-teacher``: train MedSAM (Swin-T encoder by default) end to end (see medsam_lite.distill.teacher)."""
from __future__ import annotations

import argparse
import os


def register(subparsers: "argparse._SubParsersAction") -> None:
    from medsam_lite.distill.options import add_training_arguments

    p = subparsers.add_parser(
        "train-teacher",
        help="train the teacher MedSAM (swin_t encoder) on prep output",
        description="Train MedSAM end to end (image encoder, prompt encoder, mask decoder) on prep output folders "
        "with Dice + BCE + IoU-MSE loss, AdamW and ReduceLROnPlateau on the validation loss. Writes last.pth / "
        "best.pth (self-describing: usable as --model / --teacher), log.csv, loss.png and run.json in OUT. "
        "Kill it any time and rerun with --resume. Several processes: torchrun --nproc_per_node N "
        "-m medsam_lite.cli.main train-teacher ...",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="prep output folder(s)")
    p.add_argument("-o", "--output", required=True, help="run folder")
    p.add_argument("--encoder", default="swin_t", help="registry image encoder (default swin_t)")
    p.add_argument("--init", default="scratch",
                   help="scratch (default) or lite_medsam: start prompt encoder + mask decoder from LiteMedSAM")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsam_lite.distill.options import TeacherConfig, config_from_args
    from medsam_lite.distill.teacher import train_teacher

    result = train_teacher(args.data, args.output, TeacherConfig(encoder=args.encoder, init=args.init),
                           config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: report once
        print(f"teacher: {result.best or result.last} (log: {result.run_dir / 'log.csv'})")
    return 0
