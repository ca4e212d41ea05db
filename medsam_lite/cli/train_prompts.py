"""``medsam-lite train-prompts``: train a click-refinement prompt path on cached embeddings
(see medsam_lite.distill.prompts)."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    from medsam_lite.distill.options import PromptTrainConfig, TrainConfig, add_training_arguments

    d = PromptTrainConfig(data="")
    p = subparsers.add_parser(
        "train-prompts",
        help="train the click-refinement prompt path (prompt encoder + mask decoder) with simulated clicks",
        description="Prompt-in-the-loop training of LiteMedSAM's prompt encoder + mask decoder for clicks, image "
        "encoder frozen: the training-side labelled slices of --shared are embedded once into --data (the "
        "embedding store), then per object a jittered box, the released decoder's mask, and 1..--max-clicks "
        "simulated clicks from the current error (Dice + BCE + IoU-MSE per round). Writes last.pth / best.pth "
        "(weights-only loadable click checkpoints), log.csv, loss.png, run.json in OUT; rerun with --resume.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="embedding + object folder (built when empty)")
    p.add_argument("--shared", default="", metavar="DIR",
                   help="shared data folder with the training-side labelled volumes (needed to build --data)")
    p.add_argument("-o", "--output", required=True, help="run folder")
    p.add_argument("--max-clicks", type=int, default=d.max_clicks,
                   help=f"click rounds per object 1..N (default {d.max_clicks})")
    p.add_argument("--dense-prob", type=float, default=d.dense_prob,
                   help=f"probability of the previous logits as dense prompt in a round (default {d.dense_prob})")
    p.add_argument("--jitter-px", type=int, default=d.jitter_px, help=f"box side jitter in px (default {d.jitter_px})")
    p.add_argument("--wide-prob", type=float, default=d.wide_prob,
                   help=f"probability of a wide jitter (default {d.wide_prob})")
    p.add_argument("--wide-frac", type=float, default=d.wide_frac,
                   help=f"wide jitter, fraction of a side (default {d.wide_frac})")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help=f"every N-th slice is validation (default {d.val_every})")
    add_training_arguments(p, TrainConfig(epochs=10, batch_size=4, lr=1e-4, schedule="cosine", amp="off",
                                          channels_last=False, device="cpu"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsam_lite.distill.options import config_from_args
    from medsam_lite.distill.prompts import PromptTrainConfig, train_prompts

    opt = PromptTrainConfig(data=args.data, shared=args.shared, max_clicks=args.max_clicks,
                            dense_prob=args.dense_prob, jitter_px=args.jitter_px, wide_prob=args.wide_prob,
                            wide_frac=args.wide_frac, val_every=args.val_every)
    result = train_prompts(opt, args.output, config_from_args(args))
    print(f"click prompt path: {result.best or result.last} (log: {result.run_dir / 'log.csv'})")
    return 0
