"""``medsam-lite segment``: box-prompted segmentation of challenge .npz cases, volumes and images."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

if TYPE_CHECKING:  # heavy imports stay inside run(): ``medsam-lite --help`` is fast
    from ..predictor import Predictor

from ..backends import PRECISIONS, choices  # the registry: no runtime is imported, --help stays light


DESCRIPTION = (
    "Segment a challenge .npz case (or a folder of them) with its own boxes, or a NIfTI/MHA/NRRD volume, DICOM "
    "series folder, PNG/JPG/TIFF/DICOM image with boxes given here. Box coordinates are pixel/voxel indices of the "
    "file's grid, both ends inclusive: 2D x_min y_min x_max y_max, 3D x_min y_min z_min x_max y_max z_max. For "
    "NIfTI, x / y / z are the file's voxel axes i / j / k as nibabel reads them (img.get_fdata()[x, y, z]; what "
    "ITK-SNAP / 3D Slicer show as voxel coordinates), for MHA / NRRD / DICOM SimpleITK's (x, y, z) index, z = "
    "slice. A box's mask can depend on its place in the list: later boxes win where masks overlap, and in 3D the "
    "next slice's prompt is the box of the previous slice's mask resized to 256 px with the box's label value (its "
    "place in the list), as the LiteMedSAM baseline does.")


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment cases with box prompts",
        description=DESCRIPTION,
    )
    p.add_argument("input", help="case file or folder of cases")
    p.add_argument("-o", "--output", required=True, help="output folder (masks + timing.csv)")
    p.add_argument("--model", default=None,
                   help="pretrained name (lite_medsam, repvit_m0_6_lite) or checkpoint path; default: best shipped")
    p.add_argument("--box", type=float, nargs="+", action="append", metavar="V",
                   help="one box (4 numbers 2D, 6 numbers 3D); repeat for more boxes")
    p.add_argument("--boxes", help="JSON or CSV file of boxes (rows of 4 or 6 numbers; comma, semicolon or tab "
                   "separated; an optional header names the columns: x_min,y_min[,z_min],x_max,y_max[,z_max]). "
                   'JSON boxes may be objects {"box": [...], "name": "spleen", "color": "#ff8800"}: the names go to '
                   "DICOM-SEG segments and to the label table <case>.labels.json written beside every mask")
    _add_prompts(p)
    p.add_argument("--modality", default=None,
                   help="modality for the intensity mapping, same names as 'medsam-lite prep' (CT, MR, PET, US, "
                        "XRay, Microscopy, ...). Default per input: DICOM -> its Modality tag; .npz and uint8 "
                        "images -> unchanged; other non-uint8 data -> 0.5/99.5 percentiles of non-zero voxels")
    p.add_argument("--window", help="CT window as LEVEL,WIDTH (e.g. 40,400) or a preset (abdomen, chest, brain, "
                        "bone); implies --modality CT when no modality is given")
    p.add_argument("--format", dest="fmt", choices=("auto", "nifti", "dicom-seg"), default="auto",
                   help="mask format: auto (the input's own format; NIfTI for DICOM series and TIFF stacks), "
                        "nifti, or dicom-seg (DICOM series input: a binary DICOM-SEG, one segment per box)")
    p.add_argument("--series", metavar="UID", default=None,
                   help="SeriesInstanceUID to read when a DICOM folder holds several series")
    p.add_argument("--dicom-series", action="store_true",
                   help="read the input folder as one DICOM series even when it holds other files (by default "
                        "only a folder of DICOM files alone is a series; any other folder is a folder of cases, "
                        "each file its own case)")
    p.add_argument("--label", action="append", metavar="NAME", default=None,
                   help="object name, one per box in order (default: the --boxes JSON names, else object_1, "
                        "object_2, ...): DICOM-SEG segment labels and <case>.labels.json (label value -> name, colour)")
    p.add_argument("--overlay", help="PNG to write (a folder when the input is a folder); a volume's overlay shows "
                   "the slice with the largest mask area, says which, and is radiological for NIfTI / MHA / NRRD / "
                   "DICOM series (patient's right on the left, anterior up for axial slices)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--backend", choices=choices(), default="auto", metavar="BACKEND[:PRECISION]",
                   help="inference backend: auto (default: OpenVINO when installed, else ONNX Runtime, else torch), "
                        "torch (the exact eager fp32 reference), onnxruntime, openvino, optionally with its precision "
                        "(e.g. openvino:bf16, the same spelling as the benchmark and gate). Non-torch backends convert "
                        "the model locally on first use and cache it (user cache folder, or MEDSAM_LITE_CACHE)")
    p.add_argument("--precision", choices=("auto",) + PRECISIONS, default="auto",
                   help="auto (default: bf16 only where the CPU has native bf16 AND bf16 passed the agreement gate, "
                        "else fp32), fp32, bf16 or int8 (opt-in)")
    p.add_argument("--embedding-cache", metavar="DIR",
                   help="persistent slice-embedding cache: re-running on the same images with other boxes costs the "
                        "decoder only")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for inference (default: torch's default; also given to ONNX Runtime / OpenVINO)")
    p.add_argument("--baseline", action="store_true",
                   help="run the LiteMedSAM baseline algorithm instead (eager fp32, every slice re-encoded for every "
                        "box): for speed and parity comparisons")
    p.add_argument("--onnx-dir", metavar="DIR",
                   help="folder with encoder.onnx / decoder.onnx from 'medsam-lite export --format onnx' "
                        "(only with --backend onnxruntime; the model is the one exported there)")
    p.set_defaults(func=run)


def _add_prompts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", metavar="JSON",
                   help="replay an interactive session on one case: a JSON list of objects, each with its box, "
                        "optional name / color, correction boxes on slices and lock state (schema: "
                        "medsam_lite/prompts.schema.json, docs/interactive.md); writes the label map and its label "
                        "table like a box run. Replaces --box / --boxes")


def _window(text: Optional[str]) -> Optional[Tuple[float, float]]:
    from ..errors import InputError
    from ..normalize import CT_WINDOWS, parse_window

    if text is None:
        return None
    if text.strip().lower() not in CT_WINDOWS and len([v for v in text.split(",") if v.strip()]) != 2:
        raise InputError(f"--window must be LEVEL,WIDTH or one of {', '.join(CT_WINDOWS)}, got {text!r}")
    try:
        return parse_window(text)
    except InputError as exc:
        raise InputError(f"--window must be LEVEL,WIDTH with a positive width, got {text!r}") from exc


def _predictor(backend: str, precision: str, onnx_dir: Optional[str], model: Optional[str]) -> Optional["Predictor"]:
    """The ``Predictor`` for ``--onnx-dir DIR`` (an exported folder, opened by a registry backend that opens
    folders); None otherwise (``segment_paths`` then builds ``--model`` on ``--backend`` after its input checks).

    Raises InputError (one line) for inconsistent flags or a missing ``encoder.onnx`` / ``decoder.onnx``.
    """
    from pathlib import Path

    from ..backends import open_folder
    from ..errors import InputError

    if onnx_dir is None:
        return None
    if model is not None:
        raise InputError("--model does not apply to --onnx-dir: the model is the one exported into --onnx-dir")
    folder = Path(onnx_dir)
    if not folder.is_dir():
        raise InputError("--onnx-dir is not a folder", folder)
    from ..predictor import Predictor

    return Predictor(backend=open_folder(folder, backend, precision))


def _check_extras(args: argparse.Namespace) -> None:
    """The one-line error of an option whose extra is missing, before any work (``--backend`` names are
    checked by the registry, :func:`medsam_lite.backends.resolve`)."""
    from ..backends import parse_choice, require_backend
    from ..extras import require_extra

    if args.baseline:
        require_extra("torch", "--baseline")
    if args.fmt == "dicom-seg":
        require_extra("dicom-seg", "--format dicom-seg")
    name, _ = parse_choice(args.backend, args.precision)
    if name != "auto":
        require_backend(name)


def _objects(args: argparse.Namespace) -> Tuple[Any, List[Optional[str]], List[Optional[str]], Any]:
    """(boxes (N, 4 | 6) or None, names, colours, prompt script or None) from --prompts / --boxes / --box."""
    import numpy as np

    from ..errors import InputError
    from ..imageio import read_box_objects

    boxes, names, colors = None, [], []
    prompts = None
    if args.prompts:
        from ..prompts import read_prompts

        if args.box or args.boxes or args.baseline:
            raise InputError("--prompts gives the objects and runs a session: it takes no --box / --boxes / "
                             "--baseline")
        prompts = read_prompts(args.prompts)
        boxes, names, colors = prompts.boxes, prompts.names, prompts.colors
    if args.boxes:
        objects = read_box_objects(args.boxes)
        boxes, names, colors = objects.boxes, objects.names, objects.colors
    if args.box:
        widths = {len(b) for b in args.box}
        if len(widths) != 1 or next(iter(widths)) not in (4, 6):
            raise InputError("every --box needs 4 (2D) or 6 (3D) numbers")
        width = next(iter(widths))
        if boxes is not None and boxes.shape[1] != width:
            raise InputError(f"--boxes {args.boxes} holds {boxes.shape[1]}-number boxes but --box gives {width} "
                             f"numbers; use one kind")
        boxes = np.asarray(args.box, dtype=np.float64) if boxes is None else np.vstack([boxes, args.box])
    return boxes, names, colors, prompts


def _runs_torch(args: argparse.Namespace) -> bool:
    """Whether this run's inference is torch's (``--baseline`` or the torch backend), so that ``--threads`` sets
    torch's pool only then: importing torch just to set it cost a warm OpenVINO process ~1-5 s of start-up."""
    from ..backends import runs_torch

    return bool(args.baseline) or (args.onnx_dir is None and runs_torch(args.backend, args.precision))


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every case was segmented, 1 when some case failed (one line each on stderr),
    2 for bad usage / input found before the model loads (raised as InputError, printed by main)."""
    import sys
    from pathlib import Path

    from .common import report_failures

    from ..errors import InputError
    from ..extras import available
    from ..segment import SegmentOptions, segment_paths

    window = _window(args.window)
    _check_extras(args)
    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads must be at least 1")
        if _runs_torch(args) and available("torch"):
            import torch

            torch.set_num_threads(args.threads)  # process state belongs to the entry point
    from ..backends import is_reference

    if args.baseline and (args.onnx_dir or not is_reference(args.backend, args.precision)):
        raise InputError("--baseline is the eager fp32 LiteMedSAM algorithm: it takes no --backend / --precision / "
                         "--onnx-dir")
    boxes, names, colors, prompts = _objects(args)
    labels = args.label or (names if any(names) else None)  # --label wins over the JSON names
    predictor = _predictor(args.backend, args.precision, args.onnx_dir, args.model)
    options = SegmentOptions(overlay=args.overlay, window=window, modality=args.modality, fmt=args.fmt,
                             series_uid=args.series, labels=labels, colors=colors if any(colors) else None, progress=not args.no_progress,
                             dicom_series=args.dicom_series, backend=args.backend, precision=args.precision,
                             threads=args.threads, baseline=args.baseline,
                             embedding_cache=Path(args.embedding_cache) if args.embedding_cache else None,
                             boxes_file=Path(args.boxes or args.prompts) if (args.boxes or args.prompts) else None,
                             prompts=prompts)
    result = segment_paths(args.input, args.output, model=predictor or args.model, boxes=boxes, options=options,
                           on_message=lambda line: print(line, file=sys.stderr, flush=True))
    for out in result.outputs + result.tables:
        print(f"wrote {out}")
    for overlay, shows in result.overlays:
        print(f"wrote {overlay}: {shows}")
    code = report_failures("segment", (message for _, message in result.failures), total=len(result.times))
    for line in result.errors:  # run-level (timing.csv), not a case
        print(f"medsam-lite segment: error: {line}", file=sys.stderr)
    return 1 if result.errors else code
