"""One self-contained TorchScript file: encoder + decoder + pre/post-processing + 3D propagation.

The artifact is loaded with ``torch.jit.load`` alone (no ``medsam_lite`` import) and exposes:

* ``segment_2d(image, boxes)``: image (H, W), (H, W, 1) or (H, W, 3) uint8; boxes (N, 4) XYXY in
  original pixels (any real dtype) -> (H, W) uint8 label map, value i+1 for box i, later boxes win.
* ``segment_3d(volume, boxes)``: volume (D, H, W) uint8; boxes (N, 6)
  ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in voxels -> (D, H, W) uint8 label map, the same
  slice-by-slice propagation (and per-slice embedding cache) as :meth:`Predictor.predict_volume`.
* ``encode(tensor)`` (1, 3, 256, 256) -> (1, 256, 64, 64) and ``decode(embedding, boxes_256)``
  -> (N, 1, 256, 256) logits, the raw model-frame network.

Pre-processing reproduces :mod:`medsam_lite.transforms`. ``cv2.INTER_AREA`` has no TorchScript op
(``F.interpolate(mode="area")`` only matches it for integer shrink factors), so it is re-implemented:
shrinking as an exact separable pixel-area matrix product in float64 rounded half up to uint8;
enlarging as OpenCV's fixed-point bilinear-with-area-weights path. Both are bit-exact against
``cv2.resize`` on the bundled cases; OpenCV's scalar tail loop (non-SIMD widths) may differ by one
grey level on rare pixels.
Metadata JSON is stored in the file as the extra file ``metadata.json``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

METADATA_NAME = "metadata.json"
"""Name of the ``_extra_files`` entry holding the metadata JSON."""

INPUT_CONTRACT = {
    "segment_2d": {
        "image": "(H, W), (H, W, 1) or (H, W, 3) uint8, not constant",
        "boxes": "(N, 4) float XYXY [x_min, y_min, x_max, y_max] in original pixel indices, 1 <= N <= 255",
        "returns": "(H, W) uint8 label map: value i+1 where box i's mask is set, later boxes win",
    },
    "segment_3d": {
        "volume": "(D, H, W) uint8, not constant",
        "boxes": "(N, 6) float [x_min, y_min, z_min, x_max, y_max, z_max] in voxel indices, 1 <= N <= 255",
        "returns": "(D, H, W) uint8 label map: value i+1 for box i, later boxes win",
    },
    "encode": "(1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64)",
    "decode": "embedding (1, 256, 64, 64), boxes (N, 4) float32 XYXY in the 256 frame -> logits (N, 1, 256, 256)",
    "errors": "bad inputs raise RuntimeError/ValueError with a one-line message from the artifact",
    "partial_boxes": "boxes extending past the image are clipped to it; boxes entirely outside are errors",
}


class _Decoder(nn.Module):
    """Prompt encoder + mask decoder: embedding (1, 256, 64, 64), boxes (N, 4) 256 frame -> (N, 1, 256, 256)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(embedding, boxes)[0]


def _area_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64 weights of OpenCV's INTER_AREA along one axis.

    Output pixel i covers source interval [i * s, (i + 1) * s), s = in_size / out_size; its weight
    on source pixel j is the overlap of that interval with [j, j + 1) divided by s.
    """
    scale = float(in_size) / float(out_size)
    starts = torch.arange(out_size, dtype=torch.float64).unsqueeze(1) * scale
    ends = starts + scale
    lo = torch.arange(in_size, dtype=torch.float64).unsqueeze(0)
    overlap = torch.clamp(torch.minimum(ends, lo + 1.0) - torch.maximum(starts, lo), min=0.0)
    return overlap / scale


def _linear_area_coeffs(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's INTER_AREA up-scaling taps along one axis: (source index, next index, 11-bit weights (out, 2)).

    When enlarging, OpenCV runs its bilinear code with area coefficients: output pixel d covers
    [d * s, (d + 1) * s) of the source (s = in / out < 1) and straddles at most two source pixels.
    Weights are computed in float32 and quantised to 11 bits exactly like ``cv::resize`` on uint8.
    """
    inv = float(out_size) / float(in_size)
    scale = 1.0 / inv
    d = torch.arange(out_size, dtype=torch.float64)
    src = torch.floor(d * scale)
    fx = ((d + 1.0) - (src + 1.0) * inv).to(torch.float32)
    fx = torch.where(fx <= 0.0, torch.zeros_like(fx), fx - torch.floor(fx))
    last = src >= float(in_size - 1)
    src = torch.where(last, torch.full_like(src, float(in_size - 1)), src)
    fx = torch.where(last, torch.zeros_like(fx), fx)
    weights = torch.stack([torch.round((1.0 - fx) * 2048.0), torch.round(fx * 2048.0)], dim=1).to(torch.int64)
    index = src.to(torch.int64)
    return index, torch.clamp(index + 1, max=in_size - 1), weights


def _resize_area_u8(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """(C, H, W) float64 holding uint8 values -> (C, new_h, new_w) float64 uint8 values, as ``cv2.INTER_AREA``.

    Shrinking: exact separable pixel-area averaging, rounded half up. Enlarging: OpenCV's fixed-point
    bilinear-with-area-weights path (11-bit weights, its SIMD rounding), bit-exact on the bundled cases.
    """
    if new_h > image.shape[1] or new_w > image.shape[2]:
        sy, ny, wy = _linear_area_coeffs(image.shape[1], new_h)
        sx, nx, wx = _linear_area_coeffs(image.shape[2], new_w)
        src = image.to(torch.int64)
        rows = src[:, :, sx] * wx[:, 0] + src[:, :, nx] * wx[:, 1]  # (C, H, new_w), scaled by 2048
        top = torch.div(rows[:, sy, :], 16, rounding_mode="floor") * wy[:, 0].unsqueeze(1)
        bottom = torch.div(rows[:, ny, :], 16, rounding_mode="floor") * wy[:, 1].unsqueeze(1)
        out = torch.div(top, 65536, rounding_mode="floor") + torch.div(bottom, 65536, rounding_mode="floor")
        return torch.clamp(torch.div(out + 2, 4, rounding_mode="floor"), 0, 255).to(torch.float64)
    wy = _area_matrix(image.shape[1], new_h)
    wx = _area_matrix(image.shape[2], new_w)
    out = torch.matmul(torch.matmul(wy, image), wx.t())
    return torch.clamp(torch.floor(out + 0.5 + 1e-9), 0.0, 255.0)


def _resized_shape(height: int, width: int) -> Tuple[int, int]:
    """(new_h, new_w) with the longest side 256, rounded half up (``transforms.get_preprocess_shape``)."""
    scale = 256.0 / float(max(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ScriptedPredictor(nn.Module):
    """The exported predictor (see the module docstring for the methods and frames).

    ``encoder_calls`` counts image-encoder runs of ``segment_2d`` / ``segment_3d`` (as the Predictor's).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, decode_batch: int = 1) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.decode_batch = decode_batch
        self.encoder_calls = 0

    # ------------------------------------------------------------------ network
    @torch.jit.export
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64)."""
        return self.encoder(image)

    @torch.jit.export
    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        """Embedding (1, 256, 64, 64), (N, 4) float32 XYXY in the 256 frame -> (N, 1, 256, 256) logits."""
        return self.decoder(embedding, boxes_256)

    # ------------------------------------------------------------------ helpers
    def _preprocess(self, image: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """(H, W, 3) uint8 -> (1, 3, 256, 256) float32 model input, resized h, resized w."""
        height, width = image.shape[0], image.shape[1]
        new_h, new_w = _resized_shape(height, width)
        chw = image.permute(2, 0, 1).to(torch.float64)
        resized = _resize_area_u8(chw, new_h, new_w)
        lo = resized.min()
        hi = resized.max()
        normed = ((resized - lo) / torch.clamp(hi - lo, min=1e-8)).to(torch.float32)
        padded = F.pad(normed, [0, 256 - new_w, 0, 256 - new_h])
        return padded.unsqueeze(0), new_h, new_w

    def _decode_masks(self, embedding: torch.Tensor, boxes_256: torch.Tensor, new_h: int, new_w: int,
                      height: int, width: int) -> torch.Tensor:
        """(N, 4) model-frame boxes -> (N, H, W) bool masks, ``decode_batch`` boxes per decoder call."""
        masks: List[torch.Tensor] = []
        n = boxes_256.shape[0]
        for start in range(0, n, self.decode_batch):
            chunk = boxes_256[start:min(start + self.decode_batch, n)].to(torch.float32)
            logits = self.decoder(embedding, chunk)[:, :, :new_h, :new_w]
            up = F.interpolate(logits, size=[height, width], mode="bilinear", align_corners=False)
            masks.append(torch.sigmoid(up)[:, 0] > 0.5)
        return torch.cat(masks)

    def _check_boxes(self, boxes: torch.Tensor, width: int, limits: List[int]) -> torch.Tensor:
        """Validate (N, width) boxes against per-axis sizes ``limits`` (x, y[, z]); clip into the image (float64)."""
        if boxes.dim() == 1 and boxes.shape[0] == width:
            boxes = boxes.unsqueeze(0)
        if boxes.dim() != 2 or boxes.shape[1] != width:
            raise ValueError("boxes must have shape (N, " + str(width) + "), got " + str(list(boxes.shape)))
        if boxes.shape[0] == 0:
            raise ValueError("no boxes given (boxes has 0 rows)")
        if boxes.shape[0] > 255:
            raise ValueError(str(boxes.shape[0]) + " boxes do not fit a uint8 label map (at most 255)")
        if boxes.dtype == torch.bool or boxes.is_complex():
            raise ValueError("boxes must be a real-valued tensor, got " + str(boxes.dtype))
        boxes = boxes.to(torch.float64)
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError("boxes contain NaN or infinite values")
        names = ["x", "y", "z"]
        half = width // 2
        out = boxes.clone()
        for i in range(boxes.shape[0]):
            for a in range(half):
                lo = float(boxes[i, a])
                hi = float(boxes[i, a + half])
                name = names[a]
                limit = limits[a]
                if hi < lo:
                    raise ValueError("box " + str(i) + " is inverted along " + name + ": " + name + "_min="
                                     + str(lo) + ", " + name + "_max=" + str(hi))
                if hi == lo and name != "z":
                    raise ValueError("box " + str(i) + " is empty along " + name + ": " + name + "_min="
                                     + str(lo) + ", " + name + "_max=" + str(hi))
                if hi < 0.0 or lo > float(limit - 1):
                    raise ValueError("box " + str(i) + " lies outside the image along " + name + ": ["
                                     + str(lo) + ", " + str(hi) + "] vs [0, " + str(limit - 1) + "]")
                out[i, a] = max(lo, 0.0)
                out[i, a + half] = min(hi, float(limit - 1))
        return out

    def _check_pixels(self, array: torch.Tensor, what: str) -> None:
        if array.dtype != torch.uint8:
            raise ValueError(what + " must be a uint8 tensor, got " + str(array.dtype))
        if array.numel() == 0:
            raise ValueError(what + " is empty (shape " + str(list(array.shape)) + ")")
        if bool(array.min() == array.max()):
            raise ValueError(what + " is constant (every value = " + str(int(array.min())) + "), nothing to segment")

    # ------------------------------------------------------------------ 2D
    @torch.jit.export
    def segment_2d(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(H, W[, 1|3]) uint8 image, (N, 4) XYXY boxes in original pixels -> (H, W) uint8 label map."""
        if image.dim() == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.dim() == 2:
            image = image.unsqueeze(2).expand(image.shape[0], image.shape[1], 3)
        if image.dim() != 3 or image.shape[2] != 3:
            raise ValueError("image must be (H, W) or (H, W, 3), got shape " + str(list(image.shape)))
        self._check_pixels(image, "image")
        height, width = image.shape[0], image.shape[1]
        boxes = self._check_boxes(boxes, 4, [width, height])
        with torch.no_grad():
            tensor, new_h, new_w = self._preprocess(image)
            embedding = self.encoder(tensor)
            self.encoder_calls += 1
            boxes_256 = torch.trunc(boxes * (256.0 / float(max(height, width))))
            masks = self._decode_masks(embedding, boxes_256, new_h, new_w, height, width)
        out = torch.zeros([height, width], dtype=torch.uint8)
        for i in range(masks.shape[0]):
            out[masks[i]] = i + 1
        return out

    # ------------------------------------------------------------------ 3D
    def _box_from_prev(self, prev: torch.Tensor, idx: int, new_h: int, new_w: int) -> Tuple[bool, torch.Tensor]:
        """Previous slice's (H, W) bool mask -> (non-empty, (4,) 256-frame box widened by 3 px)."""
        label = prev.to(torch.float64).unsqueeze(0) * float(idx)
        small = _resize_area_u8(label, new_h, new_w)[0] > 0.0
        if not bool(small.any()):
            return False, torch.zeros([4], dtype=torch.float64)
        ys = torch.nonzero(small.any(dim=1)).flatten()
        xs = torch.nonzero(small.any(dim=0)).flatten()
        box = torch.tensor([max(0, int(xs.min()) - 3), max(0, int(ys.min()) - 3),
                            min(256, int(xs.max()) + 3), min(256, int(ys.max()) + 3)], dtype=torch.float64)
        return True, box

    @torch.jit.export
    def segment_3d(self, volume: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(D, H, W) uint8 volume, (N, 6) boxes in voxels -> (D, H, W) uint8 label map."""
        if volume.dim() != 3:
            raise ValueError("volume must be (D, H, W), got shape " + str(list(volume.shape)))
        self._check_pixels(volume, "volume")
        depth, height, width = volume.shape[0], volume.shape[1], volume.shape[2]
        boxes = self._check_boxes(boxes, 6, [width, height, depth]).to(torch.int64)
        new_h, new_w = _resized_shape(height, width)
        ratio = 256.0 / float(max(height, width))
        cache: Dict[int, torch.Tensor] = {}
        segs = torch.zeros([depth, height, width], dtype=torch.uint8)
        with torch.no_grad():
            for b in range(boxes.shape[0]):
                idx = b + 1
                x0, y0, z0 = int(boxes[b, 0]), int(boxes[b, 1]), int(boxes[b, 2])
                x1, y1, z1 = int(boxes[b, 3]), int(boxes[b, 4]), int(boxes[b, 5])
                given = torch.trunc(torch.tensor([x0, y0, x1, y1], dtype=torch.float64) * ratio)
                z_mid = int((z1 - z0) / 2 + z0)
                out = torch.zeros([depth, height, width], dtype=torch.bool)
                upward = list(range(z_mid, min(z1 + 1, depth)))
                downward = list(range(z_mid - 1, max(-1, z0 - 1), -1))
                for direction in range(2):
                    order = upward if direction == 0 else downward
                    step = -1 if direction == 0 else 1
                    for z in order:
                        box = given
                        if z != z_mid:
                            found, prev_box = self._box_from_prev(out[z + step], idx, new_h, new_w)
                            if found:
                                box = prev_box
                        if z not in cache:
                            slice_rgb = volume[z].unsqueeze(2).expand(height, width, 3)
                            cache[z] = self.encoder(self._preprocess(slice_rgb)[0])
                            self.encoder_calls += 1
                        out[z] = self._decode_masks(cache[z], box.unsqueeze(0), new_h, new_w, height, width)[0]
                segs[out] = idx
        return segs

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`segment_2d`."""
        return self.segment_2d(image, boxes)


def _prepare_encoder(model: nn.Module) -> nn.Module:
    """The image encoder in eval mode, RepViT branches reparameterised / BatchNorm fused, scripted."""
    from medsam_lite.encoders.repvit import fuse_for_inference, is_repvit

    encoder = model.image_encoder.eval()
    if is_repvit(encoder):
        encoder = fuse_for_inference(encoder)
    try:
        return torch.jit.script(encoder)
    except Exception:  # pragma: no cover - registry encoders script; keep a fixed-shape fallback
        return torch.jit.trace(encoder, torch.rand(1, 3, 256, 256))


def build_scripted_predictor(model: nn.Module, decode_batch: int = 1) -> torch.jit.ScriptModule:
    """Script the whole predictor. SAM's decoder is not scriptable, so it is traced (N stays dynamic)."""
    model = model.eval()
    embedding = torch.randn(1, 256, 64, 64)
    example_boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 200.0, 250.0], [0.0, 0.0, 256.0, 256.0]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit deprecation notices and SAM's benign TracerWarning (constant head dim)
        encoder = _prepare_encoder(model)
        decoder = torch.jit.trace(_Decoder(model).eval(), (embedding, example_boxes), check_trace=False)
        return torch.jit.script(ScriptedPredictor(encoder, decoder, decode_batch))


def export_torchscript(model: nn.Module, path: Union[str, Path], model_name: str = "unknown",
                       decode_batch: int = 1) -> Path:
    """Write the self-contained TorchScript predictor of ``model`` to ``path`` (with metadata JSON).

    Args:
        model: a ``MedSAMLite`` module (any registry encoder).
        path: output ``.pt`` file; parent folders are created.
        model_name: recorded in the metadata (pretrained name or checkpoint path).
        decode_batch: boxes decoded together in one decoder call.
    Returns: the written path.
    """
    import medsam_lite

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = build_scripted_predictor(model, decode_batch)
    metadata = {
        "format": "medsam-lite-torchscript",
        "model": model_name,
        "encoder": type(model.image_encoder).__name__,
        "medsam_lite_version": medsam_lite.__version__,
        "torch_version": torch.__version__,
        "image_size": 256,
        "embedding_shape": [1, 256, 64, 64],
        "methods": INPUT_CONTRACT,
    }
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_NAME: json.dumps(metadata, indent=2)})
    tmp.replace(path)
    return path


def read_metadata(path: Union[str, Path]) -> Dict[str, object]:
    """The metadata JSON stored in an exported TorchScript file."""
    extra = {METADATA_NAME: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_NAME])
