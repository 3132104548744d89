"""Export a (pruned) model to ONNX: BN-fused, eval mode, one output ``output0`` = the decoded predictions.

``output0`` is ``(batch, anchors, 5 + nc)``: xywh in input pixels, objectness, class scores, the same
tensor the official export writes, so NMS code written for official YOLOv5 ONNX files applies unchanged.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import OrchestratorError
from ..prune.unstructured import deployable

OPSET = 17


class _Decoded(nn.Module):
    """Eval forward returning only the decoded tensor (ONNX graphs want plain tensor outputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


@dataclass(frozen=True)
class OnnxExport:
    """Where the file went and what it expects/returns."""

    path: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    opset: int
    max_abs_diff: float | None = None  # vs PyTorch, when onnxruntime checked it


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    imgsz: int = 640,
    batch: int = 1,
    opset: int = OPSET,
    dynamic: bool = False,
    check: bool = True,
) -> OnnxExport:
    """Write ``model`` as ONNX; with ``check`` (and onnxruntime installed) compare outputs with PyTorch."""
    if opset < 12:
        raise OrchestratorError(f"opset must be at least 12, got {opset}")
    if imgsz <= 0 or imgsz % 32:
        raise OrchestratorError(f"imgsz must be a positive multiple of 32 (the largest stride), got {imgsz}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net, x = _exportable(model, imgsz, batch)
    with torch.no_grad():
        y = net(x)
    path.write_bytes(_export(net, x, opset, dynamic, int(y.shape[-1])))
    diff = None
    if check:
        diff = onnx_max_abs_diff(path, x, y)
    return OnnxExport(path, tuple(x.shape), tuple(y.shape), opset, diff)


def onnx_bytes(model: nn.Module, *, imgsz: int = 640, dynamic: bool = True, opset: int = OPSET) -> bytes:
    """The ONNX file of ``model`` (as :func:`export_onnx` writes it) in memory: nothing touches the disk."""
    net, x = _exportable(model, imgsz, 1)
    with torch.no_grad():
        y = net(x)
    return _export(net, x, opset, dynamic, int(y.shape[-1]))


def _exportable(model: nn.Module, imgsz: int, batch: int) -> tuple[nn.Module, torch.Tensor]:
    ch = model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3
    x = torch.rand(batch, ch, imgsz, imgsz, generator=torch.Generator().manual_seed(0))  # same check every run
    return _Decoded(deployable(model)).eval(), x


def _export(net: nn.Module, x: torch.Tensor, opset: int, dynamic: bool, width: int) -> bytes:
    """The ONNX bytes; ``output0``'s last dimension (5 + classes) is written down even with dynamic axes."""
    import onnx

    buf = io.BytesIO()
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is legacy; it is the one that needs
        warnings.simplefilter("ignore", DeprecationWarning)  # no onnxscript, and it handles this graph fully
        torch.onnx.export(
            net,
            (x,),
            buf,
            input_names=["images"],
            output_names=["output0"],
            opset_version=opset,
            dynamic_axes=axes if dynamic else None,
            do_constant_folding=True,
            dynamo=False,
        )
    m = onnx.load_from_string(buf.getvalue())
    last = m.graph.output[0].type.tensor_type.shape.dim[-1]
    if not last.HasField("dim_value"):  # the exporter names every dimension of a dynamic output
        last.Clear()
        last.dim_value = width
    # the size it was made for (a study may ship 256 px for speed): a file that says so is deployed at it
    onnx.helper.set_model_props(m, {"imgsz": str(int(x.shape[-1]))})
    return m.SerializeToString()


def onnx_max_abs_diff(path: str | Path, x: torch.Tensor, expected: torch.Tensor) -> float | None:
    """Largest |onnxruntime - PyTorch| on ``x``; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(["output0"], {"images": x.numpy()})
    return float((torch.from_numpy(out) - expected).abs().max())
