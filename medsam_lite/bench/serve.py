"""Latency of the annotator's API on the bundled cases: ``medsam-lite benchmark serve``.

Measured in-process through the ASGI app (starlette TestClient, no network), with the shipped model:

* open -> first mask: ``POST /api/cases`` then at once ``POST /segment`` with the case's first box on its
  middle slice (the box waits for that slice's encoder run, which has priority over the background);
* per box once the embedding exists: after the background embedding finished, ``--boxes`` boxes of the
  case (2D: its boxes; 3D: its first box on every slice of its z-range), median and 90th percentile of
  the server's ``ms`` and of the client's round trip;
* 3D propagation of the first box over its z-range with every slice embedding already cached.

Timings depend on the CPU and on what else runs; the output names the CPU.
"""
from __future__ import annotations

import json
import platform
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _wait(client: Any, job_id: str, timeout: float = 1800.0) -> Dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still running after {timeout} s")


def _stats(values: List[float]) -> Dict[str, float]:
    return {"n": len(values), "median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def measure_case(client: Any, path: str, boxes: int) -> Dict[str, Any]:
    """Open ``path``, time the first mask, then boxes once embedded, then (3D) a cached propagation."""
    from pathlib import Path

    from ..resources import load_example

    data = load_example(Path(path).name)
    t0 = time.perf_counter()
    info = client.post("/api/cases", json={"path": path}).json()
    cid = info["id"]
    if info["kind"] == "2d":
        first, z = data["boxes"][0].tolist(), 0
    else:
        x0, y0, z0, x1, y1, z1 = data["boxes"][0].tolist()
        first, z = [x0, y0, x1, y1], int((z1 - z0) / 2 + z0)
    r = client.post(f"/api/cases/{cid}/segment", json={"box": first, "z": z})
    r.raise_for_status()
    first_s = time.perf_counter() - t0
    embed = _wait(client, info["embedding"]["id"])
    server_ms, rtt_ms = [], []
    if info["kind"] == "2d":
        requests = [(b.tolist(), 0) for b in data["boxes"][1 : boxes + 1]]
    else:
        x0, y0, z0, x1, y1, z1 = (int(v) for v in data["boxes"][0])
        requests = [([x0, y0, x1, y1], zz) for zz in range(z0, z1 + 1)][:boxes]
    for box, zz in requests:
        t = time.perf_counter()
        r = client.post(f"/api/cases/{cid}/segment", json={"box": box, "z": zz})
        r.raise_for_status()
        rtt_ms.append((time.perf_counter() - t) * 1000.0)
        assert r.json()["encoded"] is False
        server_ms.append(r.json()["ms"])
    out: Dict[str, Any] = {"case": Path(path).name, "shape": info["shape"], "open_to_first_mask_s": first_s,
                           "background_embedding_s": embed["ms"] / 1000.0, "slices": embed["total"],
                           "box_server_ms": _stats(server_ms), "box_round_trip_ms": _stats(rtt_ms)}
    if info["kind"] == "3d":
        t = time.perf_counter()
        job = client.post(f"/api/cases/{cid}/propagate", json={"box": data["boxes"][0].tolist()}).json()
        job = _wait(client, job["id"])
        out["propagate_cached_s"] = time.perf_counter() - t
        out["propagate_slices"] = job["total"]
    client.delete(f"/api/cases/{cid}")
    return out


DEFAULT_CASES = ("2DBox_Microscopy_nuclei.npz", "3DBox_MR_brain_tumour.npz", "3DBox_CT_abdomen.npz")
"""Bundled examples timed by default."""


def run_serve_bench(cases: Sequence[str] = DEFAULT_CASES, boxes: int = 10, threads: int = 2,
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Start the app in process (:func:`medsam_lite.serve.app.create_app`) on the bundled examples ``cases``
    and :func:`measure_case` each; returns ``{"cpu", "threads", "model_load_s", "cases": [...]}``, logging each
    case's row as one JSON line. ``threads`` is recorded (torch's pool is set by the caller)."""
    from fastapi.testclient import TestClient

    from ..resources import example_path
    from ..serve.app import create_app
    from ..serve.config import ServeConfig

    paths = [str(example_path(name)) for name in cases]
    t = time.perf_counter()
    app = create_app(ServeConfig(roots=[example_path(cases[0]).parent]))
    results: Dict[str, Any] = {"cpu": cpu_name(), "threads": threads, "model_load_s": time.perf_counter() - t,
                               "cases": []}
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback Host (the server's allow-list)
        for path in paths:
            results["cases"].append(measure_case(client, path, boxes))
            log(json.dumps(results["cases"][-1]))
    return results
