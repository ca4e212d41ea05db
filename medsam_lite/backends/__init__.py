"""Inference backends: what runs the image encoder and the mask decoder, behind one protocol and one registry.

Every backend maps, in the 256 x 256 model frame:

* ``encode(images)``: (B, 3, 256, 256) float32 in [0, 1] (zero padded bottom / right) ->
  (B, 256, 64, 64) float32 image embeddings;
* ``decode(embedding, boxes_256)``: one (1, 256, 64, 64) embedding and (N, 4) float32 XYXY boxes in
  the model frame -> (N, 1, 256, 256) float32 mask logits (single-mask output).

Arrays are numpy (float32) on every backend but the torch reference, which speaks ``torch.Tensor``
(:class:`Backend`). Pre/post-processing and the 3D propagation are NOT part of a backend: they live in
:mod:`medsam_lite.transforms` / :mod:`medsam_lite.propagation_numpy` (numpy / OpenCV, the default path) and
their torch twins :mod:`medsam_lite.transforms_torch` / :mod:`medsam_lite.propagation` (the reference), so
every backend runs the same algorithm.

**Registry** (as timm's ``_registry``: a name carries its entry point): :func:`register_backend` records a
backend's name, the runtime module it needs, the class that builds it and the precisions it runs. Nothing
outside this package compares runtime names: callers build through :func:`create_backend` and speak one
vocabulary, ``BACKEND[:PRECISION]`` (:func:`parse_choice`; ``auto`` anywhere), in the CLI, the benchmark,
the gate and the server. Registered here: ``torch`` (eager PyTorch, the exact fp32 reference),
``onnxruntime``, ``openvino``. ``"auto"`` picks the preferred installed backend and precision as
:func:`resolve` documents.

This module imports no torch and no runtime, so ``--help`` and argument checks stay fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Tuple, Union, runtime_checkable

from ..errors import InputError
from ..extras import available, install_command, missing_requirement

if TYPE_CHECKING:
    from pathlib import Path

    from ..model import MedSAMLite

PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "bf16-encoder", "bf16-mixed", "bf16-mixed3", "int8")
"""Every precision some backend runs (``torch``: fp32 only, it is the reference; the ``bf16-mixed*``
schemes are OpenVINO's per-stage mixes, :data:`medsam_lite.backends.openvino.MIXED_F32_STAGES`; ``bf16-encoder``
OpenVINO's bf16 encoder with an f32 decoder)."""


@runtime_checkable
class Backend(Protocol):
    """What :class:`medsam_lite.predictor.Predictor` needs from a backend (see module docstring).

    Backends speak numpy: ``encode`` / ``decode`` take and return ``numpy.ndarray`` (float32), so the default
    path (OpenVINO, ONNX Runtime) needs no torch. The torch reference (``TorchBackend``) takes and returns
    ``torch.Tensor`` instead, and the non-torch backends answer a torch caller in torch
    (:func:`medsam_lite.arrays.like`); :attr:`medsam_lite.predictor.Predictor.uses_torch` says which side a
    Predictor is on."""

    name: str
    precision: str

    def encode(self, images: Any) -> Any:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 (numpy; torch on the reference)."""
        ...

    def decode(self, embedding: Any, boxes_256: Any) -> Any:
        """(1, 256, 64, 64) embedding, (N, 4) float32 XYXY model-frame boxes -> (N, 1, 256, 256) float32 logits
        (numpy; torch on the reference)."""
        ...


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend.

    ``name``: the registry name; ``runtime``: the importable module that must be installed for it;
    ``target``: ``"module:Class"`` of the backend class, which has ``from_model(model, precision, cache_dir,
    threads)`` and may have ``from_weights(name_or_path, precision, cache_dir, threads)`` (a warm start that
    needs no torch model); ``precisions``: what it runs, the first its default; ``preference``: ``auto``
    takes the installed backend of the highest preference; ``install``: the pip requirement that adds the
    runtime, ``medsam-lite[EXTRA]`` for an extra (said in the one-line error when it is missing,
    :func:`medsam_lite.extras.missing_requirement`); ``opens_folder``: the class also has
    ``from_folder(folder, precision, threads)``, opening an artifact folder written by ``medsam-lite export``.
    """

    name: str
    runtime: str
    target: str
    precisions: Tuple[str, ...]
    preference: int = 0
    install: str = ""
    opens_folder: bool = False

    def load(self) -> Any:
        """The backend class (imports the runtime)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: Dict[str, BackendEntry] = {}


def register_backend(name: str, runtime: str, target: str, precisions: Tuple[str, ...], preference: int = 0,
                     install: str = "", opens_folder: bool = False) -> BackendEntry:
    """Add a backend to the registry (see :class:`BackendEntry`); returns its entry."""
    if name in _REGISTRY or name == "auto" or ":" in name:
        raise ValueError(f"backend name {name!r} is taken or reserved")
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ValueError(f"unknown precisions {sorted(unknown)} for backend {name!r}")
    entry = BackendEntry(name, runtime, target, tuple(precisions), preference, install or runtime, opens_folder)
    _REGISTRY[name] = entry
    return entry


register_backend("torch", "torch", "medsam_lite.backends.torch:TorchBackend", ("fp32",), preference=0,
                 install="medsam-lite[torch]")
register_backend("onnxruntime", "onnxruntime", "medsam_lite.backends.onnxruntime:OnnxRuntimeBackend",
                 ("fp32", "int8"), preference=1, install="medsam-lite[onnx]", opens_folder=True)
register_backend("openvino", "openvino", "medsam_lite.backends.openvino:OpenVINOBackend",
                 ("fp32", "bf16", "bf16-encoder", "bf16-mixed", "bf16-mixed3", "int8"), preference=2,
                 install="openvino")


REFERENCE: Tuple[str, str] = ("torch", "fp32")
"""The exact reference every other backend is measured against (eager PyTorch fp32)."""


def is_reference(backend: str, precision: str = "auto") -> bool:
    """Whether ``backend`` / ``precision`` (``auto`` allowed) can only mean the :data:`REFERENCE`."""
    name, precision = parse_choice(backend, precision)
    return name in ("auto", REFERENCE[0]) and precision in ("auto", REFERENCE[1])


def backend_names() -> Tuple[str, ...]:
    """Registered backend names, in registration order."""
    return tuple(_REGISTRY)


def entry(name: str) -> BackendEntry:
    """The registry entry of ``name`` (InputError listing the names otherwise)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose from auto, {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def choices() -> Tuple[str, ...]:
    """Every ``BACKEND[:PRECISION]`` spelling (for argparse ``choices`` and help texts), ``auto`` first."""
    out = ["auto"]
    for item in _REGISTRY.values():
        out += [item.name, *(f"{item.name}:{p}" for p in item.precisions)]
    return tuple(out)


def parse_choice(text: str, precision: str = "auto") -> Tuple[str, str]:
    """``"openvino:bf16"`` -> ``("openvino", "bf16")``; ``"torch"`` -> ``("torch", precision)``; ``"auto"`` ->
    ``("auto", precision)``. A precision in ``text`` and a different explicit ``precision`` is an error.
    Names are checked (InputError), installation is not (see :func:`resolve`)."""
    name, _, inline = str(text).strip().partition(":")
    if name != "auto":
        entry(name)
    if inline:
        if precision not in ("auto", inline):
            raise InputError(f"{text!r} names precision {inline!r} but {precision!r} was asked for too")
        precision = inline
    if precision not in PRECISIONS + ("auto",):
        raise InputError(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    return name, precision


def format_choice(name: str, precision: str) -> str:
    """The inverse of :func:`parse_choice`: ``"openvino:fp32"``."""
    return f"{name}:{precision}"


def installed(name: str) -> bool:
    """Whether the runtime of backend ``name`` can be imported here (False for unknown names)."""
    item = _REGISTRY.get(name)
    return item is not None and available(item.runtime)


def require_backend(name: str) -> None:
    """Raise the one-line :class:`~medsam_lite.extras.MissingExtra` naming the extra (the entry's ``install``)
    unless the runtime of registered backend ``name`` is installed."""
    if not installed(name):
        raise missing_requirement(entry(name).install, f"backend {name!r}")


def resolve(backend: str = "auto", precision: str = "auto") -> Tuple[str, str]:
    """The concrete (backend, precision) for possibly-``auto`` requests; ``backend`` may carry its precision
    (``"openvino:bf16"``).

    ``backend="auto"``: the installed backend of the highest preference (openvino, else onnxruntime, else
    torch). ``precision="auto"``: the backend's default precision (:func:`default_precision`), fp32 unless a
    reduced precision passed the agreement gate on this kind of CPU. Unknown names, a backend that is not
    installed, or a precision a backend cannot run raise :class:`InputError` (one line).
    """
    name, precision = resolve_name(backend, precision), parse_choice(backend, precision)[1]
    if precision == "auto":
        precision = default_precision(name)
    if precision not in _REGISTRY[name].precisions:
        raise InputError(f"backend {name!r} runs {' / '.join(_REGISTRY[name].precisions)}, not {precision!r}"
                         + ("; it is the exact eager fp32 reference" if name == "torch" else ""))
    return name, precision


def resolve_name(backend: str = "auto", precision: str = "auto") -> str:
    """The concrete backend name of a possibly-``auto`` request (:func:`resolve` without the precision): imports
    no runtime, so an entry point can ask whether torch will run before anything imports it."""
    name, _ = parse_choice(backend, precision)
    if name == "auto":
        ready = [item for item in _REGISTRY.values() if installed(item.name)]
        if not ready:
            best = max(_REGISTRY.values(), key=lambda item: item.preference)
            raise InputError(f"no inference runtime is installed ({install_command(best.install)})")
        return max(ready, key=lambda item: item.preference).name
    require_backend(name)
    return name


def runs_torch(backend: str = "auto", precision: str = "auto") -> bool:
    """Whether a request resolves to the torch backend (:func:`resolve_name`; no runtime imported): an entry point
    sets torch's thread pool only then."""
    return resolve_name(backend, precision) == REFERENCE[0]


def default_precision(backend: str) -> str:
    """Precision ``auto`` runs ``backend`` at: its class's ``auto_precision()`` when it has one (OpenVINO: a
    reduced precision only when the gate allows it on this CPU), else its first registered precision."""
    cls = entry(backend).load()
    chooser = getattr(cls, "auto_precision", None)
    return str(chooser()) if chooser is not None else entry(backend).precisions[0]


def _is_model(model: Any) -> bool:
    return hasattr(model, "image_encoder") and hasattr(model, "state_dict")


def create_backend(model: Union["MedSAMLite", str, None] = None, backend: str = "auto", precision: str = "auto",
                   cache_dir: Optional["Path"] = None, threads: Optional[int] = None) -> Backend:
    """Build a backend (names may be ``auto``, see :func:`resolve`) for ``model``: a MedSAMLite module, a
    pretrained name, a checkpoint path, or None (the default model).

    A backend class with ``from_weights`` is given names / paths directly (OpenVINO opens its cached IR
    without building the torch model); otherwise the model is loaded (:func:`medsam_lite.checkpoint.load_model`).
    Converted artifacts (ONNX, OpenVINO IR) are built locally on first use and cached under ``cache_dir``
    (default: the user cache folder, :mod:`medsam_lite.backends.artifacts`). ``threads``: intra-op threads of a
    non-torch runtime (None = the runtime's default).
    """
    name, prec = resolve(backend, precision)
    cls = entry(name).load()
    if not _is_model(model) and hasattr(cls, "from_weights"):
        return cls.from_weights(model, prec, cache_dir=cache_dir, threads=threads)
    if not _is_model(model):
        from ..checkpoint import load_model

        model = load_model(model)
    return cls.from_model(model, prec, cache_dir=cache_dir, threads=threads)


def open_folder(folder: "Path", backend: str = "auto", precision: str = "auto",
                threads: Optional[int] = None) -> Backend:
    """A backend over an artifact folder exported by ``medsam-lite export`` (e.g. ``encoder.onnx`` /
    ``decoder.onnx``): ``backend`` must name a registered backend that opens folders (InputError otherwise)."""
    names = [item.name for item in _REGISTRY.values() if item.opens_folder]
    name, precision = parse_choice(backend, precision)
    if name not in names:
        raise InputError(f"--onnx-dir only applies to --backend {' / '.join(names)}")
    name, precision = resolve(name, precision)
    return entry(name).load().from_folder(folder, precision, threads=threads)


def make_backend(model: "MedSAMLite", backend: str = "auto", precision: str = "auto",
                 cache_dir: Optional["Path"] = None, threads: Optional[int] = None) -> Backend:
    """Build backend ``backend`` at ``precision`` for the module ``model`` (:func:`create_backend`)."""
    return create_backend(model, backend, precision, cache_dir=cache_dir, threads=threads)


BACKENDS: Tuple[str, ...] = backend_names()
"""Backend names registered by this package (a snapshot; :func:`backend_names` sees later registrations)."""
