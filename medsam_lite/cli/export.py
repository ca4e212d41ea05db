"""``medsam-lite export``: write a deployable TorchScript predictor or ONNX encoder/decoder pair."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to TorchScript or ONNX",
        description="Export a model for deployment. torchscript: ONE file with pre/post-processing, segment_2d "
        "and segment_3d, loadable with torch.jit.load alone (Python or C++ libtorch). onnx: encoder.onnx + "
        "decoder.onnx (model frame; use with 'medsam-lite segment --backend onnxruntime --onnx-dir DIR').",
    )
    p.add_argument("--model", default=None,
                   help="pretrained name (lite_medsam, repvit_m0_6_lite) or checkpoint path; default: best shipped")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="export format")
    p.add_argument("-o", "--output", required=True,
                   help="torchscript: output .pt file; onnx: output folder for encoder.onnx / decoder.onnx")
    p.add_argument("--quantize", action="store_true", help="onnx only: also write dynamic int8 *.int8.onnx files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import default_model_name, load_model
    from ..errors import InputError

    name = args.model or default_model_name()
    if args.quantize and args.format != "onnx":
        raise InputError("--quantize only applies to --format onnx")
    model = load_model(name)  # bad names / files raise InputError (one line)
    if args.format == "torchscript":
        from medsam_lite.export.torchscript import export_torchscript

        print(f"wrote {export_torchscript(model, args.output, model_name=str(name))}")
    else:
        from medsam_lite.export.onnx_export import export_onnx

        for path in export_onnx(model, args.output, quantize=args.quantize).values():
            print(f"wrote {path}")
    return 0
