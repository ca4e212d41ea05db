"""Correction latency (issue 29) on a real 512 x 512 CT: ../shared/data/lesions/lung1 (training side), CT window.
A correction box's mask (decoder only, slice embedded beforehand) and a re-propagation walk over 20 slices.
Usage: PYTHONPATH=. python scripts/interactive/latency.py EMB_FOLDER"""
import json
import sys
from pathlib import Path

import numpy as np

from medsam_lite import Predictor
from medsam_lite.bench.interactive import correction_latency, cpu_model
from medsam_lite.imageio import read_case
from medsam_lite.normalize import model_input_uint8

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
ct = read_case(SHARED / "lesions/lung1_image.nrrd").array
volume = np.ascontiguousarray(model_input_uint8(ct, "CT", None)[0])
session = Predictor(embedding_cache=sys.argv[1]).session(volume)
box = (150, 150, 350, 350)
result = correction_latency(session, 1, 10, box, walk=20, repeats=3)
result.update({"shape": list(volume.shape), "cpu": cpu_model()})
print(json.dumps(result))
