"""Finding (image, label) pairs in a source folder: detected layouts, a YAML/JSON spec, or flags.

Detected without a spec (:func:`discover`):

* **nnU-Net / Medical Segmentation Decathlon**: ``imagesTr/`` + ``labelsTr/``. ``case_0000.nii.gz``
  pairs with ``labelsTr/case.nii.gz`` (nnU-Net; channel ``_0001``... become their own cases sharing
  the label map and the split group), ``case.nii.gz`` with ``labelsTr/case.nii.gz`` (MSD). The
  modality comes from ``dataset.json`` (``channel_names`` (v2) or ``modality`` (v1 / MSD)) unless
  overridden; hidden files (``._case.nii.gz``) are ignored.
* **Challenge npz folder**: ``*.npz`` files (searched recursively) holding ``imgs`` + ``gts``; names
  starting with ``3D`` are volumes. The modality is read from a name token (``CT_Abd_001.npz``,
  ``3DBox_MR_0001.npz``) or a parent folder name.
* A folder holding ``prep.yaml`` / ``prep.yml`` / ``prep.json`` uses that spec.

Spec format (YAML or JSON; one dataset mapping, or ``{"datasets": [...]}``)::

    datasets:
      - name: lesions                 # default: the root folder's name
        root: ../data/lesions         # default: the spec file's folder (relative to it)
        images: "*_image.nrrd"        # glob relative to root
        image_suffix: _image          # stripped from the file stem to get the case id
        labels: "{case}_label.nrrd"   # template ({case}, {dir}, {name}) or a glob paired by case id
        label_suffix: _label          # stripped from label stems when pairing a glob
        modality: CT                  # any name / alias of medsam_lite.normalize.MODALITY_TABLE
        window: chest                 # CT only: preset or "level,width"
      - name: mni152
        images: t1.nii.gz
        labels:                       # one file per label id; value >= threshold (or > 0) -> id
          - {path: gm_prob.nii.gz, id: 1, threshold: 128}
          - {path: wm_prob.nii.gz, id: 2, threshold: 128}
        modality: MR

Without ``labels`` the dataset is image-only (distillation data). The same fields exist as flags
(``--images --labels --label ID=PATTERN[@THRESHOLD] --modality --window``). A glob pairs a single
image with a single label directly; otherwise stems are matched.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from medsam_lite.errors import InputError
from medsam_lite.imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, suffix_of

from ..normalize import Window, canonical_modality, modality_rule, parse_window

SPEC_NAMES = ("prep.yaml", "prep.yml", "prep.json")
_SPEC_KEYS = {"name", "root", "images", "labels", "modality", "window", "image_suffix", "label_suffix"}
_READABLE = IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + (".npz",)


@dataclass(frozen=True)
class LabelSource:
    """One label file of a case.

    ``label_id`` None: the file is a label map whose values are the ids. Otherwise the file is a
    mask / probability map: voxels ``>= threshold`` (or ``> 0`` without threshold) get ``label_id``;
    later sources overwrite earlier ones where they overlap.
    """

    path: Path
    label_id: Optional[int] = None
    threshold: Optional[float] = None


@dataclass(frozen=True)
class CaseSpec:
    """One case to convert. ``group`` keeps related cases (channels of a patient) on one split side."""

    dataset: str
    case_id: str
    group: str
    image: Path
    labels: Tuple[LabelSource, ...]
    modality: str
    window: Optional[Window] = None
    kind: str = "file"  # "file" (read with medsam_lite.imageio) or "npz" (challenge imgs + gts)

    @property
    def key(self) -> str:
        """Unique, file-name-safe id ``<dataset>__<case>`` (used for records and slice names)."""
        return f"{self.dataset}__{self.case_id}"

    @property
    def labeled(self) -> bool:
        return bool(self.labels)


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be converted; ``message`` is one line naming the case / file."""

    case: str
    message: str


@dataclass
class DatasetSpec:
    """One dataset of a spec (see module doc). ``labels``: None, a pattern, or a list of LabelSource-like
    mappings with ``path``, ``id``, optional ``threshold``."""

    root: Path
    images: str
    labels: Union[None, str, List[Dict[str, Any]]] = None
    modality: Optional[str] = None
    window: Optional[Union[str, Window]] = None
    name: Optional[str] = None
    image_suffix: str = ""
    label_suffix: str = ""


@dataclass
class Overrides:
    """Command-line / caller settings applied on top of what a layout or spec says."""

    images: Optional[str] = None
    labels: Optional[str] = None
    label_files: Sequence[Tuple[int, str, Optional[float]]] = ()
    modality: Optional[str] = None
    window: Optional[Union[str, Window]] = None
    name: Optional[str] = None
    image_suffix: str = ""
    label_suffix: str = ""


@dataclass
class Discovery:
    """Cases found, and per-case problems found while pairing (e.g. an image without a label)."""

    cases: List[CaseSpec] = field(default_factory=list)
    failures: List[CaseFailure] = field(default_factory=list)

    def extend(self, other: "Discovery") -> None:
        self.cases.extend(other.cases)
        self.failures.extend(other.failures)


def safe_name(text: str) -> str:
    """File-name-safe version of ``text`` (runs of other characters become ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def strip_suffix(path: Path) -> str:
    """File name without its (double, for ``.nii.gz``) extension."""
    suffix = suffix_of(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


# ------------------------------------------------------------------ entry point
def discover(source: Union[str, Path], overrides: Optional[Overrides] = None) -> Discovery:
    """Cases of one source: a spec file, or a folder (flags, nnU-Net / MSD, npz, folder spec).

    Raises:
        InputError: the source is missing, its layout cannot be detected, or the spec is invalid.
    """
    source = Path(source)
    ov = overrides or Overrides()
    if not source.exists():
        raise InputError("source not found", source)
    if source.is_file():
        if source.suffix.lower() in (".yaml", ".yml", ".json"):
            return _discover_specs(load_spec(source), ov)
        raise InputError("a source must be a folder or a .yaml / .json spec", source)
    if ov.images or ov.label_files:
        if not ov.images:
            raise InputError("--label needs --images", source)
        labels: Union[None, str, List[Dict[str, Any]]] = ov.labels
        if ov.label_files:
            labels = [{"id": i, "path": p, "threshold": t} for i, p, t in ov.label_files]
        return discover_spec(DatasetSpec(root=source, images=ov.images, labels=labels, modality=ov.modality,
                                         window=ov.window, name=ov.name, image_suffix=ov.image_suffix,
                                         label_suffix=ov.label_suffix))
    if (source / "imagesTr").is_dir():
        return discover_nnunet(source, ov)
    for name in SPEC_NAMES:
        if (source / name).is_file():
            return _discover_specs(load_spec(source / name), ov)
    if any(not _is_hidden(p) for p in source.rglob("*.npz")):
        return discover_npz(source, ov)
    raise InputError("cannot detect the layout (no imagesTr/, prep.yaml or *.npz): give a spec or "
                     "--images GLOB --labels PATTERN --modality NAME", source)


def _discover_specs(specs: Iterable[DatasetSpec], ov: Overrides) -> Discovery:
    found = Discovery()
    for spec in specs:
        if ov.modality:
            spec = replace(spec, modality=ov.modality)
        if ov.window is not None:
            spec = replace(spec, window=ov.window)
        found.extend(discover_spec(spec))
    return found


# ------------------------------------------------------------------ spec
def load_spec(path: Union[str, Path]) -> List[DatasetSpec]:
    """Parse a YAML / JSON spec (one dataset mapping or ``{"datasets": [...]}``); roots are relative to it."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise InputError(f"cannot parse spec ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                         path) from exc
    entries = data.get("datasets") if isinstance(data, dict) and "datasets" in data else [data]
    if not isinstance(entries, list) or not entries:
        raise InputError("spec must be a mapping or have a non-empty 'datasets' list", path)
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"dataset #{i + 1} must be a mapping", path)
        unknown = set(entry) - _SPEC_KEYS
        if unknown:
            raise InputError(f"dataset #{i + 1}: unknown keys {sorted(unknown)} (allowed: {sorted(_SPEC_KEYS)})", path)
        if not entry.get("images"):
            raise InputError(f"dataset #{i + 1}: 'images' (a glob) is required", path)
        labels = entry.get("labels")
        if labels is not None and not isinstance(labels, (str, list)):
            raise InputError(f"dataset #{i + 1}: 'labels' must be a pattern or a list of {{path, id, threshold}}", path)
        root = Path(str(entry.get("root", ".")))
        specs.append(DatasetSpec(root=root if root.is_absolute() else (path.parent / root),
                                 images=str(entry["images"]), labels=labels, modality=entry.get("modality"),
                                 window=entry.get("window"), name=entry.get("name"),
                                 image_suffix=str(entry.get("image_suffix") or ""),
                                 label_suffix=str(entry.get("label_suffix") or "")))
    return specs


def _strip(text: str, suffix: str) -> str:
    return text[: -len(suffix)] if suffix and text.endswith(suffix) and len(text) > len(suffix) else text


def _glob(root: Path, pattern: str) -> List[Path]:
    return sorted(p for p in root.glob(pattern) if not _is_hidden(p) and (p.is_file() or p.is_dir()))


def _format(template: str, image: Path, root: Path, case: str) -> Path:
    rel_dir = image.parent.relative_to(root).as_posix() if image.parent != root else "."
    try:
        return root / template.format(case=case, stem=case, dir=rel_dir, name=image.name)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"bad label template {template!r} (placeholders: {{case}}, {{dir}}, {{name}})") from exc


def _case_ids(paths: Sequence[Path], root: Path, suffix: str = "") -> List[str]:
    """Case ids of ``paths``: their stems less ``suffix`` when those are unique, else their paths below
    ``root`` (stem last) joined by ``_``, less ``suffix``."""
    stems = [_strip(strip_suffix(p), suffix) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [_strip("_".join(p.relative_to(root).with_name(strip_suffix(p)).parts), suffix) for p in paths]


def _check_window(window: Optional[Window], modality: str, where: Path) -> None:
    if window is not None and modality_rule(modality).grey != "window":
        raise InputError(f"a CT window was given for modality {modality}", where)


def discover_spec(spec: DatasetSpec) -> Discovery:
    """Cases of one spec dataset (see module doc)."""
    root = spec.root
    if not root.is_dir():
        raise InputError("dataset root folder not found", root)
    if not spec.modality:
        raise InputError("no modality given (spec 'modality:' or --modality)", root)
    modality = canonical_modality(spec.modality, root)
    window = parse_window(spec.window)
    _check_window(window, modality, root)
    name = safe_name(spec.name or root.resolve().name)
    images = [p for p in _glob(root, spec.images) if p.is_dir() or suffix_of(p) in _READABLE]
    if not images:
        raise InputError(f"no image matches {spec.images!r}", root)
    stems = [_strip(strip_suffix(p), spec.image_suffix) for p in images]
    labels_of = _label_finder(spec, images)
    found = Discovery()
    for image, stem, case_id in zip(images, stems, _case_ids(images, root, spec.image_suffix)):
        cid = safe_name(case_id)
        if suffix_of(image) == ".npz":  # challenge npz: its 'gts' are the labels when the spec names any
            npz_labels = (LabelSource(image),) if spec.labels is not None else ()
            found.cases.append(CaseSpec(name, cid, cid, image, npz_labels, modality, window, "npz"))
            continue
        try:
            labels = labels_of(image, stem)
        except InputError as exc:
            found.failures.append(CaseFailure(f"{name}__{cid}", str(exc.with_source(image))))
            continue
        found.cases.append(CaseSpec(name, cid, cid, image, labels, modality, window))
    return found


LabelFinder = Callable[[Path, str], Tuple[LabelSource, ...]]


def _label_finder(spec: DatasetSpec, images: Sequence[Path]) -> LabelFinder:
    """``labels_of(image, case stem)`` for a spec's ``labels``: none, a list of per-id files, a template,
    or a glob paired by case id (directly when it matches one file for the one image); InputError when
    an image has no (or several) label files."""
    root, labels = spec.root, spec.labels
    if labels is None:
        return lambda image, stem: ()
    if isinstance(labels, list):
        return lambda image, stem: tuple(_label_source(item, image, root, stem) for item in labels)
    if not isinstance(labels, str) or "{" in labels:
        return lambda image, stem: (_templated_label(str(labels), image, root, stem),)
    label_files = _glob(root, labels)
    by_key: Dict[str, List[Path]] = {}
    for lab in label_files:
        by_key.setdefault(_strip(strip_suffix(lab), spec.label_suffix), []).append(lab)
    single = len(images) == 1 and len(label_files) == 1

    def globbed(image: Path, stem: str) -> Tuple[LabelSource, ...]:
        matches = label_files if single else by_key.get(stem, [])
        if not single and len(matches) > 1:
            matches = [m for m in matches if m.parent == image.parent] or matches
        if not matches:
            raise InputError(f"no label file matches {labels!r} for case id {stem!r}", image)
        if len(matches) > 1:
            raise InputError(f"several label files match: {', '.join(m.name for m in matches)}", image)
        return (LabelSource(matches[0]),)

    return globbed


def _templated_label(template: str, image: Path, root: Path, case: str) -> LabelSource:
    label_path = _format(template, image, root, case)
    if not label_path.exists():
        raise InputError(f"label file {label_path} not found", image)
    return LabelSource(label_path)


def _label_source(item: Any, image: Path, root: Path, case: str) -> LabelSource:
    if not isinstance(item, dict) or "path" not in item or "id" not in item:
        raise InputError("each entry of a 'labels' list needs 'path' and 'id'")
    label_id = int(item["id"])
    if not 0 < label_id <= 65535:
        raise InputError(f"label id {label_id} must be in 1..65535")
    path = _format(str(item["path"]), image, root, case)
    if not path.exists():
        raise InputError(f"label file {path} not found")
    threshold = item.get("threshold")
    return LabelSource(path, label_id, None if threshold is None else float(threshold))


# ------------------------------------------------------------------ nnU-Net / MSD
def discover_nnunet(root: Path, ov: Optional[Overrides] = None) -> Discovery:
    """``imagesTr/`` + ``labelsTr/`` (+ ``dataset.json``) cases; see module doc."""
    ov = ov or Overrides()
    meta: Dict[str, Any] = {}
    if (root / "dataset.json").is_file():
        try:
            meta = json.loads((root / "dataset.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot parse dataset.json ({type(exc).__name__})", root / "dataset.json") from exc
    channels = meta.get("channel_names") or meta.get("modality") or {}
    window = parse_window(ov.window)
    name = safe_name(ov.name or meta.get("name") or root.resolve().name)
    ending = meta.get("file_ending")
    images = [p for p in sorted((root / "imagesTr").iterdir()) if not _is_hidden(p)
              and (suffix_of(p) == ending if ending else suffix_of(p) in _READABLE)]
    if not images:
        raise InputError("imagesTr/ holds no image", root)
    found = Discovery()
    parsed = []
    for image in images:
        stem = strip_suffix(image)
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        ext = suffix_of(image)
        if match and (root / "labelsTr" / f"{match.group(1)}{ext}").exists():
            parsed.append((image, match.group(1), int(match.group(2))))
        else:
            parsed.append((image, stem, None))
    n_channels: Dict[str, int] = {}
    for _, base, _ch in parsed:
        n_channels[base] = n_channels.get(base, 0) + 1
    for image, base, channel in parsed:
        cid = safe_name(base if n_channels[base] == 1 else f"{base}_{channel:04d}")
        key = f"{name}__{cid}"
        label = root / "labelsTr" / f"{base}{suffix_of(image)}"
        try:
            if not label.exists():
                raise InputError(f"no label file labelsTr/{label.name}", image)
            modality_name = ov.modality or channels.get(str(channel or 0))
            if not modality_name:
                raise InputError("modality unknown (no dataset.json channel_names / modality): give --modality",
                                 image)
            modality = canonical_modality(modality_name, image)
            _check_window(window, modality, image)
        except InputError as exc:
            found.failures.append(CaseFailure(key, str(exc)))
            continue
        found.cases.append(CaseSpec(name, cid, safe_name(base), image, (LabelSource(label),), modality, window))
    return found


# ------------------------------------------------------------------ challenge npz
def npz_modality(path: Path, root: Path) -> Optional[str]:
    """Modality named by a token of the file name (``3DBox_MR_0001``) or of a parent folder, if any."""
    candidates = re.split(r"[_.]", strip_suffix(path))
    candidates += [part for parent in path.relative_to(root).parents for part in re.split(r"[_.]", parent.name)]
    candidates.append(root.name)
    for token in candidates:
        if not token:
            continue
        try:
            return canonical_modality(token)
        except InputError:
            continue
    return None


def discover_npz(root: Path, ov: Optional[Overrides] = None) -> Discovery:
    """Challenge ``.npz`` cases (``imgs`` + ``gts``) under ``root``, recursively."""
    ov = ov or Overrides()
    window = parse_window(ov.window)
    name = safe_name(ov.name or root.resolve().name)
    found = Discovery()
    files = sorted(p for p in root.rglob("*.npz") if not _is_hidden(p))
    for path, case_id in zip(files, _case_ids(files, root)):
        cid = safe_name(case_id)
        key = f"{name}__{cid}"
        try:
            modality_name = ov.modality or npz_modality(path, root)
            if not modality_name:
                raise InputError("modality not found in the file name: give --modality", path)
            modality = canonical_modality(modality_name, path)
        except InputError as exc:
            found.failures.append(CaseFailure(key, str(exc)))
            continue
        found.cases.append(CaseSpec(name, cid, cid, path, (LabelSource(path),), modality, window, "npz"))
    return found
