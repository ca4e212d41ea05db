"""The held-out curve of the CHOSEN policy (run once): the simulated user on the project's held-out labelled
volumes (medsam_lite.bench.fidelity.volume_cases: mr_organs_3d, breast1_lesion_3d; HELD_OUT of distillation),
never used for design. Usage: PYTHONPATH=. python scripts/interactive/heldout.py EMB_FOLDER [CASE ...] > out.json
"""
import json
import sys
import time
from pathlib import Path

from medsam_lite import Predictor
from medsam_lite.bench.fidelity import volume_cases
from medsam_lite.bench.interactive import InteractiveCase, run_benchmark
from medsam_lite.session import DEFAULT_POLICY

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def main():
    names = sys.argv[2:] or ["mr_organs_3d", "breast1_lesion_3d"]
    cases = [InteractiveCase(name, c.volume, c.objects, c.boxes.astype(int))
             for name, c in volume_cases(SHARED, names).items()]
    start = time.time()
    report = run_benchmark(Predictor(embedding_cache=sys.argv[1]), cases, DEFAULT_POLICY)
    report["seconds"] = time.time() - start
    print(json.dumps(report["summary"]), file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
