"""The annotator's rules (``medsam-lite serve`` with a :class:`~medsam_lite.session.Session` as case state), on the
bundled cases with the real ``lite_medsam`` model, through FastAPI's TestClient.

Each rule of docs/serve.md ("Rules") has a test: a box beside the selected object makes a new object, a box over it
corrects it; a pending 3D object is propagated from the slice it was drawn on and that slice keeps the drawn box's
mask; "propagate all" is one job and one undo step; a cancelled job changes nothing; locked objects are refused;
bad input gets one line and changes nothing (undo then undoes the previous real step); an empty name falls back to
the default; CT presets apply to HU data only; the view follows the file's geometry; background embedding follows
the user's slice and never encodes a slice twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import cv2  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from medsam_lite.resources import example_path, load_example  # noqa: E402

NUCLEI = "2DBox_Microscopy_nuclei.npz"
MR = "3DBox_MR_brain_tumour.npz"
FIXTURES = Path(__file__).parent / "fixtures"
MR_CROP = "3DBox_MR_crop.npz"
TUMOUR = [162, 84, 208, 153]  # the MR case's box (its z 11..17 are 1..7 of the crop: slices 10..18, 9 slices)
DEPTH = 9
FRESH = "3DBox_MR_top.npz"


@pytest.fixture(scope="module")
def reference(client):
    """A plain Predictor on the server's model and embedding store (the same encoder outputs, computed once):
    what the server's masks must equal."""
    from medsam_lite.predictor import Predictor

    server = server_of(client)
    return Predictor(backend=server.backend, embedding_cache=server.store)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("annot")
    root = base / "cases"
    root.mkdir()
    for name in (NUCLEI, MR):
        shutil.copy(example_path(name), root / name)
    shutil.copy(FIXTURES / "ct_small.dcm", root / "ct_small.dcm")
    mr = load_example(MR)  # a 9-slice crop keeps the encoder runs (the cost on a CPU) few
    np.savez(root / MR_CROP, imgs=mr["imgs"][10:19], boxes=np.array([[*TUMOUR[:2], 1, *TUMOUR[2:], 7]]))
    np.savez(root / FRESH, imgs=mr["imgs"][0:9], boxes=np.array([[100, 100, 0, 150, 150, 8]]))  # unseen slices
    out = base / "out"
    out.mkdir()
    return {"root": root, "out": out}


@pytest.fixture(scope="module")
def client(lite_medsam, roots):
    from medsam_lite.backends import make_backend
    from medsam_lite.serve.app import create_app
    from medsam_lite.serve.config import ServeConfig

    config = ServeConfig(roots=[roots["root"]], output_root=roots["out"])
    with TestClient(create_app(config, backend=make_backend(lite_medsam, "torch")),
                    base_url="http://127.0.0.1:8765") as c:
        yield c


def server_of(client):
    return client.app.state.server


def open_case(client, path) -> dict:
    r = client.post("/api/cases", json={"path": str(path)})
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(client, job_id: str, timeout: float = 600.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def run(client, url: str, body: dict) -> dict:
    r = client.post(url, json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    return job


def labels(client, cid: str, z: int, hw) -> np.ndarray:
    r = client.get(f"/api/cases/{cid}/labels/{z}.bin")
    assert r.status_code == 200
    return np.frombuffer(r.content, np.uint8).reshape(hw).copy()


def state_of(client, cid: str) -> tuple:
    """Everything an edit could change: the label map, the objects, the history lengths."""
    s = server_of(client).cases.get(cid)
    with s.lock:
        return (hashlib.sha1(np.ascontiguousarray(s.labels).tobytes()).hexdigest(),
                json.dumps([o.to_json() for o in s.objects.values()]), len(s.undo), len(s.redo))


def one_line_4xx(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


@contextlib.contextmanager
def model_held(client):
    """Hold the shared backend's model: every model call (a job's) waits until the block ends."""
    with server_of(client).backend._model():
        yield


# ------------------------------------------------------------------ the box rule
def test_box_beside_the_selected_object_is_a_new_object_and_over_it_a_correction(client, roots, reference):
    info = open_case(client, roots["root"] / NUCLEI)
    cid, url = info["id"], f"/api/cases/{info['id']}/box"
    boxes = load_example(NUCLEI)["boxes"]
    first = run(client, url, {"box": boxes[0].tolist(), "z": 0, "selected": None})
    a = first["object"]["id"]
    assert first["action"] == "new" and first["pixels"] > 20
    before = labels(client, cid, 0, (512, 512))
    # a second nucleus drawn with the first still selected: a new object, the first one untouched
    second = run(client, url, {"box": boxes[1].tolist(), "z": 0, "selected": a})
    assert second["action"] == "new" and second["object"]["id"] != a, second
    after = labels(client, cid, 0, (512, 512))
    np.testing.assert_array_equal(after == a, before == a)
    reference.set_image(load_example(NUCLEI)["imgs"])
    want = reference.predict(boxes[1][None].astype(np.float64), label_map=False)[0]
    np.testing.assert_array_equal(after == second["object"]["id"], want & (before != a))
    # a box over the selected (first) object is its correction: its mask becomes the new box's, no new object
    x0, y0, x1, y1 = boxes[0].tolist()
    grown = [x0 - 3, y0 - 3, x1 + 3, y1 + 3]
    client.post(f"/api/cases/{cid}/objects/{a}/unlock")  # adding the second object locked the first (finished)
    corr = run(client, url, {"box": grown, "z": 0, "selected": a})
    assert corr["action"] == "correct" and corr["object"]["id"] == a
    assert len(client.get(f"/api/cases/{cid}").json()["objects"]) == 2
    want_a = reference.predict(np.asarray([grown], np.float64), label_map=False)[0]
    got = labels(client, cid, 0, (512, 512))
    np.testing.assert_array_equal(got == a, want_a & (got != second["object"]["id"]))
    # "new" mode: the same overlapping box makes a new object
    new = run(client, url, {"box": grown, "z": 0, "selected": a, "mode": "new"})
    assert new["action"] == "new" and new["object"]["id"] not in (a, second["object"]["id"])
    client.delete(f"/api/cases/{cid}")


def test_locked_object_is_refused_and_unlock_makes_it_correctable(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    cid = info["id"]
    box = load_example(NUCLEI)["boxes"][0].tolist()
    a = run(client, f"/api/cases/{cid}/box", {"box": box, "z": 0})["object"]["id"]
    assert client.post(f"/api/cases/{cid}/objects/{a}/lock").json()["objects"][0]["locked"] is True
    snap = state_of(client, cid)
    for url, body in ((f"/api/cases/{cid}/box", {"box": box, "z": 0, "selected": a}),
                      (f"/api/cases/{cid}/correct", {"object": a, "z": 0, "box": box})):
        assert "locked" in one_line_4xx(client.post(url, json=body), 400)
        assert state_of(client, cid) == snap
    assert client.post(f"/api/cases/{cid}/objects/{a}/unlock").json()["objects"][0]["locked"] is False
    job = run(client, f"/api/cases/{cid}/correct", {"object": a, "z": 0, "box": [box[0], box[1], box[2] + 6, box[3]]})
    assert job["action"] == "correct"
    # lock and unlock are undo steps: undo (correction), undo (unlock) -> locked again
    client.post(f"/api/cases/{cid}/undo")
    assert client.post(f"/api/cases/{cid}/undo").json()["objects"][0]["locked"] is True
    client.delete(f"/api/cases/{cid}")


# ------------------------------------------------------------------ 3D: pending objects, propagation
def test_pending_object_propagates_from_the_drawn_slice(client, roots, reference):
    data = {"imgs": load_example(MR)["imgs"][10:19]}
    info = open_case(client, roots["root"] / MR_CROP)
    cid = info["id"]
    # drawn on slice 5, propagated over 1..7 (whose middle slice is 4): slice 5 keeps the drawn box's mask
    new = run(client, f"/api/cases/{cid}/box", {"box": TUMOUR, "z": 5, "z_range": [1, 7]})
    obj = new["object"]
    assert obj["pending"] and obj["z_range"] == [5, 5] and obj["propagate_range"] == [1, 7]
    drawn = labels(client, cid, 5, (256, 256))
    reference.set_image(data["imgs"][5])
    np.testing.assert_array_equal(drawn == obj["id"], reference.predict(np.asarray([TUMOUR], np.float64),
                                                                        label_map=False)[0])
    assert not labels(client, cid, 4, (256, 256)).any()  # pending: that slice only
    job = run(client, f"/api/cases/{cid}/propagate", {"object": obj["id"]})
    assert job["done"] == job["total"] == 7 and job["object"]["pending"] is False
    assert job["object"]["z_range"] == [1, 7]
    np.testing.assert_array_equal(labels(client, cid, 5, (256, 256)), drawn)  # the accepted mask stays
    # the propagation from slice 5 is the baseline's propagation of a box whose middle slice is 5 (3..7)
    want = reference.predict_volume(data["imgs"], np.array([[*TUMOUR[:2], 3, *TUMOUR[2:], 7]], np.float64),
                                    progress=False)
    got = np.stack([labels(client, cid, z, (256, 256)) for z in range(DEPTH)])
    np.testing.assert_array_equal(got[3:8] > 0, want[3:8] > 0)
    assert got[1:3].any() and not got[0].any() and not got[8].any()
    # a correction on another slice anchors there; slice 5 (the drawn anchor) is not re-decided
    run(client, f"/api/cases/{cid}/box", {"box": [160, 90, 200, 150], "z": 2, "selected": obj["id"]})
    np.testing.assert_array_equal(labels(client, cid, 5, (256, 256)), drawn)
    # undo twice: pending again, only slice 5
    client.post(f"/api/cases/{cid}/undo")
    after = client.post(f"/api/cases/{cid}/undo").json()
    assert after["objects"][0]["pending"] and after["objects"][0]["z_range"] == [5, 5]
    got = np.stack([labels(client, cid, z, (256, 256)) for z in range(DEPTH)])
    assert np.flatnonzero(got.any((1, 2))).tolist() == [5]
    client.delete(f"/api/cases/{cid}")


def test_a_whole_3d_box_is_the_faithful_propagation_then_anchored_on_the_drawn_slice(client, roots, reference):
    data = {"imgs": load_example(MR)["imgs"][10:19]}
    info = open_case(client, roots["root"] / MR_CROP)
    cid = info["id"]
    box = [TUMOUR[0], TUMOUR[1], 2, TUMOUR[2], TUMOUR[3], 6]
    job = run(client, f"/api/cases/{cid}/propagate", {"box": box})
    want = reference.predict_volume(data["imgs"], np.array([box], np.float64), progress=False)
    got = np.stack([labels(client, cid, z, (256, 256)) for z in range(DEPTH)])
    np.testing.assert_array_equal(got > 0, want > 0)
    client.post(f"/api/cases/{cid}/undo")
    # drawn on slice 3 (the box's middle is 4): slice 3 is the drawn box's mask
    job = run(client, f"/api/cases/{cid}/propagate", {"box": box, "z": 3})
    reference.set_image(data["imgs"][3])
    np.testing.assert_array_equal(labels(client, cid, 3, (256, 256)) == job["object"]["id"],
                                  reference.predict(np.asarray([TUMOUR], np.float64), label_map=False)[0])
    assert job["object"]["z"] == 3 and len(client.get(f"/api/cases/{cid}").json()["objects"]) == 1
    client.delete(f"/api/cases/{cid}")


def test_propagate_all_is_one_job_and_one_undo_step(client, roots):
    info = open_case(client, roots["root"] / MR_CROP)
    cid = info["id"]
    a = run(client, f"/api/cases/{cid}/box", {"box": TUMOUR, "z": 4, "z_range": [3, 5]})["object"]
    b = run(client, f"/api/cases/{cid}/box", {"box": [40, 40, 90, 100], "z": 1, "selected": a["id"],
                                              "z_range": [0, 2]})["object"]
    assert a["id"] != b["id"] and a["pending"] and b["pending"]
    undo_len = len(server_of(client).cases.get(cid).undo)
    job = run(client, f"/api/cases/{cid}/propagate", {"all": True})
    assert job["total"] == 6 and job["done"] == 6
    assert sorted(o["id"] for o in job["objects"]) == sorted([a["id"], b["id"]])
    objects = {o["id"]: o for o in client.get(f"/api/cases/{cid}").json()["objects"]}
    assert not any(o["pending"] for o in objects.values())
    assert objects[a["id"]]["z_range"] == [3, 5] and objects[b["id"]]["z_range"] == [0, 2]
    assert len(server_of(client).cases.get(cid).undo) == undo_len + 1
    one_line_4xx(client.post(f"/api/cases/{cid}/propagate", json={"all": True}), 400)  # nothing pending now
    client.post(f"/api/cases/{cid}/undo")
    assert all(o["pending"] for o in client.get(f"/api/cases/{cid}").json()["objects"])
    client.delete(f"/api/cases/{cid}")


# ------------------------------------------------------------------ jobs: cancel, busy
def test_cancelled_job_changes_nothing_and_a_busy_case_refuses_edits(client, roots):
    info = open_case(client, roots["root"] / MR_CROP)
    cid = info["id"]
    obj = run(client, f"/api/cases/{cid}/box", {"box": TUMOUR, "z": 4, "z_range": [0, 8]})["object"]
    snap = state_of(client, cid)
    with model_held(client):
        r = client.post(f"/api/cases/{cid}/propagate", json={"object": obj["id"]})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert client.get(f"/api/cases/{cid}").json()["job"]["id"] == job_id
        # while it runs: every edit of this case is refused with one line, nothing changes
        for method, url, body in (("POST", f"/api/cases/{cid}/undo", None),
                                  ("POST", f"/api/cases/{cid}/box", {"box": [10, 10, 40, 40], "z": 3}),
                                  ("PATCH", f"/api/cases/{cid}/objects/{obj['id']}", {"name": "x"}),
                                  ("POST", f"/api/cases/{cid}/objects/{obj['id']}/lock", None)):
            one_line_4xx(client.request(method, url, json=body), 409)
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    job = wait_job(client, job_id)
    assert job["state"] == "cancelled", job
    assert state_of(client, cid) == snap
    # the case works again: undo undoes the box (the last real step)
    assert client.post(f"/api/cases/{cid}/undo").json()["objects"] == []
    client.delete(f"/api/cases/{cid}")


# ------------------------------------------------------------------ bad input
def test_bad_input_gets_one_line_and_changes_nothing(client, roots):
    info = open_case(client, roots["root"] / MR_CROP)
    cid = info["id"]
    obj = run(client, f"/api/cases/{cid}/box", {"box": TUMOUR, "z": 4})["object"]
    oid = obj["id"]
    snap = state_of(client, cid)
    bad = [
        ("/box", {"box": TUMOUR, "z": DEPTH}, 400),  # slice outside the volume
        ("/box", {"box": [0, 0, 300, 10], "z": 3}, 400),  # box outside the image
        ("/box", {"box": [50, 50, 10, 10], "z": 3}, 400),  # inverted
        ("/box", {"box": TUMOUR, "z": 3, "selected": 99}, 404),  # unknown object
        ("/box", {"box": TUMOUR, "z": 3, "mode": "paint"}, 400),
        ("/box", {"box": TUMOUR, "z": 3, "z_range": [9, 2]}, 400),
        ("/box", {"box": [float("nan"), 1, 2, 3], "z": 3}, 400),
        ("/correct", {"object": 77, "z": 4, "box": TUMOUR}, 404),
        ("/correct", {"object": oid, "z": -1, "box": TUMOUR}, 400),
        ("/propagate", {"object": 77}, 404),
        ("/propagate", {"box": [1, 1, 0, 9, 9, DEPTH]}, 400),
        ("/propagate", {"object": oid, "box": [1, 1, 0, 9, 9, 4]}, 400),  # two things at once
        ("/propagate", {}, 400),
    ]
    for path, body, status in bad:
        r = client.post(f"/api/cases/{cid}{path}", content=json.dumps(body, allow_nan=True),
                        headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, body, r.text)
        if status != 400 or r.status_code != 422:
            one_line_4xx(r, status)
        assert state_of(client, cid) == snap, (path, body)
    # a removed object is unknown afterwards; undo after the refusals undoes the removal (the last real step)
    client.delete(f"/api/cases/{cid}/objects/{oid}")
    one_line_4xx(client.post(f"/api/cases/{cid}/correct", json={"object": oid, "z": 4, "box": TUMOUR}), 404)
    assert [o["id"] for o in client.post(f"/api/cases/{cid}/undo").json()["objects"]] == [oid]
    assert state_of(client, cid)[:2] == snap[:2]
    client.delete(f"/api/cases/{cid}")


def test_empty_name_falls_back_to_the_default(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    cid = info["id"]
    oid = run(client, f"/api/cases/{cid}/box", {"box": [410, 443, 441, 466], "z": 0})["object"]["id"]
    assert client.patch(f"/api/cases/{cid}/objects/{oid}", json={"name": "nucleus"}).json()["objects"][0]["name"] \
        == "nucleus"
    for name in ("", "   "):
        r = client.patch(f"/api/cases/{cid}/objects/{oid}", json={"name": name})
        assert r.status_code == 200, r.text
        assert r.json()["objects"][0]["name"] == f"object {oid}"
    client.delete(f"/api/cases/{cid}")


# ------------------------------------------------------------------ display: presets, value, orientation
def test_ct_presets_apply_to_hounsfield_data_only(client, roots):
    u8 = open_case(client, roots["root"] / MR_CROP)
    assert u8["hounsfield"] is False
    auto = client.get(f"/api/cases/{u8['id']}/slice/4.png").content
    assert client.get(f"/api/cases/{u8['id']}/slice/4.png", params={"window": "abdomen"}).content == auto
    value = client.get(f"/api/cases/{u8['id']}/value/4", params={"x": 180, "y": 120}).json()
    assert value["value"] == float(load_example(MR)["imgs"][14, 120, 180]) and value["unit"] == ""
    one_line_4xx(client.get(f"/api/cases/{u8['id']}/value/4", params={"x": 256, "y": 0}), 400)
    client.delete(f"/api/cases/{u8['id']}")
    ct = open_case(client, roots["root"] / "ct_small.dcm")
    assert ct["hounsfield"] is True
    import pydicom

    ds = pydicom.dcmread(str(FIXTURES / "ct_small.dcm"))
    hu = ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    value = client.get(f"/api/cases/{ct['id']}/value/0", params={"x": 20, "y": 30}).json()
    assert value["unit"] == "HU" and value["value"] == pytest.approx(float(hu[30, 20]))
    shown = {w: cv2.imdecode(np.frombuffer(client.get(f"/api/cases/{ct['id']}/slice/0.png",
                                                      params={"window": w}).content, np.uint8), cv2.IMREAD_UNCHANGED)
             for w in ("auto", "abdomen", "bone")}
    assert not np.array_equal(shown["abdomen"], shown["bone"])
    lo, hi = -160.0, 240.0  # the abdomen preset (40, 400)
    inside = (hu > lo + 20) & (hu < hi - 20)
    assert inside.any()
    expect = np.clip((hu - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(shown["abdomen"][inside].astype(float) - expect[inside]).max() <= 2
    client.delete(f"/api/cases/{ct['id']}")


def test_view_follows_the_file_geometry(client, roots, tmp_path):
    nib = pytest.importorskip("nibabel")
    data = load_example(MR)["imgs"][10:14]
    path = roots["root"] / "ras.nii.gz"
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))  # RAS axes
    info = open_case(client, path)
    view = info["view"]
    # RAS axes: column index increases toward the patient's right and row index toward anterior, so the page flips
    # both to show the patient's right on the screen's left and anterior up (3D Slicer's axial view)
    assert view["letters"] == "RLAP" and view["flip_cols"] is True and view["flip_rows"] is True
    assert view["transpose"] is False and "radiological" in view["how"]
    client.delete(f"/api/cases/{info['id']}")
    npz = open_case(client, roots["root"] / MR_CROP)
    assert npz["view"]["letters"] == "" and "array orientation" in npz["view"]["how"]
    client.delete(f"/api/cases/{npz['id']}")


# ------------------------------------------------------------------ background embedding
def test_background_embedding_follows_the_user_and_encodes_each_slice_once(client, roots):
    server = server_of(client)
    for job in server.jobs.all():  # the embedding threads of closed cases have stopped
        if job.thread is not None:
            job.thread.join(timeout=300)
    runs0 = server.backend.encoder_runs
    with model_held(client):  # nothing is encoded until the user has looked at slice 1
        info = open_case(client, roots["root"] / FRESH)
        cid = info["id"]
        assert client.get(f"/api/cases/{cid}/slice/1.png").status_code == 200
        state = server.cases.get(cid)
        assert state.focus == 1
    end = time.monotonic() + 300
    while len(state.embedded) < 5 and time.monotonic() < end:
        time.sleep(0.05)
    order = list(state.embedded)
    # the first slice encoded may be the middle one (picked before the user looked); then around slice 1
    assert {0, 1, 2} <= set(order) and max(abs(z - 1) for z in order if z != DEPTH // 2) <= 2, order
    job = run(client, f"/api/cases/{cid}/propagate", {"box": [*TUMOUR[:2], 1, *TUMOUR[2:], 7]})
    assert job["state"] == "done"
    emb = wait_job(client, info["embedding"]["id"])
    assert emb["state"] == "done" and emb["done"] == emb["total"] == DEPTH
    assert server.backend.encoder_runs - runs0 <= DEPTH  # each slice encoded once, by the job or in the background
    client.delete(f"/api/cases/{cid}")
