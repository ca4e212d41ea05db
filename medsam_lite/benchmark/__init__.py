"""Speed benchmark against the LiteMedSAM baseline (``medsam-lite benchmark``), all measured in one run.

Modules: :mod:`.timing` (call counters, peak RSS, medians, machine facts), :mod:`.cases` (the bundled
cases, generated large cases, model specs), :mod:`.backends` (one model on several runtimes) and
:mod:`.core` (the sections, reports and :func:`~medsam_lite.benchmark.core.run_benchmark`).
"""

BACKENDS = ("eager", "torchscript", "onnxruntime", "onnxruntime-int8")
"""Runtimes of the ``--backends`` comparison (:mod:`.backends`), in run order; defined here, without heavy
imports, so the CLI's parser and the benchmark share one tuple."""
