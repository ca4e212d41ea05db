"""Design measurements of the session's correction policy (issue 29) on TRAINING-side volumes only.

Runs the simulated user (medsam_lite.bench.interactive) with each candidate CorrectionPolicy on the bundled
3DBox_CT_abdomen (= ../shared/data/ct_organs) and 3DBox_MR_brain_tumour (= lesions/brain1), plus
../shared/data/lesions/lung1; embeddings come from a disk cache (EMB), decoder outputs are memoised per
(slice embedding, model-frame box) so policies that walk the same prompts cost nothing twice.
Usage: PYTHONPATH=. python scripts/interactive/design.py EMB_FOLDER > out.json
"""
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medsam_lite import Predictor
from medsam_lite.bench.fidelity import volume_box
from medsam_lite.bench.interactive import InteractiveCase, policy_name, run_case, summarize
from medsam_lite.embedding_cache import DiskEmbeddingStore, MemoryEmbeddingStore
from medsam_lite.imageio import read_case
from medsam_lite.normalize import model_input_uint8
from medsam_lite.predictor import BackendDecoder
from medsam_lite.segmenter import PropagatorSegmenter
from medsam_lite.session import CorrectionPolicy, Session

EX = Path(__file__).resolve().parents[2] / "medsam_lite" / "examples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
POLICIES = [CorrectionPolicy("next", None, False), CorrectionPolicy("next", None, True),
            CorrectionPolicy("nearest", None, True), CorrectionPolicy("next", 0.9, True),
            CorrectionPolicy("nearest", 0.9, True), CorrectionPolicy("nearest", 0.8, True),
            CorrectionPolicy("nearest", None, True, False), CorrectionPolicy("next", None, True, False)]
if len(sys.argv) > 2:  # a second round: only the policies from this index on
    POLICIES = POLICIES[int(sys.argv[2]):]


class Chain:
    """Memory in front of a disk store."""

    def __init__(self, disk):
        self.mem, self.disk = MemoryEmbeddingStore(), disk

    def get(self, key):
        hit = self.mem.get(key)
        if hit is None:
            hit = self.disk.get(key)
            if hit is not None:
                self.mem.put(key, hit)
        return hit

    def put(self, key, emb):
        self.mem.put(key, emb)
        self.disk.put(key, emb)


class MemoDecoder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.memo, self.calls = inner, {}, 0

    def forward(self, embedding, boxes):
        # content key: a strided sample of the embedding (data_ptr is not stable: CachedEncoder returns a torch.cat)
        key = (hashlib.sha1(embedding.numpy()[0, :, ::8, ::8].tobytes()).hexdigest(), boxes.numpy().tobytes())
        if key not in self.memo:
            self.calls += 1
            self.memo[key] = self.inner(embedding, boxes)
        return self.memo[key]


def cases():
    ct = np.load(EX / "3DBox_CT_abdomen.npz")
    mr = np.load(EX / "3DBox_MR_brain_tumour.npz")
    out = [InteractiveCase("ct_organs (bundled CT, 5 organs)", ct["imgs"],
                           tuple(ct["gts"] == i for i in range(1, 6)), ct["boxes"]),
           InteractiveCase("brain1 (bundled MR tumour)", mr["imgs"], (mr["gts"] > 0,), mr["boxes"])]
    lung = read_case(SHARED / "lesions/lung1_image.nrrd").array
    lung_gt = read_case(SHARED / "lesions/lung1_label.nrrd").array > 0
    vol = np.ascontiguousarray(model_input_uint8(lung, "CT", None)[0])
    out.append(InteractiveCase("lung1 (CT lesion)", vol, (lung_gt,), volume_box(lung_gt)[None].astype(int)))
    return out


def main():
    predictor = Predictor()
    store = Chain(DiskEmbeddingStore(sys.argv[1]))
    report = {}
    all_cases = cases()
    for policy in POLICIES:
        curves, t = {}, time.time()
        for case in all_cases:
            seg = PropagatorSegmenter(case.volume, predictor.backend, None, store)
            seg.propagator.decoder = MEMO.setdefault(case.name, MemoDecoder(BackendDecoder(predictor.backend)))
            curves[case.name] = run_case(Session(seg, policy=policy), case)
        report[policy_name(policy)] = {"summary": summarize(curves), "curves": curves}
        print(policy_name(policy), round(time.time() - t), json.dumps(report[policy_name(policy)]["summary"]),
              file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


MEMO = {}
if __name__ == "__main__":
    main()
