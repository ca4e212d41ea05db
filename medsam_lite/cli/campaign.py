"""``medsam-lite campaign``: pack the training sources, then run online fresh-view distillation (medsam_lite.distill.campaign)."""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medsam_lite.distill.campaign import CampaignConfig


def register(subparsers: "argparse._SubParsersAction") -> None:
    from medsam_lite.distill.campaign import SCRATCH_LR, WARM_START_LR, CampaignConfig
    from medsam_lite.distill.options import AMP_CHOICES, DEVICE_CHOICES, PROMPT_BOX_CHOICES, TEACHER_BACKEND_CHOICES

    d = CampaignConfig()
    dd, dt = d.distill, d.train
    p = subparsers.add_parser(
        "campaign", help="distillation campaign: pack the training data (<= 64 MiB), run it on CPU / CUDA / torchrun",
        description="Two steps: 'campaign pack --data ../shared/data -o PACK' writes the training sources (never the "
        "held-out ones) compressed with a SHA-256 manifest (refused above 64 MiB); 'campaign run --pack PACK -o OUT "
        "--minutes M --resume' distils the teacher into the student on fresh views from the pack (bf16 autocast, "
        "larger batch on CUDA; several GPUs: torchrun --nproc_per_node N -m medsam_lite.cli.main campaign run ...).")
    sub = p.add_subparsers(dest="campaign_command", required=True, metavar="STEP")
    pk = sub.add_parser("pack", help="write a views pack from the shared data folder")
    pk.add_argument("--data", required=True, help="the shared data folder (../shared/data)")
    pk.add_argument("-o", "--output", required=True, help="pack folder (must not exist or be empty)")
    pk.set_defaults(func=run_pack)
    r = sub.add_parser("run", help="online fresh-view distillation from a pack")
    r.add_argument("--pack", required=True, help="views pack folder (campaign pack)")
    r.add_argument("-o", "--output", required=True, help="run folder (checkpoints, logs, campaign.json)")
    r.add_argument("--minutes", type=float, default=dt.time_limit,
                   help=f"training minutes of this session (default {dt.time_limit:g})")
    r.add_argument("--student", default=dd.student, help=f"registry encoder of the student (default {dd.student})")
    r.add_argument("--teacher", default=dd.teacher, help=f"teacher model name or checkpoint (default {dd.teacher})")
    r.add_argument("--init-student", help="initialise the student encoder from this model / checkpoint")
    r.add_argument("--batch-size", type=int, help="images per step per process (default 8 on CPU, 64 on CUDA)")
    r.add_argument("--views-per-epoch", type=int, help="fresh views per epoch (default 64 on CPU, 16 global batches on CUDA)")
    r.add_argument("--val-views", type=int, default=dd.val_views, help=f"fixed validation views (default {dd.val_views})")
    r.add_argument("--lr", type=float, help=f"AdamW learning rate (default {WARM_START_LR:g} with --init-student, "
                                          f"else {SCRATCH_LR:g})")
    r.add_argument("--mask-loss-weight", type=float, default=dd.mask_loss_weight,
                   help=f"weight of the mask term (default {dd.mask_loss_weight}; 0 = embedding MSE only)")
    r.add_argument("--mask-boxes", type=int, default=dd.mask_boxes, help=f"candidate boxes per view (default {dd.mask_boxes})")
    r.add_argument("--mask-fraction", type=float,
                   help="share of views that get the mask term (default 0.25 on CPU, 1 on CUDA)")
    r.add_argument("--prompt-boxes", choices=PROMPT_BOX_CHOICES, default=dd.prompt_boxes,
                   help=f"boxes of the mask term (default {dd.prompt_boxes})")
    r.add_argument("--teacher-backend", choices=TEACHER_BACKEND_CHOICES, default=dd.teacher_backend,
                   help="teacher encoder backend (auto: OpenVINO fp32 on CPU when installed, else torch)")
    r.add_argument("--device", choices=DEVICE_CHOICES, default=dt.device, help="auto (CUDA when present), cpu or cuda")
    r.add_argument("--amp", choices=AMP_CHOICES, default=dt.amp, help="student autocast (default auto: bf16)")
    r.add_argument("--seed", type=int, default=dt.seed, help=f"seed of views, boxes and init (default {dt.seed})")
    r.add_argument("--workers", type=int, default=dt.workers, help="DataLoader workers drawing views (default 0)")
    r.add_argument("--checkpoint-every", type=int, default=dt.checkpoint_every,
                   help=f"also save last.pth every N steps (default {dt.checkpoint_every})")
    r.add_argument("--resume", action="store_true", help="continue OUT/last.pth (starts fresh when there is none)")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    r.set_defaults(func=run_run)


def run_pack(args: argparse.Namespace) -> int:
    import json

    from medsam_lite.distill.campaign import pack
    from medsam_lite.distill.views import PACK_MANIFEST

    out = pack(args.data, args.output)
    manifest = json.loads((out / PACK_MANIFEST).read_text())
    print(f"pack: {out} ({len(manifest['sources'])} sources, {manifest['total_bytes'] / 2 ** 20:.1f} MiB)")
    return 0


RUN_SETTINGS = ("student", "teacher", "minutes", "batch_size", "views_per_epoch", "val_views", "lr", "mask_loss_weight",
                "mask_boxes", "mask_fraction", "prompt_boxes", "init_student", "teacher_backend", "device", "amp", "seed",
                "workers", "checkpoint_every", "resume", "progress")
"""The ``campaign run`` options that are campaign settings (:meth:`CampaignConfig.of` names)."""


def config_from_args(args: argparse.Namespace) -> "CampaignConfig":
    """The :class:`~medsam_lite.distill.campaign.CampaignConfig` of parsed ``campaign run`` arguments."""
    from medsam_lite.distill.campaign import CampaignConfig

    return CampaignConfig.of(**{name: getattr(args, name) for name in RUN_SETTINGS})


def run_run(args: argparse.Namespace) -> int:
    from medsam_lite.distill.campaign import run_campaign

    summary = run_campaign(args.pack, args.output, config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"campaign: {summary['status']}, {summary['epochs_done']} epochs, {summary['image_steps_total']} image-steps "
              f"in all, teacher {summary['teacher_backend']} {summary['teacher_ms_per_image']} ms/image; "
              f"student: {summary['student']}")
    return 0
