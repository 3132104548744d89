"""ONNX Runtime as a deployment runs it: sessions with fixed threads, interleaved latency, a forward for val.

A session runs on the CUDA execution provider when the device is a GPU and onnxruntime-gpu is installed,
else on the CPU provider with ``threads`` intra-op threads and one inter-op thread (sequential execution),
so a latency is reproducible and comparable with the eager figure taken at the same thread count.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, OrchestratorError
from .rows import max_rows as detector_rows
from .timing import time_interleaved


def onnxruntime() -> Any:
    """The onnxruntime module (a core dependency; the hint covers a broken install)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise OrchestratorError(f"onnxruntime is not importable ({e}): pip install onnxruntime") from None
    return ort


def providers_for(device: str | torch.device) -> list[Any]:
    """CUDA execution provider first on a GPU device when this onnxruntime has it; the CPU provider always."""
    dev = torch.device(device)
    if dev.type == "cuda" and "CUDAExecutionProvider" in onnxruntime().get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(
    model: bytes | str | Path,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    configure: Callable[[Any], None] | None = None,
) -> Any:
    """An ``InferenceSession`` on ``model`` (bytes or a file) with all graph optimisations and fixed threads.

    ``configure`` may set more on the ``SessionOptions`` first (profiling, saving the optimized graph: ort_graph.py).
    """
    ort = onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between ops: a spinning pool steals the cores of the next session run in this process, so
    # a trial timed interleaved with its baseline read 1.6-2x slower than either alone (bench/bench_ort_sessions.py).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # fatal only: ORT warns about every initializer it folds, and every error it logs also comes back as an
    # exception, which the callers turn into one line naming the file (a second, C++-flavoured copy on stderr
    # would break the one-line promise)
    so.log_severity_level = 4
    if configure is not None:
        configure(so)
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=providers_for(device))
    except Exception as e:  # ORT's own exception types (Fail, InvalidGraph, RuntimeException...): one line
        raise CheckpointError(f"{_name(model)}: ONNX Runtime cannot load it ({_first(e)})") from None


def _name(model: bytes | str | Path) -> str:
    return "the in-memory ONNX model" if isinstance(model, bytes) else str(model)


def _first(e: BaseException) -> str:
    """An ORT message on one line, without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix nor C++ source places."""
    s = " ".join(str(e).split()) or type(e).__name__
    s = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", s)
    s = re.sub(r"/onnxruntime_src/\S+:\d+ [^)]*\)\s*", "", s)
    return s if len(s) <= 240 else s[:237] + "..."


def run_checked(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` (runs of a session) with the runtime's failures turned into one line naming ``what``.

    A graph can load and still fail when it runs: a ConstantOfShape of 2**40 elements, a shape that does
    not add up. ORT raises its own exception types with a C++ message; ``MemoryError`` is left to the CLI.
    """
    try:
        return fn()
    except (OrchestratorError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise CheckpointError(f"{what}: ONNX Runtime failed running it ({_first(e)})") from None


@dataclass(frozen=True)
class OrtTiming:
    """Median ms per image of the model (and its baseline), the median per-pair speed-up, where it ran."""

    ms: float
    baseline_ms: float | None
    speedup: float | None
    provider: str
    threads: int


def time_sessions(
    session: Any,
    baseline: Any | None,
    imgsz: int,
    *,
    runs: int,
    warmup: int,
    threads: int | None = None,
    baseline_imgsz: int | None = None,
) -> OrtTiming:
    """Both sessions on one random image, warmed up, then timed alternately run by run. The baseline sees
    ``baseline_imgsz`` pixels when given: a model shipped at a smaller input is worth its speed-up against the
    unpruned model at the size the user would otherwise run."""
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, imgsz, imgsz), dtype=np.float32)
    size0 = baseline_imgsz or imgsz
    x0 = x if size0 == imgsz else rng.random((1, 3, size0, size0), dtype=np.float32)

    def runner(s: Any, image: np.ndarray) -> Callable[[], Any]:
        feed = {s.get_inputs()[0].name: image}
        return lambda: s.run(None, feed)

    def timer(fn: Callable[[], Any]) -> float:  # run() returns host arrays: the work is done when it returns
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    what = ", ".join(dict.fromkeys(_session_name(s) for s in (session, baseline) if s is not None))
    t = run_checked(
        what,
        lambda: time_interleaved(
            runner(session, x),
            runner(baseline, x0) if baseline is not None else None,
            runs=runs,
            warmup=warmup,
            timer=timer,
        ),
    )
    return OrtTiming(t.ms, t.baseline_ms, t.speedup, session.get_providers()[0], threads or torch.get_num_threads())


def _session_name(session: Any) -> str:
    return getattr(session, "_model_path", None) or "the in-memory ONNX model"


def session_forward(
    session: Any, max_batch: int | None = None, max_rows: Callable[[int, int], int] | None = detector_rows
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (B, 3, H, W) float in [0, 1] -> output0`` through ``session``, in chunks of a fixed ``max_batch``.

    A run that fails is one line naming the file; an output with more rows than ``max_rows(height, width)``
    (by default what a YOLOv5 detector can give) is refused before NMS pays for it.
    """
    name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    what = _session_name(session)

    def run(chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        if max_batch and n < max_batch:  # a file with a fixed batch size: pad the last chunk, drop the padding
            chunk = np.concatenate([chunk, np.zeros((max_batch - n, *chunk.shape[1:]), chunk.dtype)])
        y = run_checked(what, lambda: session.run([out_name], {name: chunk})[0][:n])
        if max_rows is not None and (y.ndim != 3 or y.shape[1] > max_rows(*chunk.shape[2:])):
            raise CheckpointError(
                f"{what}: not a YOLOv5 detector: output of shape {tuple(y.shape)} for a "
                f"{chunk.shape[2]}x{chunk.shape[3]} input (at most {max_rows(*chunk.shape[2:]):,} rows)"
            )
        return y

    def forward(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().float().numpy()
        step = max_batch or len(arr)
        return torch.from_numpy(np.concatenate([run(arr[i : i + step]) for i in range(0, len(arr), step)]))

    return forward
