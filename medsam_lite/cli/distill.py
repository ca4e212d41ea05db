"""``medsam-lite distill``: distil a teacher's image encoder into a student encoder (see medsam_lite.distill.student)."""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medsam_lite.distill.options import DistillConfig


def register(subparsers: "argparse._SubParsersAction") -> None:
    from medsam_lite.distill.options import VAL_SPLIT_CHOICES, DistillConfig, add_training_arguments

    d = DistillConfig()

    p = subparsers.add_parser(
        "distill",
        help="distil a teacher image encoder into a small student (repvit_m0_6)",
        description="Train a student image encoder to reproduce the teacher's (B, 256, 64, 64) image embeddings "
        "(MSE) on images of prep output folders; the teacher runs frozen in fp32. Writes OUT/student.pth (student "
        "encoder + the teacher's prompt encoder and mask decoder), last.pth / best.pth, log.csv, loss.png, "
        "run.json. With --cache-dir the teacher embeddings are computed once (resumable) and reused. Kill it any "
        "time and rerun with --resume. Several processes: torchrun --nproc_per_node N -m medsam_lite.cli.main "
        "distill ...",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="prep output folder(s) (images only needed)")
    p.add_argument("-o", "--output", required=True, help="run folder")
    p.add_argument("--teacher", default=d.teacher,
                   help="teacher: pretrained name (lite_medsam) or checkpoint path, e.g. a train-teacher best.pth")
    p.add_argument("--student", default=d.student, help=f"registry encoder of the student (default {d.student})")
    p.add_argument("--cache-dir", help="teacher-embedding cache folder (2.2 MiB per cached image and variant)")
    p.add_argument("--aug-variants", type=int, default=d.aug_variants, metavar="K",
                   help=f"cache K variants per training image (variant 0 plain, others augmented); default {d.aug_variants}")
    p.add_argument("--rebuild-cache", action="store_true", help="replace a cache built for other teacher/data")
    p.add_argument("--cache-only", action="store_true", help="build the cache, then stop")
    p.add_argument("--cache-batch-size", type=int, help="teacher batch while building the cache (default --batch-size)")
    p.add_argument("--cache-seed", type=int, default=d.cache_seed,
                   help=f"seed of the cached augmented variants (default {d.cache_seed})")
    p.add_argument("--augment", action="store_true", help="online augmentation (runs without --cache-dir)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"validation share for folders whose manifest has no val split (default {d.val_fraction})")
    p.add_argument("--val-split", choices=VAL_SPLIT_CHOICES, default=d.val_split,
                   help="draw that share as whole cases of the manifest (default: slices of one volume never "
                   "straddle train and validation) or as single images")
    p.add_argument("--finetune-decoder", action="store_true",
                   help="afterwards train the mask decoder on labelled slices, encoder frozen (off by default)")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"epochs of --finetune-decoder (default {d.finetune_epochs})")
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr,
                   help=f"learning rate of --finetune-decoder (default {d.finetune_lr:g})")
    p.add_argument("--init-student", metavar="MODEL",
                   help="warm start: initialise the student encoder from this model name or checkpoint (same "
                   "encoder), with a fresh optimizer, scheduler and log in a new run folder")
    _add_mask_and_view_arguments(p, d)
    add_training_arguments(p)
    p.set_defaults(func=run)


def _add_mask_and_view_arguments(p: argparse.ArgumentParser, d: "DistillConfig") -> None:
    """The mask term's and ``--online-views``' options (defaults from :class:`DistillConfig` ``d``)."""
    from medsam_lite.distill.options import PROMPT_BOX_CHOICES, TEACHER_BACKEND_CHOICES

    p.add_argument("--mask-loss-weight", type=float, default=d.mask_loss_weight, metavar="W",
                   help="add W x mask-level distillation (BCE + Dice between student and teacher decoder masks for "
                   "random boxes, decoder frozen) to the embedding MSE; default 0: embedding MSE only")
    p.add_argument("--mask-boxes", type=int, default=d.mask_boxes, metavar="K",
                   help=f"random boxes per image and step for --mask-loss-weight (default {d.mask_boxes})")
    p.add_argument("--prompt-boxes", choices=PROMPT_BOX_CHOICES, default=d.prompt_boxes,
                   help="boxes of --mask-loss-weight: random (default) or teacher (EdgeSAM style: boxes of the teacher's "
                   "own object-like, stable masks; --mask-boxes candidates per image)")
    p.add_argument("--stable-iou", type=float, default=d.stable_iou,
                   help=f"--prompt-boxes teacher keeps a box when the teacher's masks agree at this IoU (default {d.stable_iou})")
    p.add_argument("--mask-fraction", type=float, default=d.mask_fraction,
                   help=f"share of online views that get the mask term (rescaled; default {d.mask_fraction:g}; the decoder "
                   "is costly on CPU)")
    p.add_argument("--online-views", action="store_true",
                   help="fresh views every step from --data = ONE views pack (medsam-lite campaign pack) or the shared "
                   "data folder's training sources; the teacher embeds every view online")
    p.add_argument("--views-per-epoch", type=int, default=d.views_per_epoch,
                   help=f"--online-views: views per epoch (default {d.views_per_epoch})")
    p.add_argument("--val-views", type=int, default=d.val_views,
                   help=f"--online-views: fixed validation views (default {d.val_views})")
    p.add_argument("--teacher-backend", choices=TEACHER_BACKEND_CHOICES, default=d.teacher_backend,
                   help="--online-views teacher: auto (OpenVINO fp32 on CPU when installed, else torch), torch, openvino")


def run(args: argparse.Namespace) -> int:
    from medsam_lite.distill.options import DistillConfig, config_from_args, from_args
    from medsam_lite.distill.student import distill

    result = distill(args.data, args.output, from_args(DistillConfig, args), config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: report once
        if result.student is None:
            print(f"teacher cache ready: {result.cache_dir}")
        else:
            print(f"student: {result.student} (log: {result.run_dir / 'log.csv'})")
    return 0
