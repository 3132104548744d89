"""Hostile files for the resource tests, each a few KB built on the spot: ONNX graphs, checkpoints, images.

Each one once made a command allocate without bound (gigabytes from a kilobyte file) or end in a traceback;
see tests/scenarios/test_hostile_files.py.
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper


def _yolo_signature(nodes, out_rows: int, inits=(), imgsz: int = 64, nc: int = 80) -> onnx.ModelProto:
    """A graph with YOLOv5's signature: ``images (1, 3, imgsz, imgsz)`` in, ``output0 (1, rows, 5 + nc)`` out."""
    g = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, out_rows, 5 + nc])],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _expand_to(rows: int, nc: int = 80, value: float = 0.5) -> list:
    """Nodes making ``output0`` a constant ``value`` expanded to ``(1, rows, 5 + nc)`` (the input is ignored)."""
    return [
        helper.make_node("Constant", [], ["half"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value])),
        helper.make_node(
            "Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [3], [1, rows, 5 + nc])
        ),
        helper.make_node("Expand", ["half", "shape"], ["output0"]),
    ]


def onnx_two_million_rows(path: Path) -> Path:
    """YOLOv5's signature, an output of 2,000,000 rows of 85 (680 MB per image); once 23 GB in ``val``."""
    onnx.save(_yolo_signature(_expand_to(2_000_000), 2_000_000), str(path))
    return path


def onnx_symbolic_rows(path: Path, rows: int = 2_000_000) -> Path:
    """``rows`` constant rows behind a symbolic row dimension: shape inference can tell without running it."""
    m = _yolo_signature(_expand_to(rows), 1)
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "rows"
    onnx.save(m, str(path))
    return path


def onnx_constant_output(path: Path, value: float, rows: int = 252) -> Path:
    """YOLOv5's signature at 64x64 (252 rows, what a detector gives there), every output value ``value``
    (+inf or NaN: once 0.12 mAP50 in ``val``)."""
    onnx.save(_yolo_signature(_expand_to(rows, value=value), rows), str(path))
    return path


def truncated_jpeg(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """The first ``keep`` of JPEG ``src``'s bytes: a copy cut short, which libjpeg decodes grey below the cut."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def onnx_rows_from_pixels(path: Path, per_unit: float = 16.0) -> Path:
    """Rows that depend on the pixels (``per_unit`` per unit of the image's sum, about 90,000 for a 64x64
    photo): no inference can tell, only the first run."""

    def const(name: str, kind: int, dims: list[int], values: list) -> object:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", kind, dims, values))

    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        const("per_unit", TensorProto.FLOAT, [], [per_unit]),
        helper.make_node("Mul", ["total", "per_unit"], ["rows_f"]),
        helper.make_node("Cast", ["rows_f"], ["rows_i"], to=TensorProto.INT64),
        const("one_dim", TensorProto.INT64, [1], [1]),
        helper.make_node("Reshape", ["rows_i", "one_dim"], ["rows"]),
        const("batch", TensorProto.INT64, [1], [1]),
        const("width", TensorProto.INT64, [1], [85]),
        helper.make_node("Concat", ["batch", "rows", "width"], ["shape"], axis=0),
        const("half", TensorProto.FLOAT, [1], [0.5]),
        helper.make_node("Expand", ["half", "shape"], ["output0"]),
    ]
    m = _yolo_signature(nodes, 1)
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "rows"
    onnx.save(m, str(path))
    return path


def onnx_external_data(path: Path, location: str) -> Path:
    """An initializer whose data lives in ``location`` (outside the folder: /etc/passwd, ../../..)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    nodes = [*_expand_to(10), helper.make_node("Identity", ["w"], ["w_out"])]
    onnx.save(_yolo_signature(nodes, 10, inits=[w]), str(path))
    return path


def onnx_initializer_without_data(path: Path) -> Path:
    """An initializer that claims 2**29 floats (2 GiB) and stores none."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 29])
    nodes = [*_expand_to(10), helper.make_node("Identity", ["w"], ["w_out"])]
    onnx.save(_yolo_signature(nodes, 10, inits=[w]), str(path))
    return path


def onnx_constant_of_shape(path: Path) -> Path:
    """A ConstantOfShape of 2**40 floats feeding the output: 4 TiB asked of the runtime at the first run."""
    shape = helper.make_tensor("s", TensorProto.INT64, [1], [1 << 40])
    nodes = [
        helper.make_node("Constant", [], ["big_shape"], value=shape),
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        *_expand_to(10),
    ]
    nodes[-1].input[0] = "total"
    onnx.save(_yolo_signature(nodes, 10), str(path))
    return path


def checkpoint_with_yaml(src: Path, dst: Path, edit: Callable[[dict], object]) -> Path:
    """A copy of one of our checkpoints (``src``, yaml + state dict) with ``edit`` applied to its layer table."""
    obj = torch.load(src, map_location="cpu", weights_only=False)
    obj = dict(obj, yaml=copy.deepcopy(obj["yaml"]))
    edit(obj["yaml"])
    torch.save(obj, dst)
    return dst


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A grey ``side`` x ``side`` PNG of zeros: about 1 MB on disk at 20000, 1.2 GB decoded (3 channels)."""
    row = b"\x00" + bytes(side)  # filter byte 0, then one grey byte per pixel
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
