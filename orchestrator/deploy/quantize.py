"""int8 post-training quantization of a YOLOv5 ONNX model with ONNX Runtime (static, calibrated, QDQ).

* QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops; ORT fuses them into int8 kernels),
  weights int8 per output channel, activations uint8 with ranges from calibration images.
* Calibration images come from the **train** split (never the images the mAP is measured on), each
  resized and letterboxed as val does it (long side ``imgsz``, grey padding, no upscaling) into one square
  ``imgsz`` shape, batch 1 (ORT's histogram calibrators need every input the same shape).
* The Detect head's decode (sigmoid, grid and anchor arithmetic, the final concat) stays float: its output
  mixes pixel coordinates (0..imgsz) and probabilities (0..1) in one tensor, and one uint8 scale for both
  wipes out the scores. Only the nodes after the last convolutions are kept float; every conv is int8.
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
from ..vocabulary import CALIBRATION_METHODS, DEFAULT_IMAGES, DEFAULT_METHOD


@dataclass(frozen=True)
class Int8Options:
    """How to calibrate: the method (ORT's calibrator) and how many train images (spread over the split)."""

    method: str = DEFAULT_METHOD
    images: int = DEFAULT_IMAGES
    float_head: bool = False  # keep the Detect layer's output convs float too

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise OrchestratorError(
                f"calibration method: expected one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}"
            )
        if self.images < 1:
            raise OrchestratorError(f"calibration images: expected >= 1, got {self.images}")


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
    """ORT's CalibrationDataReader protocol over a list of ready inputs."""

    def __init__(self, name: str, images: list[np.ndarray]):
        self._it = iter([{name: x} for x in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(onnx_model: bytes, images: list[np.ndarray], options: Int8Options = Int8Options()) -> bytes:
    """The int8 QDQ model of ``onnx_model`` (float, dynamic axes) calibrated on ``images``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load_from_string(onnx_model)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"node_{i}"  # exclusion works by name
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[options.method]
    with tempfile.TemporaryDirectory(prefix="int8-") as d, _quiet():
        out = Path(d) / "int8.onnx"
        quantize_static(
            model,
            out,
            _Reader(model.graph.input[0].name, images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=decode_nodes(model, options.float_head),
            calibrate_method=method,
        )
        return out.read_bytes()
