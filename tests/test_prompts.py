"""``medsam-lite segment VOLUME --prompts prompts.json`` (:mod:`medsam_lite.prompts`): a session replayed from JSON.

* Malformed or out-of-range scripts: one line naming the file and the JSON path of the bad field, exit 2,
  nothing written (no output folder, no mask).
* The shipped JSON Schema agrees with the checker on good and bad scripts (when ``jsonschema`` is installed).
* Reproducibility: the CLI's label map equals the same actions done through the Python Session, on the bundled
  MR tumour (3D, a correction, a second object, a lock) and a real 2D microscopy crop (2D boxes, a 2D correction);
  the label table carries the script's names.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from medsam_lite.cli.main import main
from medsam_lite.predictor import Predictor
from medsam_lite.prompts import parse_prompts
from medsam_lite.resources import package_file
from medsam_lite.transforms import box_from_mask
from tests.conftest import EXAMPLES, FIXTURES

MR = EXAMPLES / "3DBox_MR_brain_tumour.npz"
MR_BOX = [162, 84, 11, 208, 153, 17]


def _run(tmp_path: Path, prompts: object, case: Path = MR, cache: Optional[Path] = None):
    script = tmp_path / "prompts.json"
    script.write_text(prompts if isinstance(prompts, str) else json.dumps(prompts))
    out = tmp_path / "out"
    extra = ["--embedding-cache", str(cache)] if cache is not None else []
    code = main(["segment", str(case), "-o", str(out), "--prompts", str(script), "--no-progress"] + extra)
    return code, out, script


BAD = [
    ({"objects": [{"box": MR_BOX}, {"box": MR_BOX, "corrections": [{"slice": 12, "box": [1, 2, 3]}]}]},
     "$.objects[1].corrections[0].box: expected 4 numbers"),
    ({"objects": [{"box": MR_BOX, "corrections": [{"slice": 25, "box": [170, 90, 200, 140]}]}]},
     "$.objects[0].corrections[0].slice: slice 25 is outside the volume (0..24)"),
    ({"objects": [{"box": MR_BOX, "corrections": [{"slice": 12, "box": [170, 90, 256, 140]}]}]},
     "$.objects[0].corrections[0].box: x range 170..256 is not inside 0..255"),
    ({"objects": [{"box": [162, 84, 11, 208, 153, 25]}]}, "$.objects[0].box: z range 11..25 is not inside 0..24"),
    ({"objects": [{"box": [162, 84, 208, 153]}]}, "$.objects[0].box: expected 6 numbers"),
    ({"objects": [{"box": MR_BOX, "corrections": [{"box": [170, 90, 200, 140]}]}]},
     "$.objects[0].corrections[0].slice: missing"),
    ({"objects": [{"box": MR_BOX, "colour": "#ff0000"}]}, "$.objects[0].colour: unknown key"),
    ({"objects": [{"box": MR_BOX, "locked": "yes"}]}, "$.objects[0].locked: expected true or false"),
    ({"objects": [{"box": MR_BOX, "color": "red"}]}, '$.objects[0].color: expected "#rrggbb"'),
    ({"objects": [{"box": [162, 84, 11.5, 208, 153, 17]}]}, "$.objects[0].box: expected whole voxel indices"),
    ({"objects": []}, "$.objects: expected a non-empty list"),
    ({"boxes": []}, "$.boxes: unknown key"),
    ('{"objects": [{"box": [1, 2, 3, 4, 5, 6],}]}', "not valid JSON"),
]


@pytest.mark.parametrize("prompts,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_prompts_are_one_line_with_the_json_path(tmp_path: Path, capsys, prompts, message) -> None:
    code, out, script = _run(tmp_path, prompts)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.count("\n") == 0 and f"{script}: {message}" in err, err


def test_prompts_on_a_folder_or_with_boxes_is_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(MR, folder / MR.name)
    code, out, _ = _run(tmp_path, {"objects": [{"box": MR_BOX}]}, case=folder)
    assert code == 2 and not out.exists() and "one case" in capsys.readouterr().err


def test_shipped_schema_agrees_with_the_checker() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(package_file("prompts.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    good = [{"objects": [{"box": MR_BOX, "name": "tumour", "color": "#ff8800", "locked": True,
                          "corrections": [{"slice": 12, "box": [170, 90, 200, 140]}]}], "lock_previous": False},
            {"objects": [{"box": [1, 2, 30, 40], "corrections": [{"box": [1, 2, 3, 4]}]}]}]
    for doc in good:
        parse_prompts(doc, "x.json")
        jsonschema.validate(doc, schema)
    image_only = ("range", "slice", "6 numbers")  # wrong only against the image: the schema cannot know
    for doc, message in BAD:
        if isinstance(doc, str) or any(word in message for word in image_only):
            continue
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


# ---------------------------------------------------------------- reproducibility
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache folder for the CLI runs and the Python sessions (each slice encoded once)."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def predictor(cache) -> Predictor:
    return Predictor(embedding_cache=cache)


def test_cli_replay_equals_the_python_session_3d(tmp_path: Path, predictor, cache) -> None:
    data = np.load(MR)
    truth = data["gts"] > 0
    fix = [int(v) for v in box_from_mask(truth[16], shift=0)]
    second = [150, 80, 12, 215, 160, 15]
    prompts = {"objects": [{"box": MR_BOX, "name": "tumour", "corrections": [{"slice": 16, "box": fix}]},
                           {"box": second, "name": "around", "color": "#00ff00", "locked": True}]}
    code, out, _ = _run(tmp_path, prompts, cache=cache)
    assert code == 0
    with np.load(out / MR.name) as written:
        labels = written["segs"]
    s = predictor.session(data["imgs"])
    k = s.add_object(tuple(MR_BOX))
    s.correct(k, 16, box=tuple(fix))
    m = s.add_object(tuple(second))
    s.lock(m)
    assert np.array_equal(labels, s.labels) and set(np.unique(labels)) == {0, 1, 2}
    first_only = predictor.session(data["imgs"])
    first_only.add_object(tuple(MR_BOX))
    assert not np.array_equal(labels == 1, first_only.labels == 1)  # the correction changed object 1
    table = json.loads((out / "3DBox_MR_brain_tumour.labels.json").read_text())
    assert table["1"]["name"] == "tumour" and table["2"] == {"name": "around", "color": "#00ff00"}


def test_cli_replay_equals_the_python_session_2d(tmp_path: Path, predictor, cache) -> None:
    import tifffile

    image = tifffile.imread(FIXTURES / "nuclei_crop_image.tif")
    truth = tifffile.imread(FIXTURES / "nuclei_crop_labels.tif")
    ids = [i for i in np.unique(truth) if i][:2]
    boxes = [[int(v) for v in box_from_mask(truth == i, shift=0)] for i in ids]
    loose = [max(boxes[0][0] - 6, 0), max(boxes[0][1] - 6, 0), boxes[0][2] + 6, boxes[0][3] + 6]
    prompts = {"objects": [{"box": loose, "corrections": [{"box": boxes[0]}], "locked": False}, {"box": boxes[1]}]}
    case = tmp_path / "nuclei.tif"
    shutil.copy(FIXTURES / "nuclei_crop_image.tif", case)
    code, out, _ = _run(tmp_path, prompts, case=case, cache=cache)
    assert code == 0
    written = tifffile.imread(next(out.glob("nuclei_mask.*")))
    from medsam_lite.imageio import read_case
    from medsam_lite.segment import model_input

    array, _, _ = model_input(read_case(case))
    s = predictor.session(array, lock_previous=False)  # "locked": false: object 1 stays unlocked under object 2
    k = s.add_object(tuple(loose))
    s.correct(k, 0, box=tuple(boxes[0]))
    s.add_object(tuple(boxes[1]))
    assert written.shape == image.shape[:2] and set(np.unique(written)) == {0, 1, 2}
    assert np.array_equal(written, s.labels)
    assert json.loads((out / "nuclei.labels.json").read_text())["2"]["auto_name"] is True
