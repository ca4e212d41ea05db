"""``medsam-lite distill``: distil a teacher's image encoder into a student encoder (see medsam_lite.distill.student)."""
from __future__ import annotations

import argparse
import os


def register(subparsers: "argparse._SubParsersAction") -> None:
    from medsam_lite.distill.options import (PROMPT_BOX_CHOICES, TEACHER_BACKEND_CHOICES, VAL_SPLIT_CHOICES,
                                             add_training_arguments)

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
    p.add_argument("--teacher", default="lite_medsam",
                   help="teacher: pretrained name (lite_medsam) or checkpoint path, e.g. a train-teacher best.pth")
    p.add_argument("--student", default="repvit_m0_6", help="registry encoder of the student (default repvit_m0_6)")
    p.add_argument("--cache-dir", help="teacher-embedding cache folder (2.2 MiB per cached image and variant)")
    p.add_argument("--aug-variants", type=int, default=1, metavar="K",
                   help="cache K variants per training image (variant 0 plain, others augmented); default 1")
    p.add_argument("--rebuild-cache", action="store_true", help="replace a cache built for other teacher/data")
    p.add_argument("--cache-only", action="store_true", help="build the cache, then stop")
    p.add_argument("--cache-batch-size", type=int, help="teacher batch while building the cache (default --batch-size)")
    p.add_argument("--cache-seed", type=int, default=0, help="seed of the cached augmented variants (default 0)")
    p.add_argument("--augment", action="store_true", help="online augmentation (runs without --cache-dir)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="validation share for folders whose manifest has no val split (default 0.05)")
    p.add_argument("--val-split", choices=VAL_SPLIT_CHOICES, default="case",
                   help="draw that share as whole cases of the manifest (default: slices of one volume never "
                   "straddle train and validation) or as single images")
    p.add_argument("--finetune-decoder", action="store_true",
                   help="afterwards train the mask decoder on labelled slices, encoder frozen (off by default)")
    p.add_argument("--finetune-epochs", type=int, default=10, help="epochs of --finetune-decoder (default 10)")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="learning rate of --finetune-decoder (default 1e-4)")
    p.add_argument("--init-student", metavar="MODEL",
                   help="warm start: initialise the student encoder from this model name or checkpoint (same "
                   "encoder), with a fresh optimizer, scheduler and log in a new run folder")
    p.add_argument("--mask-loss-weight", type=float, default=0.0, metavar="W",
                   help="add W x mask-level distillation (BCE + Dice between student and teacher decoder masks for "
                   "random boxes, decoder frozen) to the embedding MSE; default 0: embedding MSE only")
    p.add_argument("--mask-boxes", type=int, default=2, metavar="K",
                   help="random boxes per image and step for --mask-loss-weight (default 2)")
    p.add_argument("--prompt-boxes", choices=PROMPT_BOX_CHOICES, default="random",
                   help="boxes of --mask-loss-weight: random (default) or teacher (EdgeSAM style: boxes of the teacher's "
                   "own object-like, stable masks; --mask-boxes candidates per image)")
    p.add_argument("--stable-iou", type=float, default=0.8,
                   help="--prompt-boxes teacher keeps a box when the teacher's masks agree at this IoU (default 0.8)")
    p.add_argument("--mask-fraction", type=float, default=1.0,
                   help="share of online views that get the mask term (rescaled; default 1; the decoder is costly on CPU)")
    p.add_argument("--online-views", action="store_true",
                   help="fresh views every step from --data = ONE views pack (medsam-lite campaign pack) or the shared "
                   "data folder's training sources; the teacher embeds every view online")
    p.add_argument("--views-per-epoch", type=int, default=512, help="--online-views: views per epoch (default 512)")
    p.add_argument("--val-views", type=int, default=32, help="--online-views: fixed validation views (default 32)")
    p.add_argument("--teacher-backend", choices=TEACHER_BACKEND_CHOICES, default="auto",
                   help="--online-views teacher: auto (OpenVINO fp32 on CPU when installed, else torch), torch, openvino")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsam_lite.distill.options import DistillConfig, config_from_args
    from medsam_lite.distill.student import distill

    options = DistillConfig(
        teacher=args.teacher, student=args.student, cache_dir=args.cache_dir, aug_variants=args.aug_variants,
        augment=args.augment, rebuild_cache=args.rebuild_cache, cache_only=args.cache_only,
        cache_batch_size=args.cache_batch_size, cache_seed=args.cache_seed, val_fraction=args.val_fraction,
        val_split=args.val_split, finetune_decoder=args.finetune_decoder, finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr, init_student=args.init_student, mask_loss_weight=args.mask_loss_weight,
        mask_boxes=args.mask_boxes, prompt_boxes=args.prompt_boxes, stable_iou=args.stable_iou,
        mask_fraction=args.mask_fraction,
        online_views=args.online_views, views_per_epoch=args.views_per_epoch, val_views=args.val_views,
        teacher_backend=args.teacher_backend)
    result = distill(args.data, args.output, options, config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: report once
        if result.student is None:
            print(f"teacher cache ready: {result.cache_dir}")
        else:
            print(f"student: {result.student} (log: {result.run_dir / 'log.csv'})")
    return 0
