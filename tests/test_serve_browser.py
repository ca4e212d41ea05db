"""Real-browser test of ``medsam-lite serve``: headless Chromium driven by selenium.

Starts the server on 127.0.0.1 (a free port) in a thread, opens the page, loads a bundled case,
draws a box with mouse events and checks that the overlay canvas shows the mask inside the box
(pixel for pixel the server's label map). Skipped, with the reason, when Chromium / chromedriver /
selenium are absent (Debian: ``apt-get install chromium chromium-driver``).

Set ``MEDSAM_LITE_SCREENSHOT=docs/serve_screenshot.png`` to also write the page's screenshot there.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medsam_lite.resources import example_path

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
WAIT_S = 300  # bounded waits: the shared 2-core CPU can be slow


def _skip_reason() -> str:
    try:
        import selenium  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"selenium / uvicorn not installed ({exc.name}); pip install -e .[test]"
    if CHROMIUM is None or DRIVER is None:
        return "headless Chromium and chromedriver not found (apt-get install chromium chromium-driver)"
    return ""


pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")


MR_CROP = "3DBox_MR_crop.npz"
RAS = "mr_ras.nii.gz"
TUMOUR = (162, 84, 208, 153)  # the bundled MR case's tumour box; its slices 11..17 are 1..7 of the crop


def _small_cases(folder: Path) -> Path:
    """Small cases cut from the bundled MR (few slices: few encoder runs): a 9-slice npz (no geometry) and a
    3-slice NIfTI with RAS axes (the page turns it radiologically)."""
    from medsam_lite.resources import load_example

    mr = load_example("3DBox_MR_brain_tumour.npz")["imgs"]
    np.savez(folder / MR_CROP, imgs=mr[10:19], boxes=np.array([[*TUMOUR[:2], 1, *TUMOUR[2:], 7]]))
    try:
        import nibabel as nib

        nib.save(nib.Nifti1Image(mr[13:16].transpose(2, 1, 0), np.diag([1.0, 1.0, 3.0, 1.0])), str(folder / RAS))
    except ImportError:
        pass
    return folder


@pytest.fixture(scope="module")
def server_url(lite_medsam, tmp_path_factory):
    """The app on 127.0.0.1:<free port> in a uvicorn thread; stopped (and joined) at the end."""
    import uvicorn

    from medsam_lite.backends import make_backend
    from medsam_lite.serve.app import create_app
    from medsam_lite.serve.config import ServeConfig

    root = example_path("2DBox_Microscopy_nuclei.npz").parent
    out = tmp_path_factory.mktemp("serve_out")
    small = _small_cases(tmp_path_factory.mktemp("serve_small"))
    app = create_app(ServeConfig(roots=[root, small], output_root=out), backend=make_backend(lite_medsam, "torch"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=60)
    sock.close()
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,820",
                "--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(DRIVER), options=options)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def _wait(driver, predicate, what: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d), message=what)


def _open(driver, url: str, name: str, path: Path = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    path = str((path or example_path(name)).resolve())
    _wait(driver, lambda d: path in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR,
                                                                                       "#file-select option")],
          "server file list")
    Select(driver.find_element(By.ID, "file-select")).select_by_value(path)
    driver.find_element(By.ID, "open-path").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.caseId || ''"), "case opened")


def _drag_box(driver, box) -> None:
    """Mouse-drag from image pixel (x0, y0) to (x1, y1) of ``box`` on the viewer (ActionChains, real
    mouse events, from and to the pixels' centres)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.ID, "viewport")
    geo = driver.execute_script(
        "const c = document.getElementById('box-canvas').getBoundingClientRect();"
        "const v = document.getElementById('viewport').getBoundingClientRect();"
        "return [c.left, c.top, c.width, c.height, v.left + v.width / 2, v.top + v.height / 2];")
    left, top, width, height, vcx, vcy = geo
    w = driver.execute_script("return document.getElementById('box-canvas').width")
    h = driver.execute_script("return document.getElementById('box-canvas').height")

    def offset(x: float, y: float):
        # the centre of image pixel (x, y) in client coordinates, as an offset from the viewport's centre
        cx, cy = left + (x + 0.5) * width / w, top + (y + 0.5) * height / h
        return int(round(cx - vcx)), int(round(cy - vcy))

    x0, y0, x1, y1 = box
    dx0, dy0 = offset(x0, y0)
    dx1, dy1 = offset(x1, y1)
    (ActionChains(driver).move_to_element_with_offset(viewport, dx0, dy0).click_and_hold()
     .move_to_element_with_offset(viewport, (dx0 + dx1) // 2, (dy0 + dy1) // 2)
     .move_to_element_with_offset(viewport, dx1, dy1).release().perform())


def _overlay_alpha(driver) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById('overlay-canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const a = new Array(c.width * c.height); for (let i = 0; i < a.length; i++) a[i] = d[4 * i + 3];"
        "return [c.width, c.height, a];")
    w, h, alpha = data
    return np.asarray(alpha, np.uint8).reshape(h, w)


def _labels(url: str, case_id: str, z: int, hw) -> np.ndarray:
    import httpx

    r = httpx.get(f"{url}/api/cases/{case_id}/labels/{z}.bin", timeout=60)
    r.raise_for_status()
    return np.frombuffer(r.content, np.uint8).reshape(hw)


def test_browser_draw_box_shows_mask(server_url, driver):
    _open(driver, server_url, "2DBox_Microscopy_nuclei.npz")
    _wait(driver, lambda d: "done" in d.execute_script("return document.getElementById('embed-label').textContent"),
          "background embedding")
    box = (410, 443, 441, 466)  # a nucleus (the case's first box)
    _drag_box(driver, box)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "1", "first mask")
    _wait(driver, lambda d: int(d.execute_script(
        "return document.getElementById('overlay-canvas').dataset.maskPixels || 0")) > 0, "overlay drawn")
    alpha = _overlay_alpha(driver)
    case_id = driver.execute_script("return document.body.dataset.caseId")
    labels = _labels(server_url, case_id, 0, alpha.shape)
    # the overlay is the server's label map, pixel for pixel, and the mask lies in the drawn box
    np.testing.assert_array_equal(alpha > 0, labels > 0)
    ys, xs = np.nonzero(alpha)
    assert len(xs) > 50
    x0, y0, x1, y1 = box
    inside = (xs >= x0 - 2) & (xs <= x1 + 2) & (ys >= y0 - 2) & (ys <= y1 + 2)
    assert inside.mean() > 0.95, f"only {inside.mean():.0%} of the mask pixels lie in the drawn box"
    text = driver.find_element("id", "latency").text
    assert "ms on the server" in text
    # the box the page sent is the drawn one (mouse positions are whole screen pixels: +-1 image pixel)
    import httpx

    drawn = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()["objects"][0]["box"]
    assert np.abs(np.subtract(drawn, box)).max() <= 1, drawn
    # edit the box: drag its right edge (the object stays selected) to x = 450
    _drag_box(driver, (drawn[2] + 1, (y0 + y1) // 2, 450, (y0 + y1) // 2))
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "2", "edited mask")
    objects = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()["objects"]
    assert len(objects) == 1, objects
    edited = objects[0]["box"]
    assert edited[:2] == drawn[:2] and edited[3] == drawn[3] and abs(edited[2] - 450) <= 1, (drawn, edited)
    labels = _labels(server_url, case_id, 0, alpha.shape)
    _wait(driver, lambda d: int(d.execute_script(
        "return document.getElementById('overlay-canvas').dataset.maskPixels || 0")) == int((labels > 0).sum()),
        "overlay of the edited box")
    np.testing.assert_array_equal(_overlay_alpha(driver) > 0, labels > 0)
    shot = os.environ.get("MEDSAM_LITE_SCREENSHOT")
    if shot:
        _save_small_screenshot(driver, Path(shot))


def _save_small_screenshot(driver, path: Path) -> None:
    import cv2

    png = np.frombuffer(driver.get_screenshot_as_png(), np.uint8)
    image = cv2.imdecode(png, cv2.IMREAD_COLOR)
    image = cv2.resize(image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_browser_second_tab_upload_keeps_cases_apart(server_url, driver):
    """A second tab uploads the nuclei case through the page's file input; its box does not touch tab 1's case."""
    import httpx
    from selenium.webdriver.common.by import By

    first_tab = driver.current_window_handle
    first_case = driver.execute_script("return document.body.dataset.caseId")
    assert first_case, "run after test_browser_draw_box_shows_mask"
    before = httpx.get(f"{server_url}/api/cases/{first_case}", timeout=60).json()["objects"]
    driver.switch_to.new_window("tab")
    try:
        driver.get(server_url + "/")
        _wait(driver, lambda d: d.execute_script("return typeof S !== 'undefined' && S.colours.length > 0"), "page ready")
        driver.find_element(By.ID, "upload").send_keys(str(example_path("2DBox_Microscopy_nuclei.npz").resolve()))
        _wait(driver, lambda d: d.execute_script("return document.body.dataset.caseId || ''"), "upload opened")
        second_case = driver.execute_script("return document.body.dataset.caseId")
        assert second_case != first_case
        box = (43, 300, 59, 321)
        _drag_box(driver, box)
        _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "1", "mask in tab 2")
        second = httpx.get(f"{server_url}/api/cases/{second_case}", timeout=60).json()
        assert second["name"] == "2DBox_Microscopy_nuclei.npz" and len(second["objects"]) == 1
        labels = _labels(server_url, second_case, 0, (512, 512))
        np.testing.assert_array_equal(_overlay_alpha(driver) > 0, labels > 0)
        ys, xs = np.nonzero(labels)
        assert len(xs) > 20 and xs.min() >= box[0] - 2 and xs.max() <= box[2] + 2
    finally:
        driver.close()
        driver.switch_to.window(first_tab)
    assert httpx.get(f"{server_url}/api/cases/{first_case}", timeout=60).json()["objects"] == before
    first_labels = _labels(server_url, first_case, 0, (512, 512))
    assert not first_labels[300:322, 43:60].any()


def test_browser_save_keeps_the_typed_name(server_url, driver):
    """Type a name into the object list and press Save at once (the field never left with Tab or Enter): the
    saved label table beside the map holds the typed name, as does the label-table download."""
    import json

    import httpx
    from selenium.webdriver.common.by import By

    case_id = driver.execute_script("return document.body.dataset.caseId")
    assert case_id, "run after test_browser_draw_box_shows_mask"
    objects = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()["objects"]
    field = driver.find_element(By.CSS_SELECTOR, f"#objects input[data-id='{objects[0]['id']}']")
    field.clear()
    field.send_keys("nucleus with a halo")
    driver.find_element(By.ID, "save").click()
    _wait(driver, lambda d: "saved" in d.find_element(By.ID, "message").text, "saved")
    text = driver.find_element(By.ID, "message").text
    table_path = Path(text.split(" and its names ", 1)[1].strip())
    assert table_path.name == "2DBox_Microscopy_nuclei.labels.json"
    assert (table_path.parent / "2DBox_Microscopy_nuclei.npz").is_file()
    table = json.loads(table_path.read_text())
    assert table[str(objects[0]["id"])]["name"] == "nucleus with a halo"
    assert json.loads(httpx.get(f"{server_url}/api/cases/{case_id}/label-table", timeout=60).content) == table
    assert driver.find_element(By.ID, "download-names").get_attribute("href").endswith(f"/{case_id}/label-table")
    # a field whose text changed without a change event (set by script, as autofill does): sent before the save
    field = driver.find_element(By.CSS_SELECTOR, f"#objects input[data-id='{objects[0]['id']}']")  # re-rendered
    driver.execute_script("arguments[0].value = 'nucleus, edited'", field)
    driver.execute_script("document.getElementById('message').textContent = ''")
    driver.find_element(By.ID, "save").click()
    _wait(driver, lambda d: "saved" in d.find_element(By.ID, "message").text, "saved again")
    assert json.loads(table_path.read_text())[str(objects[0]["id"])]["name"] == "nucleus, edited"


@pytest.mark.slow
def test_browser_propagate_3d(server_url, driver):
    from selenium.webdriver.common.by import By

    _open(driver, server_url, "3DBox_MR_brain_tumour.npz")
    # the tumour box of the case on its middle slice (z 14 of 11..17), then propagate over 12..16
    driver.execute_script("const s = document.getElementById('slice'); s.value = 14;"
                          "s.dispatchEvent(new Event('input'));")
    _drag_box(driver, (162, 84, 208, 153))
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "1", "first mask")
    for field, value in (("z0", 12), ("z1", 16)):
        el = driver.find_element(By.ID, field)
        el.clear()
        el.send_keys(str(value))
    driver.find_element(By.ID, "propagate").click()
    _wait(driver, lambda d: "slices in" in d.find_element(By.ID, "prop-label").text, "propagation")
    driver.execute_script("const s = document.getElementById('slice'); s.value = 16;"
                          "s.dispatchEvent(new Event('input'));")
    case_id = driver.execute_script("return document.body.dataset.caseId")
    labels = _labels(server_url, case_id, 16, (256, 256))
    assert labels.any()
    _wait(driver, lambda d: int(d.execute_script(
        "return document.getElementById('overlay-canvas').dataset.maskPixels || 0")) == int((labels > 0).sum()),
        "overlay of slice 16")
    np.testing.assert_array_equal(_overlay_alpha(driver) > 0, labels > 0)


def _drag_image(driver, box) -> None:
    """Mouse-drag between the centres of image pixels (x0, y0) and (x1, y1), aimed through the page's own view
    transform (``imageToClient``: radiological turn, zoom, pan)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.ID, "viewport")
    vcx, vcy = driver.execute_script("const v = document.getElementById('viewport').getBoundingClientRect();"
                                     "return [v.left + v.width / 2, v.top + v.height / 2];")

    def offset(x: float, y: float):
        cx, cy = driver.execute_script("return imageToClient(arguments[0], arguments[1])", x + 0.5, y + 0.5)
        return int(round(cx - vcx)), int(round(cy - vcy))

    (dx0, dy0), (dx1, dy1) = offset(box[0], box[1]), offset(box[2], box[3])
    (ActionChains(driver).move_to_element_with_offset(viewport, dx0, dy0).click_and_hold()
     .move_to_element_with_offset(viewport, (dx0 + dx1) // 2, (dy0 + dy1) // 2)
     .move_to_element_with_offset(viewport, dx1, dy1).release().perform())


def _key(driver, key: str, ctrl: bool = False, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(driver)
    for held, mod in ((ctrl, Keys.CONTROL), (shift, Keys.SHIFT)):
        if held:
            chain = chain.key_down(mod)
    chain = chain.send_keys(key)
    for held, mod in ((ctrl, Keys.CONTROL), (shift, Keys.SHIFT)):
        if held:
            chain = chain.key_up(mod)
    chain.perform()


def _overlay_matches(driver, url: str, case_id: str, z: int, hw) -> np.ndarray:
    """Wait for the page's overlay of slice z, then check it against GET labels (pixel for pixel)."""
    labels = _labels(url, case_id, z, hw)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.overlayZ") == str(z) and int(
        d.execute_script("return document.getElementById('overlay-canvas').dataset.maskPixels || 0"))
        == int((labels > 0).sum()), f"overlay of slice {z}")
    np.testing.assert_array_equal(_overlay_alpha(driver) > 0, labels > 0)
    return labels


def test_browser_correction_end_to_end(server_url, driver, tmp_path_factory):
    """Keys move through slices; a box makes a pending object on its slice; Propagate spreads it from there; a box
    over it on another slice is a correction (no new object); ctrl+Z / ctrl+shift+Z undo / redo it; a cancelled
    job changes nothing. The overlay equals the API's labels after each step."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    small = Path(_small_root(server_url))
    _open(driver, server_url, MR_CROP, small / MR_CROP)
    case_id = driver.execute_script("return document.body.dataset.caseId")
    assert driver.execute_script("return document.body.dataset.z") == "4"  # the middle slice
    driver.find_element(By.ID, "viewport").click()  # focus the page, not a field
    for key, z in ((Keys.ARROW_UP, "5"), (Keys.PAGE_DOWN, "0"), (Keys.PAGE_UP, "8"), (Keys.ARROW_DOWN, "7")):
        _key(driver, key)
        _wait(driver, lambda d, z=z: d.execute_script("return document.body.dataset.z") == z, f"slice {z} by key")
    for _ in range(2):
        _key(driver, Keys.ARROW_DOWN)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.z") == "5", "slice 5")
    _drag_image(driver, TUMOUR)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "1", "first mask")
    info = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()
    assert len(info["objects"]) == 1 and info["objects"][0]["pending"] and info["objects"][0]["z"] == 5
    drawn = _overlay_matches(driver, server_url, case_id, 5, (256, 256))
    assert drawn.any()
    for field, value in (("z0", 1), ("z1", 7)):
        el = driver.find_element(By.ID, field)
        el.clear()
        el.send_keys(str(value))
    driver.find_element(By.ID, "propagate").click()
    _wait(driver, lambda d: "slices in" in d.find_element(By.ID, "prop-label").text, "propagation")
    np.testing.assert_array_equal(_labels(server_url, case_id, 5, (256, 256)), drawn)  # the drawn slice stays
    driver.find_element(By.ID, "viewport").click()
    for _ in range(3):
        _key(driver, Keys.ARROW_DOWN)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.z") == "2", "slice 2")
    before = _overlay_matches(driver, server_url, case_id, 2, (256, 256))
    correction = (158, 92, 204, 150)
    _drag_image(driver, correction)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "2", "correction")
    assert driver.execute_script("return document.body.dataset.lastAction") == "correct"
    objects = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()["objects"]
    assert len(objects) == 1 and abs(objects[0]["box"][0] - correction[0]) <= 1 and objects[0]["z"] == 2
    corrected = _overlay_matches(driver, server_url, case_id, 2, (256, 256))
    assert not np.array_equal(corrected, before)
    ys, xs = np.nonzero(corrected)
    assert xs.min() >= correction[0] - 3 and xs.max() <= correction[2] + 3
    shot = os.environ.get("MEDSAM_LITE_SCREENSHOT_CORRECTION")
    if shot:
        _save_small_screenshot(driver, Path(shot))
    _key(driver, "z", ctrl=True)  # undo the correction
    _wait(driver, lambda d: not d.find_element(By.ID, "redo").get_attribute("disabled"), "undone")
    np.testing.assert_array_equal(_overlay_matches(driver, server_url, case_id, 2, (256, 256)), before)
    _key(driver, "z", ctrl=True, shift=True)  # redo
    _wait(driver, lambda d: d.find_element(By.ID, "redo").get_attribute("disabled"), "redone")
    np.testing.assert_array_equal(_overlay_matches(driver, server_url, case_id, 2, (256, 256)), corrected)
    # hide / outline / opacity change the drawing, not the labels
    _key(driver, "h")
    _wait(driver, lambda d: d.execute_script(
        "return document.getElementById('overlay-canvas').dataset.maskPixels") == "0", "hidden")
    _key(driver, "h")
    _key(driver, "o")
    _wait(driver, lambda d: 0 < int(d.execute_script(
        "return document.getElementById('overlay-canvas').dataset.maskPixels")) < int((corrected > 0).sum()),
        "outline")
    _key(driver, "o")
    _overlay_matches(driver, server_url, case_id, 2, (256, 256))


def _small_root(url: str) -> str:
    import httpx

    roots = httpx.get(f"{url}/api/info", timeout=60).json()["roots"]
    return next(r for r in roots if "serve_small" in r)


def test_browser_radiological_view_with_markers(server_url, driver):
    """A NIfTI with RAS axes is shown as 3D Slicer shows it (patient's right on the left, anterior up) with the
    R / L / A / P markers; a box drawn on screen lands on the intended voxels."""
    pytest.importorskip("nibabel")
    import httpx
    from selenium.webdriver.common.by import By

    small = Path(_small_root(server_url))
    _open(driver, server_url, RAS, small / RAS)
    case_id = driver.execute_script("return document.body.dataset.caseId")
    letters = [driver.find_element(By.ID, f"mark-{side}").text for side in ("left", "right", "top", "bottom")]
    assert letters == ["R", "L", "A", "P"], letters
    assert "radiological" in driver.execute_script("return document.body.dataset.view")
    # column 0 (the patient's left in RAS) is drawn on the screen's right, row 0 (posterior) at the bottom
    x_left, _ = driver.execute_script("return imageToClient(0.5, 0.5)")
    x_right, y_bottom = driver.execute_script("return imageToClient(255.5, 255.5)")
    _, y_top = driver.execute_script("return imageToClient(0.5, 0.5)")
    assert x_left > x_right and y_top > y_bottom
    _drag_image(driver, TUMOUR)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.segments") == "1", "mask")
    box = httpx.get(f"{server_url}/api/cases/{case_id}", timeout=60).json()["objects"][0]["box"]
    assert np.abs(np.subtract(box, TUMOUR)).max() <= 1, box
    _overlay_matches(driver, server_url, case_id, 1, (256, 256))
    # the display flips (for files without geometry) swap the markers and the view, not the voxels
    driver.find_element(By.ID, "flip-h").click()
    letters = [driver.find_element(By.ID, f"mark-{side}").text for side in ("left", "right", "top", "bottom")]
    assert letters == ["L", "R", "A", "P"], letters
    x_col0, _ = driver.execute_script("return imageToClient(0.5, 0.5)")
    x_col255, _ = driver.execute_script("return imageToClient(255.5, 0.5)")
    assert x_col0 < x_col255
    driver.find_element(By.ID, "flip-h").click()
