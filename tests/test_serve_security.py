"""Security and robustness of ``medsam-lite serve`` (issue 26, items 7-10), with the real ``lite_medsam``
model on the bundled nuclei case.

* 7: only loopback / configured Host names are answered (DNS rebinding); cross-site and non-JSON
  state-changing requests are refused and change nothing; a case with unsaved changes is never closed
  to make room for another.
* 8: every oversized body gets 413 (Content-Length or counted, any content type and casing); error
  details are short.
* 9: deeply nested JSON and NUL bytes in paths are one-line 4xx, no traceback.
* 10: upload files do not outlive a failed open or their case; ``/api/files`` hides symlinks that lead
  outside the roots.
* A bounded fuzz over every route of the app (enumerated from the app, so a new endpoint is covered),
  in-process and on a real uvicorn on 127.0.0.1: no 5xx, no traceback logged, short one-line errors,
  and a refused request changes no state.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from medsam_lite.resources import example_path  # noqa: E402

NUCLEI = "2DBox_Microscopy_nuclei.npz"
BOX = [410, 443, 441, 466]  # a nucleus of the case
ORIGIN = "http://127.0.0.1:8765"
EVIL = "http://attacker.example"


def _config(roots: Dict[str, Path], **kw):
    try:
        from medsam_lite.serve.config import ServeConfig
    except ImportError:  # before the config module existed
        from medsam_lite.serve.state import ServeConfig
    kw.setdefault("max_upload_mb", 2.0)
    return ServeConfig(roots=[roots["root"]], output_root=roots["out"], **kw)


@pytest.fixture(scope="module")
def backend(lite_medsam):
    from medsam_lite.backends import make_backend

    return make_backend(lite_medsam, "torch")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Dict[str, Path]:
    """A root with the nuclei case, a symlink inside the root to it, a symlink to a file outside."""
    base = tmp_path_factory.mktemp("serve_security")
    root, outside, out = base / "cases", base / "outside", base / "out"
    for folder in (root, outside, out):
        folder.mkdir()
    shutil.copy(example_path(NUCLEI), root / NUCLEI)
    shutil.copy(example_path(NUCLEI), outside / "secret.npz")
    (root / "escape.npz").symlink_to(outside / "secret.npz")
    (root / "alias.npz").symlink_to(root / NUCLEI)
    return {"root": root, "outside": outside, "out": out}


@contextlib.contextmanager
def app_client(backend, config) -> Iterator[TestClient]:
    from medsam_lite.serve.app import create_app

    with TestClient(create_app(config, backend=backend), base_url=ORIGIN, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def client(backend, roots) -> Iterator[TestClient]:
    with app_client(backend, _config(roots)) as c:
        yield c


def server_of(client) -> Any:
    return client.app.state.server


def open_case(client, path: Path, **headers) -> dict:
    r = client.post("/api/cases", json={"path": str(path)}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def segment(client, case_id: str) -> dict:
    r = client.post(f"/api/cases/{case_id}/segment", json={"box": BOX, "z": 0})
    assert r.status_code == 200, r.text
    return r.json()


def one_line_4xx(r, *statuses: int) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if statuses:
        assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert len(r.content) < 1000, f"{len(r.content)} bytes of error"
    if r.headers.get("content-type", "").startswith("application/json"):
        detail = r.json()["detail"]
    else:
        detail = r.text
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


def tmp_files(client) -> List[Path]:
    return [p for p in server_of(client).tmp.rglob("*") if p.is_file()]


def case_ids(client) -> List[str]:
    return [s.id for s in server_of(client).cases.all()]


def multipart(name: str, data: bytes, content_type: str = "multipart/form-data") -> Tuple[bytes, Dict[str, str]]:
    boundary = "medsamfuzzboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"content-type": f"{content_type}; boundary={boundary}"}


@pytest.fixture()
def no_tracebacks(caplog):
    """Fails the test if anything logged a traceback or an error (uvicorn logs 500s at ERROR)."""
    caplog.set_level(logging.WARNING)
    yield caplog
    records = caplog.get_records("setup") + caplog.get_records("call")  # (caplog.records is teardown's here)
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not bad, [f"{r.name}: {r.getMessage()[:200]}" for r in bad]


# ------------------------------------------------------------------ item 7: Host names, cross-site, eviction
def test_foreign_host_names_are_refused(client, roots):
    info = open_case(client, roots["root"] / NUCLEI)
    for host in ("attacker.example", "attacker.example:8765", "127.0.0.1.attacker.example", "localhost.evil"):
        for url in ("/api/files", f"/api/cases/{info['id']}/slice/0.png", "/api/info", "/"):
            r = client.get(url, headers={"host": host})
            one_line_4xx(r, 400)
            assert str(roots["root"]) not in r.text and b"PNG" not in r.content
        r = client.post("/api/cases", json={"path": str(roots["root"] / NUCLEI)}, headers={"host": host})
        one_line_4xx(r, 400)
    assert case_ids(client) == [info["id"]]
    for host in ("localhost:8765", "127.0.0.1", "LOCALHOST:1234", "[::1]:8765"):
        r = client.get("/api/files", headers={"host": host})
        assert r.status_code == 200 and str(roots["root"] / NUCLEI) in r.json()["files"], (host, r.text)


def test_allowed_host_option(backend, roots):
    with app_client(backend, _config(roots, host="0.0.0.0", allowed_hosts=["annotator.lan"])) as c:
        assert c.get("/api/info", headers={"host": "annotator.lan:8765"}).status_code == 200
        assert c.get("/api/info", headers={"host": "127.0.0.1:8765"}).status_code == 200
        one_line_4xx(c.get("/api/info", headers={"host": "0.0.0.0:8765"}), 400)  # a wildcard bind is no name
        one_line_4xx(c.get("/api/info", headers={"host": "attacker.example"}), 400)
    with app_client(backend, _config(roots, host="192.168.7.7")) as c:
        assert c.get("/api/info", headers={"host": "192.168.7.7:8765"}).status_code == 200


def test_cli_allowed_host(capsys):
    from medsam_lite.cli.main import build_parser, main

    args = build_parser().parse_args(["serve", "--allowed-host", "annotator.lan", "--allowed-host", "10.0.0.5"])
    assert args.allowed_host == ["annotator.lan", "10.0.0.5"]
    for bad in ("*", "*.example.com", "evil.example:8765", "a b"):
        assert main(["serve", "--allowed-host", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "not a host name" in err


def test_cross_site_requests_are_refused_and_change_nothing(client, roots):
    path = str(roots["root"] / NUCLEI)
    body = json.dumps({"path": path})
    # the attack of the issue: a cross-site form / fetch posts text/plain, which needs no CORS preflight
    one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "text/plain"}), 415)
    one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "text/plain", "origin": EVIL}), 403)
    one_line_4xx(client.post("/api/cases", content=f"path={path}",
                             headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "application/json", "origin": EVIL}),
                 403)
    one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "application/json",
                                                                  "origin": "null"}), 403)
    one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "application/json",
                                                                  "sec-fetch-site": "cross-site"}), 403)
    data, headers = multipart(NUCLEI, example_path(NUCLEI).read_bytes())
    one_line_4xx(client.post("/api/cases", content=data, headers={**headers, "origin": EVIL}), 403)
    one_line_4xx(client.get("/api/files", headers={"origin": EVIL}), 403)
    assert case_ids(client) == [] and tmp_files(client) == []
    # the page's own requests: same origin (the page sends JSON, or multipart for an upload)
    info = open_case(client, roots["root"] / NUCLEI, origin=ORIGIN, **{"sec-fetch-site": "same-origin"})
    r = client.post("/api/cases", content=data, headers={**headers, "origin": ORIGIN})
    assert r.status_code == 200, r.text
    # an edit from another site does nothing
    one_line_4xx(client.post(f"/api/cases/{info['id']}/segment", content=json.dumps({"box": BOX, "z": 0}),
                             headers={"content-type": "text/plain"}), 415)
    one_line_4xx(client.delete(f"/api/cases/{info['id']}", headers={"origin": EVIL}), 403)
    assert info["id"] in case_ids(client) and not server_of(client).cases.get(info["id"]).objects
    # a link from anywhere may open the page; nothing may frame it or embed its images
    page = client.get("/", headers={"sec-fetch-site": "cross-site"})
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]
    png = client.get(f"/api/cases/{info['id']}/slice/0.png")
    assert png.headers["cross-origin-resource-policy"] == "same-origin"
    assert "access-control-allow-origin" not in png.headers


def test_a_case_with_unsaved_changes_is_never_evicted(backend, roots):
    path = roots["root"] / NUCLEI
    with app_client(backend, _config(roots, max_cases=2)) as client:
        a = open_case(client, path)
        segment(client, a["id"])  # unsaved work on a
        b = open_case(client, path)
        c = open_case(client, path)  # full: b (nothing to lose) is closed, not a
        assert sorted(case_ids(client)) == sorted([a["id"], c["id"]])
        assert len(client.get(f"/api/cases/{a['id']}").json()["objects"]) == 1
        one_line_4xx(client.get(f"/api/cases/{b['id']}"), 404)
        segment(client, c["id"])
        r = client.post("/api/cases", json={"path": str(path)})  # every open case has unsaved changes
        assert "unsaved" in one_line_4xx(r, 409)
        data, headers = multipart(NUCLEI, path.read_bytes())
        assert "unsaved" in one_line_4xx(client.post("/api/cases", content=data, headers=headers), 409)
        assert sorted(case_ids(client)) == sorted([a["id"], c["id"]]) and tmp_files(client) == []
        assert client.get(f"/api/cases/{a['id']}").json()["unsaved"] is True
        r = client.post(f"/api/cases/{a['id']}/save", json={"out_dir": "a"})
        assert r.status_code == 200 and client.get(f"/api/cases/{a['id']}").json()["unsaved"] is False
        d = open_case(client, path)  # now a (saved) makes room
        assert sorted(case_ids(client)) == sorted([c["id"], d["id"]])
        assert client.get(f"/api/cases/{c['id']}/labels").status_code == 200  # a download counts as saved
        e = open_case(client, path)
        assert sorted(case_ids(client)) == sorted([d["id"], e["id"]])


# ------------------------------------------------------------------ item 8: body limits, short details
def test_oversized_bodies_get_413(client, roots, no_tracebacks):
    big_json = json.dumps({"path": "/" + "a" * (3 * 2**20)}).encode()
    one_line_4xx(client.post("/api/cases", content=big_json, headers={"content-type": "application/json"}), 413)
    mid_json = json.dumps({"path": "/" + "a" * (200 * 2**10)}).encode()  # over the JSON limit, under the upload one
    one_line_4xx(client.post("/api/cases", content=mid_json, headers={"content-type": "application/json"}), 413)
    for casing in ("Multipart/Form-Data", "MULTIPART/FORM-DATA", "multipart/form-data"):
        data, headers = multipart("big.npz", b"\0" * (3 * 2**20), casing)
        one_line_4xx(client.post("/api/cases", content=data, headers=headers), 413)
    # no Content-Length: the bytes are counted as they stream in
    data, headers = multipart("big.npz", b"\0" * (3 * 2**20))
    chunks = [data[i:i + 2**16] for i in range(0, len(data), 2**16)]
    one_line_4xx(client.post("/api/cases", content=iter(chunks), headers=headers), 413)
    one_line_4xx(client.post("/api/cases", content=iter([big_json[i:i + 2**16] for i in range(0, len(big_json), 2**16)]),
                             headers={"content-type": "application/json"}), 413)
    info = open_case(client, roots["root"] / NUCLEI)
    one_line_4xx(client.post(f"/api/cases/{info['id']}/segment", content=big_json,
                             headers={"content-type": "application/json"}), 413)
    one_line_4xx(client.post(f"/api/cases/{info['id']}/undo", content=big_json,
                             headers={"content-type": "application/json"}), 413)
    assert case_ids(client) == [info["id"]] and tmp_files(client) == []
    assert client.get("/api/info").status_code == 200


def test_error_details_are_short(client, roots):
    long_path = "/" + "p" * 60000  # under the JSON body limit
    detail = one_line_4xx(client.post("/api/cases", json={"path": long_path}), 400)
    assert len(detail) <= 400 and "not found" in detail
    detail = one_line_4xx(client.post("/api/cases", json={"path": str(roots["root"] / NUCLEI), "window": "w" * 50000}),
                          400)
    assert len(detail) <= 400
    info = open_case(client, roots["root"] / NUCLEI)
    detail = one_line_4xx(client.get(f"/api/cases/{info['id']}/slice/0.png", params={"window": "q" * 6000}), 400)
    assert len(detail) <= 400
    detail = one_line_4xx(client.post(f"/api/cases/{info['id']}/save", json={"out_dir": "../" * 20000}), 400)
    assert len(detail) <= 400
    data, headers = multipart("n" * 5000 + ".nii.gz", b"\x1f\x8b garbage")
    assert len(one_line_4xx(client.post("/api/cases", content=data, headers=headers), 400)) <= 400


# ------------------------------------------------------------------ item 9: no 500, no traceback
def test_nested_json_and_nul_bytes_are_one_line_4xx(client, roots, no_tracebacks):
    outputs = sorted(roots["out"].rglob("*"))
    nested = b"[" * 30000 + b"]" * 30000  # 60 kB: under the body limit, far over Python's recursion limit
    nested_obj = b'{"path": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    for body in (nested, nested_obj):
        one_line_4xx(client.post("/api/cases", content=body, headers={"content-type": "application/json"}), 400, 422)
    info = open_case(client, roots["root"] / NUCLEI)
    for url in (f"/api/cases/{info['id']}/segment", f"/api/cases/{info['id']}/propagate",
                f"/api/cases/{info['id']}/save"):
        one_line_4xx(client.post(url, content=nested, headers={"content-type": "application/json"}), 400, 422)
    one_line_4xx(client.patch(f"/api/cases/{info['id']}/objects/1", content=nested,
                              headers={"content-type": "application/json"}), 400, 404, 422)
    for path in ("/tmp/a\0b.npz", str(roots["root"] / NUCLEI) + "\0", "\0"):
        assert "NUL" in one_line_4xx(client.post("/api/cases", json={"path": path}), 400)
    for out_dir in ("a\0b", "\0"):
        assert "NUL" in one_line_4xx(client.post(f"/api/cases/{info['id']}/save", json={"out_dir": out_dir}), 400)
    data, headers = multipart("a\0b.npz", example_path(NUCLEI).read_bytes())
    r = client.post("/api/cases", content=data, headers=headers)
    assert r.status_code < 500, r.text
    assert case_ids(client)[0] == info["id"] and sorted(roots["out"].rglob("*")) == outputs


# ------------------------------------------------------------------ item 10: temporary files, listing
def test_upload_files_do_not_outlive_their_case(backend, roots):
    data, headers = multipart(NUCLEI, example_path(NUCLEI).read_bytes())
    with app_client(backend, _config(roots, max_cases=1)) as client:
        bad, bad_headers = multipart("corrupt.nii.gz", b"\x1f\x8b garbage" * 1000)
        one_line_4xx(client.post("/api/cases", content=bad, headers=bad_headers), 400)
        one_line_4xx(client.post("/api/cases", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}))
        assert tmp_files(client) == []
        r = client.post("/api/cases", content=data, headers=headers)
        assert r.status_code == 200, r.text
        assert len(tmp_files(client)) == 1  # the open case's file
        r2 = client.post("/api/cases", content=data, headers=headers)  # max_cases 1: the first (unedited) closes
        assert r2.status_code == 200 and case_ids(client) == [r2.json()["id"]]
        assert len(tmp_files(client)) == 1
        assert client.delete(f"/api/cases/{r2.json()['id']}").status_code == 200
        assert tmp_files(client) == []
        assert client.get(f"/api/cases/{r.json()['id']}").status_code == 404


def test_file_list_hides_symlinks_leading_outside(client, roots):
    listed = client.get("/api/files").json()["files"]
    assert str(roots["root"] / NUCLEI) in listed and str(roots["root"] / "alias.npz") in listed
    assert str(roots["root"] / "escape.npz") not in listed and not any("secret" in f for f in listed)
    one_line_4xx(client.post("/api/cases", json={"path": str(roots["root"] / "escape.npz")}), 400)


# ------------------------------------------------------------------ fuzz over every route
PARAM_VALUES: Dict[str, Callable[[dict], List[str]]] = {
    "case_id": lambda ids: [ids["case"], "nope", "0" * 12, "%00", "..", "x" * 3000, "%E2%80%AE%22"],
    "job_id": lambda ids: [ids["job"], "nope", "%00", "x" * 3000],
    "oid": lambda ids: [str(ids["oid"]), "0", "-1", "255", "9" * 40, "x", "1.5"],
    "z": lambda ids: ["0", "-1", "1", "9" * 40, "x", "nan"],
    "name": lambda ids: ["app.js", "nope.js", "..%2Fapp.py", "%00", "x" * 3000],
}
FALLBACK_VALUES = ["x", "%00", "-1", "x" * 3000]
QUERIES = ["", "?window=auto", "?window=nonsense", "?window=1,0", "?window=1e999,1e999", "?window=%00",
           "?window=" + "w" * 3000, "?window=a&window=b"]


def route_table(app) -> List[Tuple[str, str]]:
    """(method, path template) of every route of ``app`` (FastAPI's route contexts where available)."""
    try:
        from fastapi.routing import iter_route_contexts

        routes = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = list(app.routes)
    out = []
    for route in routes:
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, route.path))
    return out


def fill(template: str, values: Dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def params_of(template: str) -> List[str]:
    import re

    return re.findall(r"{(\w+)(?::\w+)?}", template)


def path_variants(template: str, ids: dict) -> List[str]:
    """The template with valid ids, then with one parameter at a time malformed."""
    names = params_of(template)
    values = {n: PARAM_VALUES.get(n, lambda _: FALLBACK_VALUES)(ids) for n in names}
    base = {n: v[0] for n, v in values.items()}
    out = [fill(template, base)]
    for n in names:
        out += [fill(template, {**base, n: v}) for v in values[n][1:]]
    return out


def valid_body(template: str, ids: dict) -> dict:
    if template == "/api/cases":
        return {"path": ids["path"]}
    if template.endswith("/segment"):
        return {"box": BOX, "z": 0}
    if template.endswith("/propagate"):
        return {"box": [1, 1, 0, 9, 9, 0]}
    if "/objects/" in template:
        return {"name": "renamed"}
    if template.endswith("/save"):
        return {"out_dir": "fuzz"}
    return {}


JSON = {"content-type": "application/json"}


def body_variants(template: str, ids: dict) -> List[Tuple[str, Any, Dict[str, str], Any]]:
    """(name, content, headers, required status(es) or None) of the malformed / oversized bodies."""
    valid = json.dumps(valid_body(template, ids)).encode()
    keys = ("path", "out_dir", "name", "window", "box", "z", "object")
    weird = {k: "a\0b" for k in keys}
    huge = {"box": [1e308, -1e308, 0, 1], "z": 10**30, "object": 10**30, "name": "n" * 150, "path": "/" + "p" * 50000,
            "out_dir": "../" * 10000, "window": "9" * 1000}
    types = {"box": "abc", "z": "x", "object": [], "name": 5, "path": 5, "out_dir": {}, "window": 5}
    big = b'{"path": "' + b"a" * (300 * 2**10) + b'"}'
    up_big, up_headers = multipart("big.npz", b"\0" * (3 * 2**20), "MultiPart/Form-DATA")
    return [
        ("no body", None, {}, None), ("empty json", b"", JSON, None), ("{}", b"{}", JSON, None),
        ("null", b"null", JSON, None), ("array", b"[1, 2]", JSON, None), ("broken", b"{not json", JSON, None),
        ("nested", b"[" * 30000 + b"]" * 30000, JSON, None), ("nul", json.dumps(weird).encode(), JSON, None),
        ("huge values", json.dumps(huge).encode(), JSON, None), ("nan", b'{"box": [NaN, 1, Infinity, 2], "z": 0}',
                                                                   JSON, None),
        ("wrong types", json.dumps(types).encode(), JSON, None),
        ("bad utf-8", b'{"path": "\xff\xfe"}', JSON, None),
        ("charset casing", valid, {"content-type": "Application/JSON; charset=UTF-8"}, None),
        ("oversized json", big, JSON, 413),
        ("oversized chunked", iter([big[i:i + 2**15] for i in range(0, len(big), 2**15)]), JSON, 413),
        ("oversized multipart, odd casing", up_big, up_headers, 413 if template == "/api/cases" else (413, 415)),
        ("multipart garbage", b"garbage", {"content-type": "multipart/form-data; boundary=xyz"}, None),
        ("multipart without boundary", b"--\r\n", {"content-type": "multipart/form-data"}, None),
    ]


def cross_site_variants(ids: dict) -> List[Tuple[str, Dict[str, str], Optional[int], bool]]:
    """(name, headers, required status, applies to page GETs too)."""
    return [
        ("foreign host", {"host": "attacker.example"}, 400, True),
        ("foreign host with port", {"host": "localhost.attacker.example:8765"}, 400, True),
        ("foreign origin", {"origin": EVIL}, 403, False),
        ("null origin", {"origin": "null"}, 403, False),
        ("cross-site fetch", {"sec-fetch-site": "cross-site"}, 403, False),
        ("same-site fetch (another local port)", {"sec-fetch-site": "same-site", "origin": "http://127.0.0.1:3000"},
         403, False),
    ]


def snapshot(server) -> tuple:
    """Everything a request could change: open cases (labels, objects, history), jobs, files."""
    cases = []
    for s in server.cases.all():
        with s.lock:
            cases.append((s.id, json.dumps([o.to_json() for o in s.objects.values()]),
                          hashlib.sha1(s.labels.tobytes()).hexdigest(), len(s.undo), len(s.redo),
                          getattr(s, "version", None), getattr(s, "saved_version", None), s.name))
    table = server.jobs.all() if hasattr(server.jobs, "all") else list(server.jobs.values())  # (old: a dict)
    jobs = sorted((j.id, j.cancel.is_set()) for j in table)
    tmp = sorted(str(p) for p in server.tmp.rglob("*") if not p.relative_to(server.tmp).parts[0].startswith("dl-"))
    out = sorted(str(p) for p in server.output_root.rglob("*"))
    return cases, jobs, tmp, out


def heal(client, server, ids: dict) -> None:
    """After an accepted request: make sure the main case (with one object) and its job still exist."""
    try:
        state = server.cases.get(ids["case"])
    except KeyError:
        r = client.post("/api/cases", json={"path": ids["path"]})
        assert r.status_code == 200, r.text
        state = server.cases.get(r.json()["id"])
        ids["case"], ids["job"] = state.id, state.embed_job.id
    if not state.objects:
        r = client.post(f"/api/cases/{state.id}/segment", json={"box": BOX, "z": 0})
        assert r.status_code == 200, r.text
    ids["oid"] = next(iter(state.objects))
    table = server.jobs.all() if hasattr(server.jobs, "all") else list(server.jobs.values())
    if ids["job"] not in [j.id for j in table]:
        ids["job"] = state.embed_job.id


class Fuzzer:
    """Sends requests through ``client`` (TestClient or httpx on a real server), checking each."""

    def __init__(self, client, server) -> None:
        self.client, self.server = client, server
        self.sent: Dict[Tuple[str, str], int] = {}
        self.failures: List[str] = []

    def send(self, method: str, template: str, url: str, content: Any = None, headers: Optional[dict] = None,
             required: Any = None, what: str = "") -> None:
        before = snapshot(self.server)
        try:
            r = self.client.request(method, url, content=content, headers=headers or {})
        except Exception as exc:  # a transport failure is a finding too
            self.failures.append(f"{method} {url[:80]} [{what}]: {type(exc).__name__}: {exc}")
            return
        self.sent[(method, template)] = self.sent.get((method, template), 0) + 1
        where = f"{method} {url[:80]} [{what}] -> {r.status_code} {r.text[:120]!r}"
        if r.status_code >= 500:
            self.failures.append("5xx: " + where)
        elif required is not None and r.status_code not in ((required,) if isinstance(required, int) else required):
            self.failures.append(f"not refused with {required}: " + where)
        elif r.status_code >= 400:
            try:
                one_line_4xx(r)
            except AssertionError as exc:
                self.failures.append(f"bad error ({exc}): " + where)
            if snapshot(self.server) != before:
                self.failures.append("state changed by a refused request: " + where)

    def route(self, method: str, template: str, ids: dict, *, paths: bool, bodies: bool, cross_site: bool) -> None:
        page = not template.startswith("/api/")
        valid = json.dumps(valid_body(template, ids)).encode()
        base = path_variants(template, ids)[0]
        if paths:
            for url in path_variants(template, ids):
                for query in (QUERIES if "{z}" in template or template == "/" else ["", QUERIES[5]]):
                    self.send(method, template, url + query, what="path/query")
                    heal(self.client, self.server, ids)
        if bodies:
            for name, content, headers, required in body_variants(template, ids):
                self.send(method, template, base, content, headers, required, name)
                heal(self.client, self.server, ids)
        if cross_site:
            for name, headers, required, on_pages in cross_site_variants(ids):
                if page and not on_pages:
                    continue
                body = None if method in ("GET", "DELETE") else valid
                self.send(method, template, base, body, {**JSON, **headers} if body else headers, required, name)
                if method not in ("GET", "HEAD") and not page:
                    self.send(method, template, base, valid, {**headers, "content-type": "text/plain"},
                              required if "host" in headers else 403, name + ", text/plain")
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                for ctype in ("text/plain", "application/x-www-form-urlencoded", "TEXT/PLAIN;charset=utf-8"):
                    self.send(method, template, base, valid, {"content-type": ctype}, 415, "non-JSON " + ctype)
            heal(self.client, self.server, ids)


def _start_ids(client, roots) -> dict:
    ids = {"path": str(roots["root"] / NUCLEI)}
    info = open_case(client, Path(ids["path"]))
    ids.update(case=info["id"], job=info["embedding"]["id"])
    segment(client, info["id"])
    ids["oid"] = 1
    return ids


def test_fuzz_every_route_in_process(client, roots, no_tracebacks):
    ids = _start_ids(client, roots)
    server = server_of(client)
    table = route_table(client.app)
    assert len(table) >= 20 and ("POST", "/api/cases") in table
    fuzz = Fuzzer(client, server)
    for method, template in table:
        fuzz.route(method, template, ids, paths=True, bodies=True, cross_site=True)
    assert not fuzz.failures, "\n".join(fuzz.failures[:30])
    assert set(fuzz.sent) == set(table)  # every route was exercised
    assert sum(fuzz.sent.values()) > 20 * len(table)


# ------------------------------------------------------------------ a real uvicorn on 127.0.0.1
@contextlib.contextmanager
def real_server(backend, config) -> Iterator[Tuple[str, Any]]:
    """The app in a uvicorn thread on 127.0.0.1:<free port>, logging through the root logger (caplog)."""
    import uvicorn

    from medsam_lite.serve.app import create_app

    app = create_app(config, backend=backend)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
    assert not thread.is_alive()


def raw(url: str, request: bytes, body_after: bytes = b"", close_early: bool = False) -> bytes:
    """Send ``request`` bytes on a fresh connection; return the response bytes (up to the first 64 kB)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(request)
        if close_early:
            s.sendall(body_after)
            return b""
        data = b""
        with contextlib.suppress(socket.timeout, ConnectionResetError):
            while len(data) < 65536 and b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_real_uvicorn_refuses_and_keeps_serving(backend, roots, no_tracebacks):
    import httpx

    with real_server(backend, _config(roots)) as (url, app):
        server = app.state.server
        port = url.rsplit(":", 1)[1]
        # DNS rebinding: the right address, a foreign name
        assert status_of(raw(url, b"GET /api/files HTTP/1.1\r\nHost: attacker.example\r\n\r\n")) == 400
        assert status_of(raw(url, b"GET /api/files HTTP/1.0\r\n\r\n")) == 400  # no Host at all
        ok = raw(url, f"GET /api/files HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode())
        assert status_of(ok) == 200
        # a 64 MiB body announced: refused before a byte of it is read
        head = (f"POST /api/cases HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {64 * 2**20}\r\n\r\n").encode()
        t0 = time.monotonic()
        assert status_of(raw(url, head)) == 413 and time.monotonic() - t0 < 30
        bogus = (f"POST /api/cases HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 12\r\nContent-Length: 99\r\n\r\n").encode()
        assert 400 <= status_of(raw(url, bogus)) < 500
        # an upload whose client goes away half-way leaves no file behind
        data, headers = multipart(NUCLEI, example_path(NUCLEI).read_bytes())
        head = (f"POST /api/cases HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {headers['content-type']}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        raw(url, head, data[: len(data) // 2], close_early=True)
        with httpx.Client(base_url=url, timeout=120) as client:
            end = time.monotonic() + 30
            while any(p.is_file() for p in server.tmp.rglob("*")) and time.monotonic() < end:
                time.sleep(0.2)
            assert not [p for p in server.tmp.rglob("*") if p.is_file()]
            assert server.cases.all() == []
            # the same fuzz as in process, over the network (malformed bodies and cross-site on every route)
            ids = _start_ids(client, roots)
            fuzz = Fuzzer(client, server)
            table = route_table(app)
            for method, template in table:
                fuzz.route(method, template, ids, paths=False, bodies=True, cross_site=True)
            assert not fuzz.failures, "\n".join(fuzz.failures[:30])
            assert set(fuzz.sent) == set(table)
            assert client.get("/api/info").status_code == 200

