"""API tests of ``medsam-lite serve`` on the bundled real cases with the real ``lite_medsam`` model.

The server's masks must equal :class:`medsam_lite.predictor.Predictor`'s exactly (same model, same
box); bad requests get a 4xx with a one-line message and the server keeps answering; paths outside
the allowed roots (also by ``..`` or a symlink) are refused.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import threading
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
CT = "3DBox_CT_abdomen.npz"
MR = "3DBox_MR_brain_tumour.npz"


@pytest.fixture(scope="module")
def backend(lite_medsam):
    from medsam_lite.backends import make_backend

    return make_backend(lite_medsam, "torch")


@pytest.fixture(scope="module")
def reference(lite_medsam):
    """A plain Predictor on the same model: what the server must reproduce."""
    from medsam_lite.predictor import Predictor

    return Predictor(lite_medsam, backend="torch")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """An allowed root with copies of the bundled cases, an output root, and a file outside both."""
    base = tmp_path_factory.mktemp("serve")
    root = base / "cases"
    root.mkdir()
    for name in (NUCLEI, CT, MR):
        shutil.copy(example_path(name), root / name)
    outside = base / "outside"
    outside.mkdir()
    shutil.copy(example_path(NUCLEI), outside / "secret.npz")
    (root / "escape.npz").symlink_to(outside / "secret.npz")
    (root / "broken.npz").write_bytes(b"this is not a zip file")
    out = base / "out"
    out.mkdir()
    return {"root": root, "outside": outside, "out": out}


@pytest.fixture(scope="module")
def client(backend, roots):
    from medsam_lite.serve.app import create_app
    from medsam_lite.serve.config import ServeConfig

    config = ServeConfig(roots=[roots["root"]], output_root=roots["out"], max_upload_mb=2.0)
    with TestClient(create_app(config, backend=backend), base_url="http://127.0.0.1:8765") as c:
        yield c


def open_case(client, path) -> dict:
    r = client.post("/api/cases", json={"path": str(path)})
    assert r.status_code == 200, r.text
    return r.json()


def close(client, case_id: str) -> None:
    assert client.delete(f"/api/cases/{case_id}").status_code == 200


def mask_of(response_json) -> np.ndarray:
    png = base64.b64decode(response_json["mask_png"])
    mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    return mask == 255


def labels_slice(client, case_id: str, z: int, hw) -> np.ndarray:
    r = client.get(f"/api/cases/{case_id}/labels/{z}.bin")
    assert r.status_code == 200
    return np.frombuffer(r.content, np.uint8).reshape(hw)


def wait_job(client, job_id: str, timeout: float = 600.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def assert_one_line_4xx(r, status=None) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail


# ------------------------------------------------------------------ exactness
def test_segment_2d_equals_predictor(client, roots, reference):
    data = load_example(NUCLEI)
    info = open_case(client, roots["root"] / NUCLEI)
    assert info["kind"] == "2d" and info["shape"] == [512, 512]
    reference.set_image(data["imgs"])
    for box in data["boxes"][:3]:
        r = client.post(f"/api/cases/{info['id']}/segment", json={"box": box.tolist(), "z": 0})
        assert r.status_code == 200, r.text
        got = mask_of(r.json())
        want = reference.predict(box[None].astype(np.float64), label_map=False)[0]
        assert want.sum() > 20  # a real nucleus, not an empty mask
        np.testing.assert_array_equal(got, want)
        assert r.json()["ms"] > 0
    # the label map holds the three objects, later ones winning, like Predictor.predict's label map
    want_map = reference.predict(data["boxes"][:3].astype(np.float64))
    np.testing.assert_array_equal(labels_slice(client, info["id"], 0, (512, 512)), want_map)
    # the download is the label map in the case's format (npz with segs)
    r = client.get(f"/api/cases/{info['id']}/labels")
    assert r.status_code == 200
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["segs"], want_map)
    close(client, info["id"])


def test_segment_3d_slice_equals_predictor(client, roots, reference):
    data = load_example(CT)
    info = open_case(client, roots["root"] / CT)
    assert info["kind"] == "3d" and info["shape"] == list(data["imgs"].shape)
    x0, y0, z0, x1, y1, z1 = data["boxes"][0]
    z = int((z1 - z0) / 2 + z0)
    box = [x0, y0, x1, y1]
    r = client.post(f"/api/cases/{info['id']}/segment", json={"box": [float(v) for v in box], "z": z})
    assert r.status_code == 200, r.text
    reference.set_image(data["imgs"][z])
    want = reference.predict(np.asarray([box], np.float64), label_map=False)[0]
    assert want.sum() > 20
    np.testing.assert_array_equal(mask_of(r.json()), want)
    # only slice z holds the object
    np.testing.assert_array_equal(labels_slice(client, info["id"], z, want.shape), want.astype(np.uint8))
    assert not labels_slice(client, info["id"], z + 1, want.shape).any()
    close(client, info["id"])


def test_propagate_equals_predict_volume(client, roots, reference):
    data = load_example(MR)
    info = open_case(client, roots["root"] / MR)
    x0, y0, _, x1, y1, _ = data["boxes"][0]
    box = np.array([[x0, y0, 13, x1, y1, 15]], np.float64)  # a short z-range keeps it fast
    r = client.post(f"/api/cases/{info['id']}/propagate", json={"box": box[0].tolist()})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 3
    got = np.load(io.BytesIO(client.get(f"/api/jobs/{job['id']}/labels").content), allow_pickle=False)
    want = reference.predict_volume(data["imgs"], box, progress=False)
    assert want.sum() > 100 and set(np.unique(want)) == {0, 1}
    np.testing.assert_array_equal(got, want)
    # the case's label map holds it as the new object, also in the download
    r = client.get(f"/api/cases/{info['id']}/labels")
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["segs"], want * job["object"]["id"])
    assert job["slices"] == [z for z in range(13, 16) if want[z].any()]
    close(client, info["id"])


def test_background_embedding_makes_boxes_decoder_only(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    job = wait_job(client, info["embedding"]["id"], timeout=300)
    assert job["state"] == "done" and job["done"] == job["total"] == 1
    r = client.post(f"/api/cases/{info['id']}/segment", json={"box": [43, 300, 59, 321], "z": 0})
    assert r.status_code == 200 and r.json()["encoded"] is False
    close(client, info["id"])


# ------------------------------------------------------------------ state per case
def test_two_cases_do_not_mix(client, roots, reference):
    a = open_case(client, roots["root"] / NUCLEI)
    b = open_case(client, roots["root"] / NUCLEI)
    assert a["id"] != b["id"]
    boxes = load_example(NUCLEI)["boxes"]
    results = {}

    def work(case_id, box):
        results[case_id] = client.post(f"/api/cases/{case_id}/segment", json={"box": box.tolist(), "z": 0})

    threads = [threading.Thread(target=work, args=(a["id"], boxes[0])),
               threading.Thread(target=work, args=(b["id"], boxes[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    reference.set_image(load_example(NUCLEI)["imgs"])
    for case, box in ((a, boxes[0]), (b, boxes[1])):
        assert results[case["id"]].status_code == 200
        want = reference.predict(box[None].astype(np.float64), label_map=False)[0]
        np.testing.assert_array_equal(mask_of(results[case["id"]].json()), want)
        np.testing.assert_array_equal(labels_slice(client, case["id"], 0, (512, 512)), want.astype(np.uint8))
        assert len(client.get(f"/api/cases/{case['id']}").json()["objects"]) == 1
    close(client, a["id"])
    close(client, b["id"])


def test_edit_delete_undo_redo(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    cid = info["id"]
    first = client.post(f"/api/cases/{cid}/segment", json={"box": [410, 443, 441, 466], "z": 0}).json()
    oid = first["object"]["id"]
    before = labels_slice(client, cid, 0, (512, 512)).copy()
    # editing the box of the object replaces its mask
    r = client.post(f"/api/cases/{cid}/segment", json={"box": [43, 300, 59, 321], "z": 0, "object": oid})
    assert r.status_code == 200 and r.json()["object"]["id"] == oid
    edited = labels_slice(client, cid, 0, (512, 512)).copy()
    assert not (edited[443:467, 410:442] == oid).any() and (edited[300:322, 43:60] == oid).any()
    assert client.patch(f"/api/cases/{cid}/objects/{oid}", json={"name": "nucleus"}).json()["objects"][0]["name"] \
        == "nucleus"
    assert client.delete(f"/api/cases/{cid}/objects/{oid}").json()["objects"] == []
    assert not labels_slice(client, cid, 0, (512, 512)).any()
    client.post(f"/api/cases/{cid}/undo")  # delete
    client.post(f"/api/cases/{cid}/undo")  # rename
    np.testing.assert_array_equal(labels_slice(client, cid, 0, (512, 512)), edited)
    client.post(f"/api/cases/{cid}/undo")  # edit
    np.testing.assert_array_equal(labels_slice(client, cid, 0, (512, 512)), before)
    client.post(f"/api/cases/{cid}/redo")
    np.testing.assert_array_equal(labels_slice(client, cid, 0, (512, 512)), edited)
    close(client, cid)


# ------------------------------------------------------------------ formats, saving
def test_slice_png_is_the_image(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    r = client.get(f"/api/cases/{info['id']}/slice/0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgb = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(rgb, load_example(NUCLEI)["imgs"])
    close(client, info["id"])


def test_nifti_upload_segment_save_keeps_affine(client, roots, tmp_path, reference):
    nib = pytest.importorskip("nibabel")
    data = load_example(MR)
    affine = np.diag([0.9, 0.8, 5.0, 1.0])
    affine[:3, 3] = [-100.0, 20.0, 7.5]
    path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(data["imgs"].transpose(2, 1, 0), affine), str(path))
    with open(path, "rb") as fh:
        r = client.post("/api/cases", files={"file": ("brain.nii.gz", fh, "application/octet-stream")})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["kind"] == "3d" and info["format"] == "nifti" and info["shape"] == list(data["imgs"].shape)
    x0, y0, _, x1, y1, _ = data["boxes"][0]
    r = client.post(f"/api/cases/{info['id']}/segment", json={"box": [float(x0), float(y0), float(x1), float(y1)],
                                                             "z": 14})
    assert r.status_code == 200, r.text
    reference.set_image(data["imgs"][14])
    want = reference.predict(np.asarray([[x0, y0, x1, y1]], np.float64), label_map=False)[0]
    np.testing.assert_array_equal(mask_of(r.json()), want)
    oid = r.json()["object"]["id"]
    for window in ("percentile", "abdomen", "40,80"):
        r = client.get(f"/api/cases/{info['id']}/slice/14.png", params={"window": window})
        assert r.status_code == 200
        shown = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert shown.shape == (256, 256) and shown.dtype == np.uint8 and shown.max() > shown.min()
    r = client.patch(f"/api/cases/{info['id']}/objects/{oid}", json={"name": "tumour core"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/cases/{info['id']}/segment", json={"box": [20.0, 20.0, 60.0, 60.0], "z": 3})
    assert r.status_code == 200, r.text  # a second object, left with its default name
    r = client.post(f"/api/cases/{info['id']}/save", json={"out_dir": "run1"})
    assert r.status_code == 200, r.text
    saved = Path(r.json()["path"])
    assert saved == roots["out"] / "run1" / "brain_mask.nii.gz"
    # the names typed in the annotator are kept: the label table beside the map, and as a download
    table = json.loads(Path(r.json()["labels"]).read_text())
    assert Path(r.json()["labels"]) == roots["out"] / "run1" / "brain.labels.json"
    assert table == {str(oid): {"name": "tumour core", "color": table[str(oid)]["color"]},
                     str(oid + 1): {"name": f"object {oid + 1}", "color": table[str(oid + 1)]["color"]}}
    objects = {o["id"]: o for o in client.get(f"/api/cases/{info['id']}").json()["objects"]}
    assert table[str(oid)]["color"] == "#%02x%02x%02x" % tuple(objects[oid]["colour"])  # the colour shown
    r = client.get(f"/api/cases/{info['id']}/label-table")
    assert r.status_code == 200 and json.loads(r.content) == table
    assert "brain.labels.json" in r.headers["content-disposition"]
    r = client.post(f"/api/cases/{info['id']}/undo")  # the second object goes: the saved map is the first one's
    assert r.status_code == 200 and client.post(f"/api/cases/{info['id']}/save", json={"out_dir": "run1"}).json()
    assert json.loads((roots["out"] / "run1" / "brain.labels.json").read_text()) == {
        str(oid): {"name": "tumour core", "color": table[str(oid)]["color"]}}
    img = nib.load(str(saved))
    np.testing.assert_allclose(img.affine, affine)
    vol = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert vol.dtype == np.uint8
    np.testing.assert_array_equal(vol[14], want.astype(np.uint8))
    assert not np.delete(vol, 14, axis=0).any()
    r = client.post(f"/api/cases/{info['id']}/save", json={"out_dir": "../escaped"})
    assert_one_line_4xx(r, 400)
    assert not (roots["out"].parent / "escaped").exists()
    close(client, info["id"])


# ------------------------------------------------------------------ bad requests
def test_bad_requests_give_4xx_and_server_keeps_serving(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    cid = info["id"]
    seg = f"/api/cases/{cid}/segment"
    assert_one_line_4xx(client.post("/api/cases/nope/segment", json={"box": [1, 1, 9, 9], "z": 0}), 404)
    assert_one_line_4xx(client.get("/api/cases/nope/slice/0.png"), 404)
    assert_one_line_4xx(client.get("/api/jobs/nope"), 404)
    assert_one_line_4xx(client.post(seg, json={"box": [9, 9, 1, 1], "z": 0}), 400)  # inverted
    assert_one_line_4xx(client.post(seg, json={"box": [1, 2, 3], "z": 0}), 422)  # wrong length
    assert_one_line_4xx(client.post(seg, json={"box": [900, 900, 950, 950], "z": 0}), 400)  # outside the image
    assert_one_line_4xx(client.post(seg, json={"box": ["a", 1, 2, 3], "z": 0}), 422)
    assert_one_line_4xx(client.post(seg, json={"box": [1, 1, 9, 9], "z": 3}), 400)  # no such slice
    assert_one_line_4xx(client.post(seg, content=b"{not json", headers={"content-type": "application/json"}))
    assert_one_line_4xx(client.post("/api/cases", content=b"{not json", headers={"content-type": "application/json"}))
    assert_one_line_4xx(client.post("/api/cases", json={"nopath": 1}), 400)
    assert_one_line_4xx(client.post("/api/cases", json={"path": str(roots["root"] / NUCLEI), "window": 3}), 400)
    assert_one_line_4xx(client.post(f"/api/cases/{cid}/propagate", json={"box": [1, 1, 0, 9, 9, 0]}), 400)  # 2D case
    assert_one_line_4xx(client.get(f"/api/cases/{cid}/slice/0.png", params={"window": "nonsense"}), 400)
    assert_one_line_4xx(client.post(f"/api/cases/{cid}/undo"), 400)  # nothing to undo
    assert_one_line_4xx(client.delete(f"/api/cases/{cid}/objects/7"), 404)
    # unreadable file: by path and uploaded
    r = client.post("/api/cases", json={"path": str(roots["root"] / "broken.npz")})
    assert_one_line_4xx(r, 400)
    assert "broken.npz" in r.json()["detail"]
    r = client.post("/api/cases", files={"file": ("corrupt.nii.gz", b"\x1f\x8b garbage", "application/octet-stream")})
    assert_one_line_4xx(r, 400)
    assert "corrupt.nii.gz" in r.json()["detail"]
    r = client.post("/api/cases", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert_one_line_4xx(r, 400)
    # oversized upload (limit 2 MiB in this app)
    r = client.post("/api/cases", files={"file": ("big.npz", b"\0" * (3 * 2**20), "application/octet-stream")})
    assert_one_line_4xx(r, 413)
    # still serving: the same case segments fine, a new upload of a real case opens
    assert client.get("/api/info").status_code == 200
    r = client.post(seg, json={"box": [410, 443, 441, 466], "z": 0})
    assert r.status_code == 200 and mask_of(r.json()).sum() > 20
    r = client.post("/api/cases", files={"file": (NUCLEI, example_path(NUCLEI).read_bytes(), "application/octet-stream")})
    assert r.status_code == 200 and r.json()["name"] == NUCLEI
    close(client, r.json()["id"])
    close(client, cid)


def test_paths_outside_roots_are_refused(client, roots):
    secret = roots["outside"] / "secret.npz"
    for path in (secret, roots["root"] / ".." / "outside" / "secret.npz", roots["root"] / "escape.npz", "/etc/passwd"):
        r = client.post("/api/cases", json={"path": str(path)})
        assert_one_line_4xx(r, 400)
        assert "outside the allowed roots" in r.json()["detail"]
    r = client.post("/api/cases", json={"path": str(roots["root"] / "missing.npz")})
    assert_one_line_4xx(r, 400)
    listed = client.get("/api/files").json()["files"]
    assert str(roots["root"] / NUCLEI) in listed and not any("secret" in f for f in listed)


def test_static_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from the internet


def test_cli_registers_serve():
    from medsam_lite.cli.main import build_parser

    args = build_parser().parse_args(["serve", "x", "--port", "9999"])
    assert args.command == "serve" and args.port == 9999 and args.host == "127.0.0.1" and args.paths == ["x"]


def test_cli_refuses_missing_path(capsys):
    from medsam_lite.cli.main import main

    assert main(["serve", "/no/such/folder"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/no/such/folder" in err and "not found" in err


def test_embedding_order_starts_in_the_middle():
    from medsam_lite.serve.jobs import embedding_order

    assert embedding_order(5) == [2, 3, 1, 4, 0]
    assert embedding_order(1) == [0]
    assert sorted(embedding_order(112)) == list(range(112))
