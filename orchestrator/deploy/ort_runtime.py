"""ONNX Runtime as a deployment runs it: sessions with fixed threads, interleaved latency, a forward for val.

A session runs on the CUDA execution provider when the device is a GPU and onnxruntime-gpu is installed,
else on the CPU provider with ``threads`` intra-op threads and one inter-op thread (sequential execution),
so a latency is reproducible and comparable with the eager figure taken at the same thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OrchestratorError
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


def open_session(model: bytes | str | Path, *, device: str | torch.device = "cpu", threads: int | None = None) -> Any:
    """An ``InferenceSession`` on ``model`` (bytes or a file) with all graph optimisations and fixed threads."""
    ort = onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between ops: a spinning pool steals the cores of the next session run in this process, so
    # a trial timed interleaved with its baseline read 1.6-2x slower than either alone (bench/bench_ort_sessions.py).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: ORT warns about every initializer it folds
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=providers_for(device))


@dataclass(frozen=True)
class OrtTiming:
    """Median ms per image of the model (and its baseline), the median per-pair speed-up, where it ran."""

    ms: float
    baseline_ms: float | None
    speedup: float | None
    provider: str
    threads: int


def time_sessions(
    session: Any, baseline: Any | None, imgsz: int, *, runs: int, warmup: int, threads: int | None = None
) -> OrtTiming:
    """Both sessions on one random ``imgsz`` image, warmed up, then timed alternately run by run."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)

    def runner(s: Any) -> Callable[[], Any]:
        feed = {s.get_inputs()[0].name: x}
        return lambda: s.run(None, feed)

    def timer(fn: Callable[[], Any]) -> float:  # run() returns host arrays: the work is done when it returns
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    t = time_interleaved(
        runner(session), runner(baseline) if baseline is not None else None, runs=runs, warmup=warmup, timer=timer
    )
    return OrtTiming(t.ms, t.baseline_ms, t.speedup, session.get_providers()[0], threads or torch.get_num_threads())


def session_forward(session: Any, max_batch: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (B, 3, H, W) float in [0, 1] -> output0`` through ``session``, in chunks of a fixed ``max_batch``."""
    name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name

    def run(chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        if max_batch and n < max_batch:  # a file with a fixed batch size: pad the last chunk, drop the padding
            chunk = np.concatenate([chunk, np.zeros((max_batch - n, *chunk.shape[1:]), chunk.dtype)])
        return session.run([out_name], {name: chunk})[0][:n]

    def forward(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().float().numpy()
        step = max_batch or len(arr)
        return torch.from_numpy(np.concatenate([run(arr[i : i + step]) for i in range(0, len(arr), step)]))

    return forward
