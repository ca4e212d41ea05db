"""Paired per-box comparison of two students in a fidelity.json (all random boxes and teacher-stable ones)."""
import json, sys, numpy as np
d = json.load(open(sys.argv[1])); a, b = sys.argv[2], sys.argv[3]
ps = d["per_student"]; stable_iou = d["stable_iou"]
ia = np.concatenate([r["iou"] for r in ps[a]["images"]]); ib = np.concatenate([r["iou"] for r in ps[b]["images"]])
noise = np.concatenate(d["noise_images"]); st = noise >= stable_iou
for name, m in (("all random boxes", np.ones_like(st)), ("teacher-stable boxes", st)):
    diff = ib[m] - ia[m]
    print(f"{name}: n={m.sum()}  {b} - {a} = {diff.mean():+.3f} +- {diff.std(ddof=1)/np.sqrt(m.sum()):.3f} (paired s.e.)")
