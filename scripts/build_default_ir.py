#!/usr/bin/env python
"""Build the OpenVINO f32 IR of LiteMedSAM that ships as package data (medsam_lite/weights/lite_medsam_openvino/).

    python scripts/build_default_ir.py            # rebuild it in place (needs the [torch] extra)
    python scripts/build_default_ir.py --check    # build into a temporary folder and compare SHA-256 per file

The conversion is medsam_lite.export.openvino_ir.build_ir (the same one the artifact cache runs); with the
torch / onnx / OpenVINO versions recorded in the manifest it gives the same bytes. Rebuild (and commit) after
a change to the conversion (FORMAT_VERSION in medsam_lite/backends/openvino.py).
"""
from __future__ import annotations

import argparse
import sys

from medsam_lite.export.openvino_ir import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: the package-data folder)")
    parser.add_argument("--check", action="store_true", help="build into a temporary folder, compare with the "
                        "packaged IR, exit 1 when a file differs")
    args = parser.parse_args()
    sys.exit(main(args.out, args.check))
