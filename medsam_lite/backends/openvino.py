"""OpenVINO backend: the encoder and decoder converted locally to OpenVINO IR and run on the CPU plugin.

Precisions (:data:`SCHEMES`; encoder / decoder inference precision):

* ``fp32``: both graphs with ``INFERENCE_PRECISION_HINT=f32`` (the same masks as eager fp32, up to
  float rounding; measured in docs/backends/gate.md);
* ``bf16``: both graphs with the native bf16 hint (needs a CPU with AMX / AVX-512 BF16 to be fast);
* ``bf16-encoder``: bf16 only in the FLOP-heavy encoder, the decoder in f32 (an experiment of the gate);
* ``bf16-mixed`` / ``bf16-mixed3``: the TinyViT encoder as a chain of stage graphs, the precision-sensitive
  stages (:data:`MIXED_F32_STAGES`) in f32 and the rest bf16, the decoder f32;
* ``int8``: the encoder post-training quantised by NNCF (transformer model type; the neck, norms and
  softmax kept in higher precision), calibrated on slices of the bundled example images only; the
  decoder in f32. Opt-in: never chosen by ``auto`` unless the gate allowed it.

Conversion: the torch graphs of :mod:`medsam_lite.backends.graphs` -> ONNX -> ``openvino.convert_model``
-> IR (``encoder.xml``, and the decoder split into ``decoder_image.xml``, its box-independent part, run
once per embedding however many boxes are decoded from it, and ``decoder_box.xml``; f32 weights) in the artifact cache
(:mod:`medsam_lite.backends.artifacts`), once per (weights, IR precision, OpenVINO version); the fp32,
bf16 and bf16-encoder schemes share one f32 IR (precision is a compile hint). Compiled models go to
OpenVINO's own cache (``CACHE_DIR`` = ``<entry>/compiled``), so a second process starts quickly.

LiteMedSAM's f32 IR ships as package data (:mod:`medsam_lite.backends.packaged_ir`): ``lite_medsam`` at fp32 /
bf16 / bf16-encoder opens it, SHA-256 checked, with no conversion and no torch (its compiled-model cache goes
to ``<cache root>/openvino/packaged-<key>/compiled``). Other models and the int8 / mixed IRs are converted
as above, which needs the [torch] extra.

Running a converted entry needs no torch (``encode`` / ``decode`` take and return numpy arrays, or torch
tensors for a torch caller, :mod:`medsam_lite.arrays`); only the conversion imports it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..arrays import like, to_numpy
from ..errors import InputError
from . import packaged_ir
from .artifacts import ArtifactKey, ensure_entry, entry_dir, is_complete, read_alias, write_alias
from .cpu import core
from .decision import GATE_FILE, auto_precision  # noqa: F401  (the gate decision, per CPU kind)

if TYPE_CHECKING:
    from ..model import MedSAMLite

FORMAT_VERSION = 3
"""Version of this module's conversion (part of the artifact key; bump when the conversion changes)."""

SCHEMES: Dict[str, Tuple[str, str]] = {
    "fp32": ("f32", "f32"),
    "bf16": ("bf16", "bf16"),
    "bf16-encoder": ("bf16", "f32"),
    "bf16-mixed": ("mixed", "f32"),
    "bf16-mixed3": ("mixed", "f32"),
    "int8": ("int8", "f32"),
}
"""Precision name -> (encoder, decoder) precision; ``int8`` means the NNCF-quantised encoder IR run at f32,
``mixed`` the encoder as a chain of stage IRs, each at bf16 or f32 (:data:`MIXED_F32_STAGES`)."""

MIXED_F32_STAGES: Dict[str, Tuple[str, ...]] = {
    "bf16-mixed": ("stem", "layer2"),
    "bf16-mixed3": ("stem", "layer0", "layer2"),
}
"""Encoder stages (:func:`medsam_lite.backends.graphs.encoder_stages`) a mixed scheme keeps in f32; the
others run bf16, the decoder f32. Chosen from a per-stage sensitivity probe of LiteMedSAM on bundled CT /
MR / microscopy slices (OpenVINO, 2 threads; relative embedding error against f32 when only that stage
ran bf16: stem 0.020, layer0 0.024, layer1 0.018, layer2 0.028, layer3 0.009, neck 0.006; all stages
0.046): the stem (the [0, 1] input rounded to bf16) and the costliest-in-error stages stay f32.
Object-box mask IoU against f32 in that probe (54 boxes): all bf16 0.984 (min 0.83), ``bf16-mixed``
0.990 (0.83), ``bf16-mixed3`` 0.993 (0.95); the gate (docs/backends/gate.md) decides."""

CALIBRATION_SLICES_PER_VOLUME = 8
"""int8 calibration: evenly spaced slices taken from each bundled 3D example (plus the 2D example)."""

NNCF_IGNORED_PATTERNS: Tuple[str, ...] = (".*neck.*",)
"""Encoder nodes NNCF must not quantise (names from the ONNX export): the neck that forms the embedding."""

NNCF_IGNORED_TYPES: Tuple[str, ...] = ("Softmax", "MVN", "ReduceMean", "Sqrt", "Divide", "Power")
"""OpenVINO op types kept out of quantisation: softmax and the pieces of layer / group norms."""


def _ov() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise InputError("backend 'openvino' is not installed (pip install openvino)") from exc
    return ov


def ir_precision(precision: str) -> str:
    """The IR an inference precision runs from: ``int8`` has its own quantised IR, the mixed schemes the
    f32 encoder split into stage IRs (``fp32-stages``), the others share the f32 IR."""
    kind = SCHEMES[precision][0]
    return "int8" if kind == "int8" else "fp32-stages" if kind == "mixed" else "fp32"


def calibration_images() -> List[np.ndarray]:
    """int8 calibration inputs, each (1, 3, 256, 256) float32 in [0, 1] (model frame): the bundled 2D
    example and :data:`CALIBRATION_SLICES_PER_VOLUME` evenly spaced slices of each bundled 3D example.
    Only bundled (training-side) images: never held-out sources."""
    from ..resources import EXAMPLE_NAMES, load_example
    from ..transforms import preprocess_array

    images: List[np.ndarray] = []
    for name in EXAMPLE_NAMES:
        imgs = load_example(name)["imgs"]
        if name.startswith("3D"):
            idx = np.linspace(0, imgs.shape[0] - 1, CALIBRATION_SLICES_PER_VOLUME).round().astype(int)
            slices = [imgs[i] for i in idx]
        else:
            slices = [imgs]
        images.extend(preprocess_array(s)[0] for s in slices)
    return images


def _quantize_encoder(ov_model: Any) -> Any:
    """NNCF post-training int8 quantisation of the encoder IR (see module docstring)."""
    try:
        import nncf
    except ImportError as exc:
        from ..extras import missing_extra

        raise missing_extra("int8", "openvino:int8") from exc

    data = calibration_images()
    return nncf.quantize(
        ov_model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data),
        ignored_scope=nncf.IgnoredScope(patterns=list(NNCF_IGNORED_PATTERNS), types=list(NNCF_IGNORED_TYPES),
                                        validate=False),
    )


GRAPHS: Tuple[str, str, str] = ("encoder", "decoder_image", "decoder_box")
"""The IR files of one artifact-cache entry (``<name>.xml`` / ``.bin``)."""


def convert_to_ir(model: "MedSAMLite", out_dir: Path, int8: bool = False, stages: bool = False) -> Dict[str, Path]:
    """Write ``out_dir/<name>.xml|bin`` for each of :data:`GRAPHS` (f32 weights; the encoder
    NNCF-quantised when ``int8``) from ``model``'s graphs (via a temporary ONNX export). With ``stages``
    the encoder is written as ``encoder_<stage>.xml`` per stage of
    :func:`~medsam_lite.backends.graphs.encoder_stages` (converted from torch directly) instead."""
    from ..encoders import inference_encoder
    from .graphs import encoder_stages, write_onnx_graphs

    ov = _ov()
    paths = {name: out_dir / f"{name}.xml" for name in GRAPHS if not (stages and name == "encoder")}
    with tempfile.TemporaryDirectory(prefix=".onnx.", dir=out_dir) as tmp:
        onnx_paths = write_onnx_graphs(model, tmp, split_decoder=True)
        for key in paths:
            ov_model = ov.convert_model(str(onnx_paths[key]))
            if key == "encoder" and int8:
                ov_model = _quantize_encoder(ov_model)
            ov.save_model(ov_model, str(paths[key]), compress_to_fp16=False)
    if stages:
        import torch

        parts = encoder_stages(inference_encoder(model.image_encoder))
        if not parts:
            raise InputError(f"the mixed-precision schemes need LiteMedSAM's TinyViT encoder, not "
                             f"{type(model.image_encoder).__name__}")
        x = torch.zeros(1, 3, 256, 256)
        with torch.no_grad():
            for name, module in parts:
                paths[f"encoder_{name}"] = out_dir / f"encoder_{name}.xml"
                ov.save_model(ov.convert_model(module, example_input=(x,)), str(paths[f"encoder_{name}"]),
                              compress_to_fp16=False)
                x = module(x)
    return paths


def _check_precision(precision: str) -> None:
    if precision not in SCHEMES:
        raise InputError(f"unknown OpenVINO precision {precision!r}; choose from {', '.join(SCHEMES)}")


class OpenVINOBackend:
    """``encode`` (B, 3, 256, 256) float32 [0, 1] -> (B, 256, 64, 64); ``decode(embedding (1, 256, 64, 64),
    boxes_256 (N, 4) XYXY model frame)`` -> (N, 1, 256, 256) logits, on OpenVINO's CPU plugin.

    Args:
        model: the MedSAMLite model whose weights are converted (its SHA-256 keys the cache).
        precision: a key of :data:`SCHEMES` (``fp32``, ``bf16``, ``bf16-encoder``, ``int8``).
        cache_dir: artifact cache root (None: ``$MEDSAM_LITE_CACHE`` or the user cache folder).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores).
        model_name: name shown in the one-line conversion message.
    """

    name = "openvino"
    decode_batch = 4
    """Boxes per ``decode`` call the Predictor uses by default: the token-major box graph
    (:class:`~medsam_lite.backends.graphs.DecoderBoxGraph`) is as fast or faster a box in calls of several boxes (f32, 2
    threads, two benchmark runs: 9.7 / 10.8 ms at 4 per call, 10.0 / 9.8 at 16, 11.3 / 10.7 at one), and 16
    per call raised the 125-box image's peak RSS by ~0.5 GB (1572 vs 1103 MiB)."""

    def __init__(self, model: "MedSAMLite", precision: str = "fp32", cache_dir: Optional[Union[str, Path]] = None,
                 threads: Optional[int] = None, model_name: Optional[str] = None) -> None:
        from ..checkpoint import state_sha256

        _check_precision(precision)
        model = model.eval()
        ir = ir_precision(precision)
        weights_sha256 = state_sha256(model)
        packaged = packaged_ir.find(weights_sha256=weights_sha256, format_version=FORMAT_VERSION,
                                    cache_dir=cache_dir) if ir == "fp32" else None
        if packaged is not None:  # the shipped IR of these very weights: no conversion
            self._open_packaged(packaged, precision, cache_dir, threads)
            return
        key = ArtifactKey("openvino", weights_sha256, ir, _ov().get_version(), FORMAT_VERSION)
        label = model_name or type(model.image_encoder).__name__
        entry = ensure_entry(key, lambda tmp: convert_to_ir(model, tmp, int8=ir == "int8", stages=ir == "fp32-stages"),
                             f"{label} encoder + decoder to OpenVINO IR ({ir})", cache_dir)
        self._open(key, entry, precision, threads)

    @classmethod
    def from_model(cls, model: "MedSAMLite", precision: str = "fp32", cache_dir: Optional[Union[str, Path]] = None,
                   threads: Optional[int] = None) -> "OpenVINOBackend":
        """The registry's constructor (:func:`medsam_lite.backends.create_backend`)."""
        return cls(model, precision=precision, cache_dir=cache_dir, threads=threads)

    @staticmethod
    def auto_precision() -> str:
        """The precision ``auto`` runs at on this CPU (:func:`medsam_lite.backends.decision.auto_precision`)."""
        return auto_precision()

    @classmethod
    def from_weights(cls, name_or_path: Optional[str] = None, precision: str = "fp32",
                     cache_dir: Optional[Union[str, Path]] = None, threads: Optional[int] = None) -> "OpenVINOBackend":
        """The backend of a pretrained name or checkpoint path (:func:`medsam_lite.checkpoint.load_model`
        specs). The packaged IR (``lite_medsam`` at an f32-IR precision) opens without torch; otherwise, once
        converted, a later process opens the cached IR directly (found through the weights file's SHA-256)
        without building the torch model: that skips ~1-3 s of start-up (timm / torchvision imports,
        checkpoint loading). Converting needs the [torch] extra (one-line error otherwise)."""
        from ..checkpoint import default_model_name, load_model, weights_file_sha256
        from ..extras import require_extra

        _check_precision(precision)
        name = name_or_path or default_model_name()
        packaged = packaged_ir.find(name, format_version=FORMAT_VERSION, cache_dir=cache_dir) \
            if ir_precision(precision) == "fp32" else None
        if packaged is not None:
            backend = cls.__new__(cls)
            backend._open_packaged(packaged, precision, cache_dir, threads)
            return backend
        require_extra("torch", f"openvino:{precision} of {name} (converted locally; the package ships the f32 IR of "
                               f"{', '.join(packaged_ir.FOLDERS)} only)")
        file_sha = weights_file_sha256(name_or_path)
        weights_sha = read_alias("openvino", file_sha, cache_dir)
        if weights_sha is not None:
            key = ArtifactKey("openvino", weights_sha, ir_precision(precision), _ov().get_version(), FORMAT_VERSION)
            entry = entry_dir(key, cache_dir)
            if is_complete(entry, key):
                backend = cls.__new__(cls)
                backend._open(key, entry, precision, threads)
                return backend
        backend = cls(load_model(name_or_path), precision=precision, cache_dir=cache_dir, threads=threads,
                      model_name=name_or_path)
        write_alias("openvino", file_sha, backend.weights_sha256, cache_dir)
        return backend

    def _open_packaged(self, ir: "packaged_ir.PackagedIR", precision: str, cache_dir: Optional[Union[str, Path]],
                       threads: Optional[int]) -> None:
        """Compile the packaged IR ``ir`` (its compiled-model cache in the user cache, the package may be read-only)."""
        key = packaged_ir.cache_key(ir)
        compiled = packaged_ir.cache_folder(ir, cache_dir) / "compiled"
        compiled.mkdir(parents=True, exist_ok=True)
        self._open(key, ir.folder, precision, threads, compiled)
        self.packaged = True

    def _open(self, key: ArtifactKey, entry: Path, precision: str, threads: Optional[int],
              compiled: Optional[Path] = None) -> None:
        """Compile the IR of the complete artifact entry ``entry`` (of ``key``); OpenVINO's compiled-model cache
        goes to ``compiled`` (default ``entry/compiled``)."""
        self.key, self.entry, self.precision, self.threads = key, entry, precision, threads
        self.compiled_dir = compiled if compiled is not None else entry / "compiled"
        self.packaged = False  # the IR shipped in the package (_open_packaged), not a converted one
        self.weights_sha256 = key.weights_sha256  # model fingerprint, e.g. for EmbeddingCache keys
        ov_core = core()
        enc_prec, dec_prec = SCHEMES[precision]
        self._stage_requests: List[Any] = []
        if enc_prec == "mixed":  # the encoder as the chain of stage IRs written by convert_to_ir, in forward order
            from .graphs import ENCODER_STAGES

            self.stage_precisions = {name: "f32" if name in MIXED_F32_STAGES[precision] else "bf16"
                                     for name in ENCODER_STAGES}
            self._stage_requests = [
                ov_core.compile_model(str(entry / f"encoder_{name}.xml"), "CPU", self._config(prec)).create_infer_request()
                for name, prec in self.stage_precisions.items()]
            self.encoder = None
        else:
            self.encoder = ov_core.compile_model(str(self.entry / "encoder.xml"), "CPU",
                                                 self._config("f32" if enc_prec == "int8" else enc_prec))
        self.decoder_image = ov_core.compile_model(str(self.entry / "decoder_image.xml"), "CPU", self._config(dec_prec))
        self.decoder_box = ov_core.compile_model(str(self.entry / "decoder_box.xml"), "CPU", self._config(dec_prec))
        self._enc_request = self.encoder.create_infer_request() if self.encoder is not None else None
        self._image_request = self.decoder_image.create_infer_request()
        self._box_request = self.decoder_box.create_infer_request()
        self._parts_of: Optional[np.ndarray] = None  # the embedding whose image part is in _parts
        self._parts: List[np.ndarray] = []
        self.image_part_calls = 0

    def _config(self, inference_precision: str) -> Dict[str, str]:
        config = {"INFERENCE_PRECISION_HINT": inference_precision, "CACHE_DIR": str(self.compiled_dir),
                  "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(int(self.threads))
        return config

    def encode(self, images: Any) -> Any:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 (one inference per image); numpy in,
        numpy out (a torch tensor in, a tensor out)."""
        array = to_numpy(images)
        if array.ndim != 4 or array.shape[1:] != (3, 256, 256):
            raise ValueError(f"encode expects (B, 3, 256, 256), got {tuple(array.shape)}")
        out = [self._encode_one(array[i : i + 1]) for i in range(array.shape[0])]
        return like(np.concatenate(out) if out else np.zeros((0, 256, 64, 64), np.float32), images)

    def _encode_one(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, 256, 256) float32 -> (1, 256, 64, 64) float32 (through the stage chain for mixed schemes)."""
        if not self._stage_requests:
            return self._enc_request.infer({0: image})[0].copy()
        x = image
        for request in self._stage_requests:  # each output stays valid until that request runs again
            x = request.infer({0: x}, share_inputs=True)[0]
        return x.copy()

    def decode(self, embedding: Any, boxes_256: Any) -> Any:
        """(1, 256, 64, 64) embedding, (N, 4) XYXY model-frame boxes -> (N, 1, 256, 256) float32 logits; numpy
        in, numpy out (a torch embedding in, a tensor out).

        The decoder's box-independent part runs once per embedding: consecutive calls with an equal
        embedding (compared by value), e.g. the boxes of one 2D image or of one slice, reuse it.
        """
        emb = to_numpy(embedding)
        if self._parts_of is None or not np.array_equal(self._parts_of, emb):  # ~0.5 ms against ~25 ms a box
            # outputs stay valid (they are the request's own buffers) until its next inference
            self._parts = list(self._image_request.infer({0: emb}).values())
            self._parts_of = emb.copy()
            self.image_part_calls += 1
        boxes = to_numpy(boxes_256).reshape(-1, 4)
        logits = self._box_request.infer([*self._parts, boxes], share_inputs=True)[0]
        return like(logits.copy(), embedding)
