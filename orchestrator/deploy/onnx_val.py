"""COCO mAP of an ONNX file (float or int8) through ONNX Runtime, scored by our validator.

Same letterbox, NMS and pycocotools as :func:`orchestrator.yolo.val.validate`; only the forward pass
differs. A file with dynamic height/width gets the rect batches PyTorch val uses (so a float export
scores what its checkpoint scores); a fixed-shape file gets square ``imgsz`` letterboxes, fed in chunks
of its fixed batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, DataError, OrchestratorError
from ..yolo.data import DataConfig
from ..yolo.val import ValResult, ValSet, validate_forward
from .onnx_model import OnnxDetector, inspect_onnx
from .ort_runtime import open_session, session_forward


@dataclass(frozen=True)
class OnnxValidation:
    """The scores, the file as inspected, and the ms per image spent loading and letterboxing the data."""

    result: ValResult
    model: OnnxDetector
    load_ms: float


def validate_onnx_file(
    path: str | Path | OnnxDetector,
    data: DataConfig,
    *,
    imgsz: int,
    batch: int,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    per_class: bool = False,
) -> OnnxValidation:
    """Check that ``path`` is a YOLOv5 detector for ``data``'s classes and score it on the val split (a file the
    caller already inspected is not read twice)."""
    det = path if isinstance(path, OnnxDetector) else inspect_onnx(path)
    if det.nc != data.nc:
        raise OrchestratorError(f"{det.path}: the model predicts {det.nc} classes but {data.file} has nc={data.nc}")
    check_input_size(det, imgsz)
    t = time.perf_counter()
    try:
        vs = ValSet(data, imgsz, batch, rect=det.static_size is None)
    except DataError as e:
        raise DataError(f"{data.file}: val: {e}") from None
    load_ms = 1000 * (time.perf_counter() - t) / len(vs)
    session = open_session(det.path, device=device, threads=threads)
    forward = finite_outputs(session_forward(session, det.batch), det.path)
    r = validate_forward(forward, vs, names=det.names or None, per_class=per_class)
    return OnnxValidation(r, det, load_ms)


def check_input_size(det: OnnxDetector, imgsz: int) -> None:
    """Refuse ``imgsz`` for a file with a fixed input unless it is that square size (dynamic files take any)."""
    if det.height is not None or det.width is not None:
        if det.static_size is None:
            raise OrchestratorError(
                f"{det.path}: fixed input {det.height}x{det.width} is not square; export it square or --dynamic"
            )
        if det.static_size != imgsz:
            raise OrchestratorError(
                f"{det.path}: exported for {det.static_size}x{det.static_size} images: pass --imgsz {det.static_size}"
            )


def finite_outputs(forward: Callable[[torch.Tensor], torch.Tensor], what: object) -> Callable:
    """``forward``, refusing in one line an output with no finite number in it.

    A YOLOv5 head gives bounded boxes and sigmoid scores, so an output of only +inf or NaN is a broken file,
    not a bad model: NMS would keep some of its boxes anyway (issue 27: 0.12 mAP50 from an all-+inf output).
    """

    def checked(x: torch.Tensor) -> torch.Tensor:
        y = forward(x)
        if len(y) and not bool(torch.isfinite(y).any()):
            found = (("NaN", torch.isnan(y)), ("+inf", torch.isposinf(y)), ("-inf", torch.isneginf(y)))
            kinds = [name for name, where in found if bool(where.any())]
            raise CheckpointError(
                f"{what}: every output value is {' or '.join(kinds)} (for a {x.shape[2]}x{x.shape[3]} input): "
                "not a working detector"
            )
        return y

    return checked


def validate_onnx_bytes(onnx: bytes, vs: ValSet, *, device: str | torch.device = "cpu", threads: int | None = None):
    """Scores of an in-memory ONNX model (a trial's deployable file) on an already prepared ValSet."""
    session = open_session(onnx, device=device, threads=threads)
    return validate_forward(session_forward(session), vs)
