"""``medsam-lite segment``: box-prompted segmentation of challenge .npz cases, volumes and images."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # heavy imports stay inside run(): ``medsam-lite --help`` is fast
    from ..predictor import Predictor

BACKENDS = ("torch", "onnxruntime")
"""Values of ``--backend``."""


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment cases with box prompts",
        description="Segment a challenge .npz case (or a folder of them) with its own boxes, or a NIfTI/MHA/NRRD "
        "volume, DICOM series folder, PNG/JPG/TIFF/DICOM image with boxes given here. Box coordinates are pixel/voxel "
        "indices of the file's grid: 2D x_min y_min x_max y_max, 3D x_min y_min z_min x_max y_max z_max.",
    )
    p.add_argument("input", help="case file or folder of cases")
    p.add_argument("-o", "--output", required=True, help="output folder (masks + timing.csv)")
    p.add_argument("--model", default=None,
                   help="pretrained name (lite_medsam, repvit_m0_6_lite) or checkpoint path; default: best shipped")
    p.add_argument("--box", type=float, nargs="+", action="append", metavar="V",
                   help="one box (4 numbers 2D, 6 numbers 3D); repeat for more boxes")
    p.add_argument("--boxes", help="JSON or CSV file of boxes (rows of 4 or 6 numbers)")
    p.add_argument("--window", help="CT window for non-uint8 inputs as LEVEL,WIDTH (e.g. 40,400)")
    p.add_argument("--overlay", help="PNG to write (a folder when the input is a folder)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="inference backend: torch (eager PyTorch, default) or onnxruntime (needs --onnx-dir)")
    p.add_argument("--onnx-dir", metavar="DIR",
                   help="folder with encoder.onnx / decoder.onnx from 'medsam-lite export --format onnx' "
                        "(only with --backend onnxruntime; the model is the one exported there)")
    p.set_defaults(func=run)


def _window(text: Optional[str]) -> Optional[Tuple[float, float]]:
    from ..errors import InputError

    if text is None:
        return None
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError(f"--window must be LEVEL,WIDTH, got {text!r}") from exc
    if width <= 0:
        raise InputError(f"--window width must be positive, got {width:g}")
    return level, width


def _predictor(backend: str, onnx_dir: Optional[str], model: Optional[str]) -> Optional["Predictor"]:
    """The ``Predictor`` for ``--backend onnxruntime`` (None for torch: ``segment_paths`` loads ``--model``).

    Raises InputError (one line) for inconsistent flags or a missing ``encoder.onnx`` / ``decoder.onnx``.
    """
    from pathlib import Path

    from ..errors import InputError

    if backend == "torch":
        if onnx_dir is not None:
            raise InputError("--onnx-dir only applies to --backend onnxruntime")
        return None
    if onnx_dir is None:
        raise InputError("--backend onnxruntime needs --onnx-dir DIR (a folder from 'medsam-lite export --format "
                         "onnx -o DIR')")
    if model is not None:
        raise InputError("--model does not apply to --backend onnxruntime: the model is the one exported into "
                         "--onnx-dir")
    folder = Path(onnx_dir)
    if not folder.is_dir():
        raise InputError("--onnx-dir is not a folder", folder)
    from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend

    from ..predictor import Predictor

    return Predictor(backend=OnnxRuntimeBackend(folder))


def run(args: argparse.Namespace) -> int:
    from .common import report_failures
    import numpy as np

    from ..errors import InputError
    from ..imageio import read_boxes_file
    from ..segment import segment_paths

    predictor = _predictor(args.backend, args.onnx_dir, args.model)
    boxes = None
    if args.boxes:
        boxes = read_boxes_file(args.boxes)
    if args.box:
        widths = {len(b) for b in args.box}
        if len(widths) != 1 or widths.pop() not in (4, 6):
            raise InputError("every --box needs 4 (2D) or 6 (3D) numbers")
        boxes = np.asarray(args.box, dtype=np.float64) if boxes is None else np.vstack([boxes, args.box])
    result = segment_paths(args.input, args.output, model=predictor or args.model, boxes=boxes, overlay=args.overlay,
                           window=_window(args.window), progress=not args.no_progress)
    for out in result.outputs:
        print(f"wrote {out}")
    return report_failures("segment", (message for _, message in result.failures))
