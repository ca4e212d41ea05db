"""One instrumented whole segment process: where its time goes (start-up, I/O, pre/post-processing, encoder, decoder).

Run as a child process by the benchmark report (:mod:`medsam_lite.bench.report`)::

    python -m medsam_lite.bench.breakdown CASE OUT_DIR --launch EPOCH_SECONDS [--baseline] [--threads N] [--model M]

It does what ``medsam-lite segment CASE -o OUT_DIR [--baseline]`` does, through the same library calls (the
Predictor / :class:`~medsam_lite.baseline.BaselinePredictor` that ``segment`` builds, then
:func:`medsam_lite.segment.segment_paths` with it), with timers around the propagator's encoder and decoder and
the predictor's ``set_image`` / ``predict`` / ``predict_volume``, and prints one JSON line on stdout:

* ``startup_s``: from ``--launch`` (the parent's ``time.time()`` just before it started this process) until the
  predictor is ready: interpreter start, imports, building the backend (OpenVINO compile / cache import, the
  torch model for the baseline);
* ``encoder_s`` / ``decoder_s``: wall seconds inside the image encoder / mask decoder calls (``*_calls``);
* ``prepost_s``: the rest of the predictor calls: pre-processing (resize, pad, normalise), prompts, mask
  post-processing (upsampling, thresholds, label maps), the propagation's bookkeeping;
* ``io_s``: the rest of ``segment_paths``: reading the case, checks, writing the mask and ``timing.csv``;
* ``end_s``: the ``time.time()`` at which that work ended (the parent takes the process's exit as its total, so
  ``total - (end_s - launch)`` is the interpreter's exit).

Timers only add two ``perf_counter`` calls per encoder / decoder call (microseconds against milliseconds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


class Timers:
    """Accumulated wall seconds and call counts per part (``encoder``, ``decoder``, ``predictor``)."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self.calls: Dict[str, int] = {}
        self._started: Dict[str, List[float]] = {}

    def start(self, part: str) -> None:
        self._started.setdefault(part, []).append(time.perf_counter())

    def stop(self, part: str) -> None:
        elapsed = time.perf_counter() - self._started[part].pop()
        if not self._started[part]:  # nested calls (a predictor method calling another) count once
            self.seconds[part] = self.seconds.get(part, 0.0) + elapsed
        self.calls[part] = self.calls.get(part, 0) + 1

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timed as ``part``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.start(part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(part)

        return timed


def instrument(predictor: Any, timers: Timers) -> None:
    """Time ``predictor``'s propagator encoder / decoder and its predictor methods into ``timers``.

    A torch module (the baseline's and the reference's encoder / decoder) gets forward pre / post hooks; any
    other callable (the numpy path's ``CachedEncoder`` / ``BackendDecoder``) is replaced by a timed wrapper."""
    propagator = predictor.propagator
    for part in ("encoder", "decoder"):
        obj = getattr(propagator, part)
        if hasattr(obj, "register_forward_pre_hook"):
            obj.register_forward_pre_hook(lambda module, args, part=part: timers.start(part))
            obj.register_forward_hook(lambda module, args, out, part=part: timers.stop(part))
        else:
            setattr(propagator, part, timers.wrap(part, obj))
    for method in ("set_image", "predict", "predict_volume"):
        setattr(predictor, method, timers.wrap("predictor", getattr(predictor, method)))


def build_predictor(model: str, baseline: bool, backend: str, threads: Optional[int]) -> Any:
    """The predictor ``medsam-lite segment`` builds for these options (:func:`medsam_lite.segment` does the same)."""
    if baseline:
        from ..baseline import BaselinePredictor
        from ..checkpoint import load_model

        return BaselinePredictor(load_model(model))
    from ..predictor import Predictor

    return Predictor(model, backend=backend, threads=threads)


def breakdown(case: Path, out_dir: Path, launch: float, model: str, baseline: bool, backend: str,
              threads: Optional[int]) -> Dict[str, Any]:
    """The JSON row of the module docstring for one ``segment`` run of ``case`` into ``out_dir``."""
    from ..segment import SegmentOptions, segment_paths

    predictor = build_predictor(model, baseline, backend, threads)
    startup = time.time() - launch
    timers = Timers()
    instrument(predictor, timers)
    start = time.perf_counter()
    result = segment_paths(case, out_dir, model=predictor,
                           options=SegmentOptions(progress=False, threads=threads, backend=backend))
    work = time.perf_counter() - start
    if result.failures or result.errors:
        raise RuntimeError(f"segment failed: {result.failures or result.errors}")
    enc, dec = timers.seconds.get("encoder", 0.0), timers.seconds.get("decoder", 0.0)
    inference = timers.seconds.get("predictor", 0.0)
    return {"startup_s": startup, "encoder_s": enc, "decoder_s": dec, "prepost_s": inference - enc - dec,
            "io_s": work - inference, "encoder_calls": timers.calls.get("encoder", 0),
            "decoder_calls": timers.calls.get("decoder", 0), "end_s": time.time(),
            "backend": f"{getattr(getattr(predictor, 'backend', None), 'name', 'torch')}:"
                       f"{getattr(getattr(predictor, 'backend', None), 'precision', 'fp32')}"
                       if not baseline else "baseline (torch fp32)"}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the child process (module docstring); sets torch's threads when torch runs."""
    parser = argparse.ArgumentParser(description="one instrumented segment process (benchmark report)")
    parser.add_argument("case", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--launch", type=float, required=True, help="parent's time.time() at launch")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default="lite_medsam")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    from ..backends import runs_torch

    if args.threads and (args.baseline or runs_torch(args.backend)):
        import torch

        torch.set_num_threads(args.threads)  # process state belongs to the entry point
    row = breakdown(args.case, args.out, args.launch, args.model, args.baseline, args.backend, args.threads)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
