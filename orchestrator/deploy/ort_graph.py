"""What ONNX Runtime actually runs for a (quantized) ONNX model: the op types after its graph optimizations,
which of them run in int8, and where the time goes.

A QDQ file only says where int8 is allowed: ORT fuses ``DequantizeLinear -> op -> QuantizeLinear`` into an
int8 kernel (``QLinearConv``, ``QLinearMul``...) only where it has one, and leaves the rest float between
convert nodes. Two views, both on the session as :func:`~.ort_runtime.open_session` makes it (all
optimizations, fixed threads):

* :func:`optimized_ops` reads the graph ORT writes after optimizing (``optimized_model_filepath``): op types
  and counts, no image needed. Layout-transformed float convs keep the type ``Conv`` (domain nchwc).
* :func:`profile_nodes` runs the model with ORT's profiler after warm-up runs: each node's kernel time and
  precision (the element type of its first input, int8 or float); :func:`profile_ops` sums them by op type.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ort_runtime import open_session, run_checked

CONVERT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
INT8_TYPES = frozenset({"uint8", "int8"})


def is_int8_kernel(op_type: str) -> bool:
    """An ORT kernel that computes on int8 tensors by its name alone (``QLinear*``, ``*Integer``, ``QGemm``)."""
    return op_type.startswith("QLinear") or op_type.endswith("Integer") or op_type in ("QGemm", "NhwcMaxPool")


@dataclass(frozen=True)
class OpSplit:
    """Op type counts of an optimized graph: int8 kernels, convert nodes (Q/DQ) and everything else."""

    int8: Counter[str]
    convert: Counter[str]
    other: Counter[str]

    @property
    def float_convs(self) -> int:
        """Convolutions left float (``Conv``/``FusedConv`` in any domain)."""
        return self.other["Conv"] + self.other["FusedConv"]


def optimized_ops(model: bytes, threads: int = 1) -> OpSplit:
    """Op types of ``model`` as ORT runs it on this machine (its optimized graph), split by kind."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="ort-graph-") as d:
        path = Path(d) / "optimized.onnx"

        def save(so: Any) -> None:
            so.optimized_model_filepath = str(path)

        open_session(model, threads=threads, configure=save)
        ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    int8 = Counter({k: v for k, v in ops.items() if is_int8_kernel(k)})
    convert = Counter({k: v for k, v in ops.items() if k in CONVERT_OPS})
    return OpSplit(int8, convert, ops - int8 - convert)


@dataclass(frozen=True)
class NodeTime:
    """One node of the run graph: its name (the source node's for a fused one), op type, precision, ms per run."""

    name: str
    op: str
    precision: str  # "int8" (an int8 kernel or first input int8/uint8), "convert" (Q/DQ), "float", or "other"
    ms: float


@dataclass(frozen=True)
class OpTime:
    """One op type at one precision: nodes per run and its share of the summed kernel time."""

    op: str
    precision: str
    nodes: int
    ms: float  # per run (the nodes' medians summed)
    share: float


def _precision(op: str, args: dict[str, Any]) -> str:
    if op in CONVERT_OPS:
        return "convert"
    if is_int8_kernel(op):  # QLinearConcat's first input is a float scale
        return "int8"
    first = next(iter(args.get("input_type_shape", [{}])[0]), "")
    return "int8" if first in INT8_TYPES else "float" if first in ("float", "float16") else "other"


def profile_nodes(model: bytes, imgsz: int, *, threads: int = 1, runs: int = 10, warmup: int = 3) -> list[NodeTime]:
    """Median kernel ms of each node of ``model`` on one random image, over ``runs`` runs after ``warmup``."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as d:

        def profiled(so: Any) -> None:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(d) / "profile")

        s = open_session(model, threads=threads, configure=profiled)
        feed = {s.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            run_checked("the profiled model", lambda: s.run(None, feed))
        events = json.loads(Path(s.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    after = starts[warmup] if len(starts) > warmup else 0  # the warm-up runs' nodes are not counted
    durations: dict[str, list[float]] = {}
    kind: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or e["ts"] < after or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"].removesuffix("_kernel_time")
        op = e["args"].get("op_name", "?")
        durations.setdefault(name, []).append(e["dur"] / 1e3)
        kind[name] = (op, _precision(op, e["args"]))
    # the median run of each node: a run preempted by another process inflates one sample, not the figure
    return [NodeTime(name, *kind[name], statistics.median(ds)) for name, ds in durations.items()]


def op_times(nodes: list[NodeTime]) -> list[OpTime]:
    """Nodes summed by op type and precision, costliest first; shares of the nodes' total."""
    total: dict[tuple[str, str], float] = {}
    count: Counter[tuple[str, str]] = Counter()
    for n in nodes:
        total[(n.op, n.precision)] = total.get((n.op, n.precision), 0.0) + n.ms
        count[(n.op, n.precision)] += 1
    whole = sum(total.values()) or 1.0
    rows = [OpTime(op, p, count[(op, p)], ms, ms / whole) for (op, p), ms in total.items()]
    return sorted(rows, key=lambda r: -r.ms)


def profile_ops(model: bytes, imgsz: int, *, threads: int = 1, runs: int = 10, warmup: int = 3) -> list[OpTime]:
    """Kernel time of ``model`` per op type and precision over ``runs`` runs after ``warmup``, largest first."""
    return op_times(profile_nodes(model, imgsz, threads=threads, runs=runs, warmup=warmup))


def precision_shares(rows: list[OpTime]) -> dict[str, float]:
    """The share of kernel time at each precision (int8, convert, float, other)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r.precision] = out.get(r.precision, 0.0) + r.share
    return out
