"""int8 post-training quantization of a YOLOv5 ONNX model with ONNX Runtime (static, calibrated, QDQ).

* QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops; ORT fuses them into int8 kernels when it
  loads the file). What the graph looks like is :class:`Int8Options`: activations uint8 or int8, weights int8
  per output channel or per tensor, which op types are quantized, whether the Detect output convs stay float,
  7-bit weights (``reduce_range``) and the calibrator. ``bench/bench_int8.py`` times and scores each form; the
  defaults are its winner (docs/deploy.md). ``ort_graph.py`` shows which ops then run in int8.
* Calibration images come from the **train** split (never the images the mAP is measured on), each
  resized and letterboxed as val does it (long side ``imgsz``, grey padding, no upscaling) into one square
  ``imgsz`` shape, batch 1 (ORT's histogram calibrators need every input the same shape). ORT holds every
  intermediate activation of a calibration pass in memory, so the images go through ``batch`` at a time
  (128 images of yolov5n at 640 in one pass would hold gigabytes).
* The Detect head's decode (sigmoid, grid and anchor arithmetic, the final concat) stays float: its output
  mixes pixel coordinates (0..imgsz) and probabilities (0..1) in one tensor, and one uint8 scale for both
  wipes out the scores. Only the nodes after the last convolutions are kept float (with ``float_head`` also
  those convolutions), and by default the first layer (``float_layers``): its 6x6 conv sees the raw image, and
  in int8 it alone costs about 0.01 mAP50-95 on this AVX2 CPU for under a tenth of the time.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OrchestratorError
from ..vocabulary import (
    ACTIVATION_TYPES,
    CALIB_BATCH,
    CALIBRATION_METHODS,
    DEFAULT_ACTIVATIONS,
    DEFAULT_FLOAT_HEAD,
    DEFAULT_FLOAT_LAYERS,
    DEFAULT_IMAGES,
    DEFAULT_METHOD,
    DEFAULT_PER_CHANNEL,
)


@dataclass(frozen=True)
class Int8Options:
    """The int8 graph to make: how it is calibrated (ORT's calibrator, how many train images, how many a pass)
    and its form. ``op_types`` None quantizes every op type ORT can (SiLU's Sigmoid and Mul included)."""

    method: str = DEFAULT_METHOD
    images: int = DEFAULT_IMAGES
    float_head: bool = DEFAULT_FLOAT_HEAD  # keep the Detect layer's output convs float too
    activations: str = DEFAULT_ACTIVATIONS  # "u8" (U8S8) or "s8" (S8S8); weights are always int8
    per_channel: bool = DEFAULT_PER_CHANNEL  # one weight scale per output channel, else one per tensor
    op_types: tuple[str, ...] | None = None
    reduce_range: bool = False  # 7-bit weights: no saturation in the u8 x s8 pair sums of non-VNNI kernels
    batch: int = CALIB_BATCH
    float_layers: tuple[int, ...] = DEFAULT_FLOAT_LAYERS  # model layers (``model.N``) kept float whole

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise OrchestratorError(
                f"calibration method: expected one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}"
            )
        if self.images < 1:
            raise OrchestratorError(f"calibration images: expected >= 1, got {self.images}")
        if self.activations not in ACTIVATION_TYPES:
            raise OrchestratorError(
                f"int8 activations: expected one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}"
            )
        if self.op_types is not None and not self.op_types:
            raise OrchestratorError("int8 op types: expected at least one (or None for all)")
        if self.batch < 1:
            raise OrchestratorError(f"calibration batch: expected >= 1, got {self.batch}")
        if any(i < 0 for i in self.float_layers):
            raise OrchestratorError(f"int8 float layers: expected layer indices >= 0, got {list(self.float_layers)}")

    @property
    def label(self) -> str:
        """A short name of the graph's form, e.g. ``u8s8 per-channel all-ops float-head``."""
        ops = "all-ops" if self.op_types is None else "+".join(self.op_types)
        parts = [f"{self.activations}s8", "per-channel" if self.per_channel else "per-tensor", ops]
        parts += ["float-head"] * self.float_head + ["reduce-range"] * self.reduce_range
        return " ".join(parts + [f"float-layers {','.join(map(str, self.float_layers))}"] * bool(self.float_layers))


def calibration_images(files: Sequence[Path], imgsz: int, n: int) -> list[np.ndarray]:
    """``n`` images spread evenly over ``files``, each ``(1, 3, imgsz, imgsz)`` float32 in [0, 1], letterboxed."""
    from ..yolo.data import letterbox, load_image

    if not files:
        raise OrchestratorError("calibration: the train split has no images")
    pick = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
    out = []
    for i in pick:
        im, _, _ = load_image(files[i], imgsz)
        im, _, _ = letterbox(im, imgsz, auto=False, scaleup=False)
        chw = im.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB
        out.append(np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0)
    return out


def decode_nodes(model: Any, head_convs: bool = False) -> list[str]:
    """Names of the nodes after the graph's last convolutions (no Conv downstream): the Detect decode.

    With ``head_convs`` also those last convolutions themselves (the Detect layer's output convs).
    """
    g = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_conv: dict[int, bool] = {}

    def reaches_conv(node: Any) -> bool:  # memoised DFS over consumers (the graph is a DAG)
        key = id(node)
        if key not in feeds_conv:
            feeds_conv[key] = False
            feeds_conv[key] = any(
                c.op_type == "Conv" or reaches_conv(c) for o in node.output for c in consumers.get(o, ())
            )
        return feeds_conv[key]

    return [n.name for n in g.node if (head_convs or n.op_type != "Conv") and not reaches_conv(n)]


@contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizer logs advice at WARNING on every call and its histogram calibrators print progress on
    stdout (where `--json` promises one object): neither reaches the user."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class _Reader:
    """ORT's CalibrationDataReader protocol over a list of ready inputs, read ``batch`` at a time.

    ORT's strided calibration asks for ``len`` and ``set_range``, and refuses a length its stride does not
    divide: the length is rounded up to whole batches and the last range is clipped to the images there are.
    """

    def __init__(self, name: str, images: list[np.ndarray], batch: int):
        self._name, self._images = name, images
        self._len = -(-len(images) // batch) * batch
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return self._len

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._images[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}


def layer_nodes(model: Any, layers: Sequence[int]) -> list[str]:
    """Names of the nodes of the model's ``model.N`` layers for N in ``layers`` (the export names them by module)."""
    marks = tuple(f"/model.{i}/" for i in layers)
    return [n.name for n in model.graph.node if marks and any(m in n.name for m in marks)]


def quantize_int8(
    onnx_model: bytes,
    images: list[np.ndarray],
    options: Int8Options = Int8Options(),
    *,
    ranges: Path | None = None,
) -> bytes:
    """The int8 QDQ model of ``onnx_model`` (float, dynamic axes) calibrated on ``images``, shaped by ``options``.

    ``ranges``: a calibration cache file (ORT 1.2x and newer): written by the first call, read by later ones with
    the same model, images and method, so forms that differ in anything but the ranges skip calibrating.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if not images and not (ranges and ranges.is_file()):
        raise OrchestratorError("calibration: no images")
    known = set(QDQRegistry) | set(QLinearOpsRegistry)
    unknown = [op for op in options.op_types or () if op not in known]
    if unknown:
        raise OrchestratorError(f"int8 op types: ONNX Runtime cannot quantize {', '.join(unknown)}")
    model = onnx.load_from_string(onnx_model)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"node_{i}"  # exclusion works by name
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[options.method]
    activation = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[options.activations]
    with tempfile.TemporaryDirectory(prefix="int8-") as d, _quiet():
        out = Path(d) / "int8.onnx"
        quantize_static(
            model,
            out,
            _Reader(model.graph.input[0].name, images, options.batch),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(options.op_types) if options.op_types else None,
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=decode_nodes(model, options.float_head) + layer_nodes(model, options.float_layers),
            calibrate_method=method,
            extra_options={"CalibStridedMinMax": options.batch},  # despite its name: every calibrator, in passes
            **({"calibration_cache_path": ranges} if ranges is not None else {}),
        )
        return out.read_bytes()
