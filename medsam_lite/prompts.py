"""Prompt scripts: a session's objects and corrections as JSON, replayed onto a :class:`~medsam_lite.session.Session`
(``medsam-lite segment VOLUME --prompts prompts.json``), so a session can be reproduced and scripted.

The format (JSON Schema: ``medsam_lite/prompts.schema.json``; docs/interactive.md)::

    {"lock_previous": true,                                   # optional (default true), the Session option
     "objects": [                                             # in order: object i gets label value i + 1
       {"box": [x0, y0, z0, x1, y1, z1],                      # 3D box (2D image: [x0, y0, x1, y1])
        "name": "liver", "color": "#ff8800",                  # optional (label table)
        "corrections": [{"slice": 40, "box": [x0, y0, x1, y1]}],   # optional; 2D: {"box": [...]} (no slice)
        "locked": true}                                       # optional, see below
     ]}

Replay (:func:`replay`), object by object: its 3D box (``Session.add_object``), then its corrections in order
(``Session.correct``); ``"locked": true`` locks it right after them; ``"locked": false`` keeps it unlocked when
later objects are added (they are on top and may take its voxels, as ``segment``'s later boxes do); absent: the
session default (with ``lock_previous`` every earlier object is locked when an object is added).

Coordinates: voxel / pixel indices of the file's grid, both ends inclusive (as ``segment --box``); boxes must lie
inside the image and slices inside the volume. Every problem is one :class:`~medsam_lite.errors.InputError` line
naming the file and the JSON path of the bad field (``prompts.json: $.objects[1].corrections[0].box: expected 4
numbers``), found before anything runs: :func:`read_prompts` (syntax, structure), :func:`check_prompts` (against
the image's shape).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

OBJECT_KEYS = ("box", "name", "color", "corrections", "locked")
CORRECTION_KEYS = ("slice", "box")
TOP_KEYS = ("objects", "lock_previous")


@dataclass(frozen=True)
class CorrectionPrompt:
    """A correction box ``(x0, y0, x1, y1)`` on slice ``z`` (None in a 2D script); ``path``: its JSON path."""

    box: Tuple[int, int, int, int]
    z: Optional[int]
    path: str


@dataclass(frozen=True)
class ObjectPrompt:
    """One object: its ``box`` (4 or 6 numbers), optional ``name`` / ``color`` / ``locked``, its corrections."""

    box: Tuple[int, ...]
    name: Optional[str]
    color: Optional[str]
    corrections: Tuple[CorrectionPrompt, ...]
    locked: Optional[bool]
    path: str


@dataclass(frozen=True)
class Prompts:
    """A parsed prompt script (module docstring); ``source``: the file it came from (error messages)."""

    objects: Tuple[ObjectPrompt, ...]
    lock_previous: bool
    source: str

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) or (N, 6) float64: the objects' boxes."""
        return np.asarray([o.box for o in self.objects], dtype=np.float64)

    @property
    def names(self) -> List[Optional[str]]:
        return [o.name for o in self.objects]

    @property
    def colors(self) -> List[Optional[str]]:
        return [o.color for o in self.objects]


def _fail(source: str, path: str, problem: str) -> InputError:
    return InputError(f"{path}: {problem}", source)


def _numbers(value: Any, n: Union[int, Tuple[int, ...]], source: str, path: str) -> Tuple[int, ...]:
    """A list of ``n`` finite integral numbers (voxel indices) -> ints."""
    counts = (n,) if isinstance(n, int) else n
    wanted = " or ".join(str(c) for c in counts)
    if not isinstance(value, list) or len(value) not in counts or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _fail(source, path, f"expected {wanted} numbers, got {json.dumps(value)[:80]}")
    if not all(math.isfinite(v) and float(v).is_integer() for v in value):
        raise _fail(source, path, f"expected whole voxel indices, got {json.dumps(value)[:80]}")
    return tuple(int(v) for v in value)


def _keys(obj: Any, allowed: Sequence[str], required: Sequence[str], source: str, path: str) -> Dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(source, path, f"expected an object {{{', '.join(json.dumps(k) for k in required)}, ...}}, "
                                  f"got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise _fail(source, f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in obj:
            raise _fail(source, f"{path}.{key}", "missing")
    return obj


def _color(value: Any, source: str, path: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 7 and value[0] == "#" and all(
            c in "0123456789abcdefABCDEF" for c in value[1:]):
        return value.lower()
    raise _fail(source, path, f'expected "#rrggbb", got {json.dumps(value)[:40]}')


def _object(obj: Any, source: str, path: str) -> ObjectPrompt:
    _keys(obj, OBJECT_KEYS, ("box",), source, path)
    box = _numbers(obj["box"], (4, 6), source, f"{path}.box")
    name = obj.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _fail(source, f"{path}.name", f"expected a non-empty text, got {json.dumps(name)[:40]}")
    locked = obj.get("locked")
    if locked is not None and not isinstance(locked, bool):
        raise _fail(source, f"{path}.locked", f"expected true or false, got {json.dumps(locked)[:40]}")
    corrections = obj.get("corrections", [])
    if not isinstance(corrections, list):
        raise _fail(source, f"{path}.corrections", "expected a list of {\"slice\": z, \"box\": [x0, y0, x1, y1]}")
    fixes = []
    for j, fix in enumerate(corrections):
        where = f"{path}.corrections[{j}]"
        _keys(fix, CORRECTION_KEYS, ("box",), source, where)
        z = fix.get("slice")
        if z is not None and (not isinstance(z, int) or isinstance(z, bool)):
            raise _fail(source, f"{where}.slice", f"expected a slice index (whole number), got {json.dumps(z)[:40]}")
        fixes.append(CorrectionPrompt(_numbers(fix["box"], 4, source, f"{where}.box"), z, where))  # type: ignore
    return ObjectPrompt(box, name.strip() if name else None, _color(obj.get("color"), source, f"{path}.color"),
                        tuple(fixes), locked, path)


def parse_prompts(data: Any, source: str) -> Prompts:
    """A decoded JSON document -> :class:`Prompts` (structure checks; InputError with the JSON path)."""
    _keys(data, TOP_KEYS, ("objects",), source, "$")
    lock_previous = data.get("lock_previous", True)
    if not isinstance(lock_previous, bool):
        raise _fail(source, "$.lock_previous", f"expected true or false, got {json.dumps(lock_previous)[:40]}")
    objects = data["objects"]
    if not isinstance(objects, list) or not objects:
        raise _fail(source, "$.objects", "expected a non-empty list of objects")
    from .session import MAX_OBJECTS

    if len(objects) > MAX_OBJECTS:
        raise _fail(source, "$.objects", f"{len(objects)} objects: at most {MAX_OBJECTS} fit a uint8 label map")
    parsed = tuple(_object(obj, source, f"$.objects[{i}]") for i, obj in enumerate(objects))
    widths = {len(o.box) for o in parsed}
    if len(widths) > 1:
        odd = next(o for o in parsed if len(o.box) != len(parsed[0].box))
        raise _fail(source, f"{odd.path}.box", f"expected {len(parsed[0].box)} numbers like {parsed[0].path}.box "
                                               f"(one kind of box per script)")
    return Prompts(parsed, lock_previous, source)


def read_prompts(path: Union[str, Path]) -> Prompts:
    """Read and structure-check a prompt script (JSON); InputError (one line: the file, the JSON path)."""
    source = str(path)
    path = Path(path)
    if not path.is_file():
        raise InputError("prompts file not found", source)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the prompts file ({type(exc).__name__})", source) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", source) from None
    return parse_prompts(data, source)


def _inside(box: Sequence[int], limits: Sequence[int], axes: str, source: str, path: str) -> None:
    half = len(box) // 2
    for axis, lo, hi, size in zip(axes, box[:half], box[half:], limits):
        if not 0 <= lo <= hi < size:
            raise _fail(source, path, f"{axis} range {lo}..{hi} is not inside 0..{size - 1}")


def check_prompts(prompts: Prompts, shape: Sequence[int], is_3d: bool) -> None:
    """Check the script against an image: ``shape`` (D, H, W) for a volume, (H, W[, 3]) for a 2D image. Boxes
    of the right kind and inside the image, correction slices inside the volume (and none in 2D)."""
    source = prompts.source
    if is_3d:
        depth, height, width = (int(s) for s in shape[:3])
    else:
        depth, height, width = 1, int(shape[0]), int(shape[1])
    n = 6 if is_3d else 4
    for obj in prompts.objects:
        if len(obj.box) != n:
            kind = "a 3D volume needs [x0, y0, z0, x1, y1, z1]" if is_3d else "a 2D image needs [x0, y0, x1, y1]"
            raise _fail(source, f"{obj.path}.box", f"expected {n} numbers: {kind}")
        limits = (width, height, depth) if is_3d else (width, height)
        _inside(obj.box, limits, "xyz", source, f"{obj.path}.box")
        for fix in obj.corrections:
            if is_3d and fix.z is None:
                raise _fail(source, f"{fix.path}.slice", "missing (a correction of a volume names its slice)")
            if not is_3d and fix.z is not None:
                raise _fail(source, f"{fix.path}.slice", "a 2D image has no slices: give the box only")
            if fix.z is not None and not 0 <= fix.z < depth:
                raise _fail(source, f"{fix.path}.slice", f"slice {fix.z} is outside the volume (0..{depth - 1})")
            _inside(fix.box, (width, height), "xy", source, f"{fix.path}.box")


def replay(session: Any, prompts: Prompts, on_object: Optional[Callable[[int, int], None]] = None) -> List[int]:
    """Run the script on a fresh :class:`~medsam_lite.session.Session` (module docstring; check it first with
    :func:`check_prompts`); returns the objects' label values. ``on_object(done, total)`` after each object.

    The session must have been made with ``lock_previous=False``: the script's own ``lock_previous`` is applied
    here, object by object, so that ``"locked": false`` can keep an object unlocked (equal to a session with
    ``lock_previous=prompts.lock_previous`` when no object says ``"locked": false``)."""
    if getattr(session, "lock_previous", False):
        raise ValueError("replay needs a session made with lock_previous=False (the script decides the locks)")
    labels: List[int] = []
    for i, obj in enumerate(prompts.objects):
        if prompts.lock_previous:
            for label, earlier in zip(labels, prompts.objects):
                if earlier.locked is not False and not session.objects[label].locked:
                    session.lock(label)
        label = session.add_object(obj.box)
        for fix in obj.corrections:
            session.correct(label, 0 if fix.z is None else fix.z, box=fix.box)
        if obj.locked:
            session.lock(label)
        labels.append(label)
        if on_object is not None:
            on_object(i + 1, len(prompts.objects))
    return labels
