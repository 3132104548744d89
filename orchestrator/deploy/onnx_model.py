"""An ONNX file checked to be a YOLOv5 detector before anything runs it (val, measure, export --int8).

What we require is what the official export writes: one input ``(batch, 3, height, width)`` and a first
output ``(batch, anchors, 5 + classes)`` of decoded boxes, objectness and class scores. Dimensions may be
symbolic (``--dynamic``); fixed ones are reported so callers letterbox to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .rows import FREE_SIDE, max_rows

_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})
MAX_NC = 100_000


@dataclass(frozen=True)
class OnnxDetector:
    """What an ONNX YOLOv5 file expects and returns; ``None`` for a dimension the file leaves free."""

    path: Path
    input_name: str
    output_name: str
    nc: int
    batch: int | None
    height: int | None
    width: int | None
    int8: bool  # has quantize/dequantize (or integer) nodes
    params: int  # elements of all initializers (weights, biases, quantization scales)
    names: tuple[str, ...] = ()  # class names when the file's metadata carries them (official export does)

    @property
    def static_size(self) -> int | None:
        """The square input size a fixed-shape file was exported at (None when dynamic or not square)."""
        return self.height if self.height is not None and self.height == self.width else None


def inspect_onnx(path: str | Path) -> OnnxDetector:
    """Read ``path`` with onnx and check its signature; anything else is one CheckpointError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError (and others) on a file that is not ONNX
        raise CheckpointError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    g = m.graph
    init = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in init]
    if len(inputs) != 1 or not g.output:
        raise CheckpointError(
            f"{path}: not a YOLOv5 detector: expected one image input and an output, "
            f"got {len(inputs)} input(s) and {len(g.output)} output(s)"
        )
    params = _check_initializers(path, g)  # before anything runs the graph
    ins, outs = _dims(inputs[0]), _dims(g.output[0])
    if len(ins) == 4 and len(outs) == 3:
        _check_rows(path, g.output[0].name, ins, outs[1] if outs[1] is not None else _inferred_rows(m))
    if len(ins) == 4 and ins[1] in (3, None) and len(outs) == 3 and outs[2] is None:
        outs = _run_shape(path, ins)  # a dynamic export that left its class dimension unnamed: ask the runtime
    if len(ins) != 4 or ins[1] not in (3, None):
        raise CheckpointError(
            f"{path}: not a YOLOv5 detector: input {inputs[0].name!r} has shape {_show(ins)}, "
            "expected (batch, 3, height, width)"
        )
    if len(outs) != 3 or outs[2] is None or outs[2] < 6:
        raise CheckpointError(
            f"{path}: not a YOLOv5 detector: output {g.output[0].name!r} has shape {_show(outs)}, "
            "expected (batch, anchors, 5 + classes)"
        )
    _check_rows(path, g.output[0].name, ins, outs[1])
    if outs[2] - 5 > MAX_NC:
        raise CheckpointError(f"{path}: not a YOLOv5 detector: {outs[2] - 5:,} classes (at most {MAX_NC:,})")
    return OnnxDetector(
        path=path,
        input_name=inputs[0].name,
        output_name=g.output[0].name,
        nc=outs[2] - 5,
        batch=ins[0],
        height=ins[2],
        width=ins[3],
        int8=any(n.op_type in _QUANT_OPS for n in g.node),
        params=params,
        names=_names(m),
    )


def _check_rows(path: Path, name: str, ins: list[int | None], rows: int | None) -> None:
    if rows is not None and rows > max_rows(ins[2], ins[3]):
        raise CheckpointError(
            f"{path}: not a YOLOv5 detector: output {name!r} has {rows:,} rows, more than the "
            f"{max_rows(ins[2], ins[3]):,} a {ins[2] or FREE_SIDE}x{ins[3] or FREE_SIDE} input can give"
        )


def _inferred_rows(m) -> int | None:
    """The output's row count as ONNX shape inference (with constant propagation) finds it, when it can.

    A file may leave the row dimension symbolic and still fix it in the graph (a constant expanded to two
    million rows): inference sees that without running anything; a real dynamic export stays unknown.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        dims = _dims(inferred.graph.output[0])
    except Exception:  # inference is a best effort: the runtime's first run is checked as well
        return None
    return dims[1] if len(dims) == 3 else None


def _check_initializers(path: Path, g) -> int:
    """Elements of all initializers, counted from their dims; each must hold the data it claims.

    Nothing is materialised: an initializer that claims 2**29 floats and stores none would otherwise be
    allocated just to be counted. External data must be a file inside the model's folder (ONNX Runtime
    refuses the rest too, with a traceback; here the answer is one line).
    """
    from onnx import TensorProto, helper

    itemsizes = {
        TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8,
        TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
        TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
        TensorProto.BOOL: 1,
    }  # fmt: skip
    folder = path.resolve().parent
    total = 0
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        if n < 0:
            raise CheckpointError(f"{path}: initializer {t.name!r} has a negative dimension {list(t.dims)}")
        total += n
        if t.data_location == TensorProto.EXTERNAL or t.external_data:
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            target = (folder / loc).resolve()
            if not loc or Path(loc).is_absolute() or not target.is_relative_to(folder) or not target.is_file():
                raise CheckpointError(
                    f"{path}: initializer {t.name!r} keeps its data in {loc!r}, which is not a file "
                    "inside the model's folder"
                )
            continue
        size = itemsizes.get(t.data_type)
        if size is None:
            continue  # strings, packed 4-bit and exotic floats: left to the runtime
        field = helper.tensor_dtype_to_field(t.data_type)
        stored = len(t.raw_data) // size if t.raw_data else len(getattr(t, field))
        if stored != n:
            raise CheckpointError(
                f"{path}: initializer {t.name!r} claims {n:,} elements of shape {list(t.dims)} "
                f"but stores {stored:,} (a damaged or crafted file)"
            )
    return total


def _dims(value_info) -> list[int | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _run_shape(path: Path, ins: list[int | None]) -> list[int | None]:
    """The output shape of one grey image through ONNX Runtime (fixed input dims kept, free ones 64)."""
    import numpy as np

    from .ort_runtime import open_session

    try:
        s = open_session(path, threads=1)
        x = np.full([ins[0] or 1, 3, ins[2] or 64, ins[3] or 64], 0.5, dtype=np.float32)
        return list(s.run(None, {s.get_inputs()[0].name: x})[0].shape)
    except CheckpointError:  # open_session's own line already names the file
        raise
    except Exception as e:  # onnxruntime raises its own exception types for graphs it cannot run
        raise CheckpointError(f"{path}: ONNX Runtime cannot run it ({str(e).splitlines()[0][:200]})") from None


def _show(dims: list[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")" if dims else "unknown"


def _names(m) -> tuple[str, ...]:
    """Class names from the official export's metadata (``names`` = a Python dict literal), else ()."""
    import ast

    for p in m.metadata_props:
        if p.key == "names":
            try:
                v = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return ()
            if isinstance(v, dict):
                return tuple(str(v[k]) for k in sorted(v))
            if isinstance(v, list):
                return tuple(str(x) for x in v)
    return ()
