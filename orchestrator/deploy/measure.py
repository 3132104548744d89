"""What a pruned model really costs: parameters, nonzeros, file bytes, FLOPs and latency on a device.

* ``size_mb``: bytes of the model saved in the official layout (fp16 module), in MB of 10**6 bytes;
  ``size_zip_mb``: the same file zip-deflated, which is where unstructured zeros show up.
* ``gflops``: ``torch.utils.flop_counter`` FLOPs of one image at ``imgsz`` x ``imgsz`` on the BN-fused
  model, / 1e9. A multiply-add counts as 2 FLOPs (so it matches the "GFLOPs" YOLOv5 prints: 2 x MACs).
* latency: the BN-fused eval model (what deployment runs), warm-up runs, then the median of ``runs``
  timed forward passes at batch 1 and at batch ``batch`` (ms per batch). On GPU, CUDA events around
  each run, synchronised; on CPU, ``time.perf_counter`` with a fixed thread count.
* ``speedup``: against ``baseline`` measured in the same call, interleaved run by run (baseline,
  model, baseline, model ...): the median of the per-pair time ratios, so machine noise common to a
  pair cancels. ``latency_ms``/``speedup`` are *eager* PyTorch figures.
* ``ort_latency_ms`` / ``ort_speedup``: the same, in ONNX Runtime (what a deployment runs): the model
  exported to ONNX in memory (or the deployable ONNX given, e.g. int8), batch 1, fixed threads, against the
  baseline's ONNX (or a session of it the caller keeps open), interleaved in the same way.

Unstructured zeros leave a dense conv as slow as before: PyTorch's kernels multiply zeros too.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import OrchestratorError
from ..prune.unstructured import deployable, without_masks
from ..yolo.device import resolve_device as resolve_device  # one resolver; callers import it from here too
from ..yolo.flops import count_gflops
from .timing import Timing, time_interleaved

MB = 1e6


@dataclass(frozen=True)
class Measurements:
    """Costs of one model; latencies in ms (``latency_ms_batch`` is per batch of ``batch`` images)."""

    params: int
    nonzero_params: int
    size_mb: float
    size_zip_mb: float
    gflops: float
    latency_ms: float
    latency_ms_batch: float
    speedup: float | None
    device: str
    imgsz: int
    batch: int
    speedup_batch: float | None = None
    baseline_latency_ms: float | None = None
    runs: int = 0
    threads: int | None = None
    ort_latency_ms: float | None = None
    ort_speedup: float | None = None
    ort_baseline_latency_ms: float | None = None
    ort_provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_nonzero(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) of the unfused model, masks applied."""
    net = without_masks(model)
    total = sum(p.numel() for p in net.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in net.parameters())
    return total, nonzero


def file_sizes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the official-layout fp16 checkpoint, bytes of that file zip-deflated).

    Without the prune-mask record (a training aid, not needed to run the model): a model with masks weighs
    what the same weights loaded from a file weigh, and what the unpruned baseline is compared on.
    """
    import tempfile

    from ..yolo.official_layout import save_official

    with tempfile.TemporaryDirectory() as d:
        raw = save_official(model, Path(d) / "m.pt", record_masks=False).read_bytes()
    return len(raw), zipped_size(raw)


def zipped_size(raw: bytes, name: str = "m.pt") -> int:
    """Bytes of ``raw`` stored zip-deflated (where zeros and low-entropy int8 weights show up)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, raw)
    return buf.getbuffer().nbytes


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count for the duration (restored after)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    if device.type == "cuda":

        def run(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)

        return run

    def run_cpu(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    return run_cpu


def time_models(
    net: nn.Module,
    baseline: nn.Module | None,
    x: torch.Tensor,
    *,
    runs: int,
    warmup: int,
    device: torch.device,
    x0: torch.Tensor | None = None,
) -> Timing:
    """Warm up both, then time them alternately run by run (:func:`time_interleaved`); the baseline runs on ``x0``
    when given (another input size), else on ``x``."""
    timer = _timer(device)
    x0 = x if x0 is None else x0
    with torch.inference_mode():
        if device.type == "cuda":  # warm-up launches are async: let them finish before timing starts
            for _ in range(warmup):
                net(x)
                if baseline is not None:
                    baseline(x0)
            torch.cuda.synchronize(device)
            warmup = 0
        return time_interleaved(
            lambda: net(x),
            (lambda: baseline(x0)) if baseline is not None else None,
            runs=runs,
            warmup=warmup,
            timer=timer,
        )


def measure(
    model: nn.Module,
    *,
    imgsz: int = 640,
    batch: int = 1,
    device: str | torch.device = "cpu",
    baseline: nn.Module | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    half: bool = False,
    ort: bool = True,
    onnx: bytes | None = None,
    ort_baseline: Any | None = None,
    baseline_imgsz: int | None = None,
) -> Measurements:
    """Parameters, nonzeros, file bytes, GFLOPs and latency of ``model`` (not changed; copies are measured).

    ``runs``/``warmup`` default to 50/10 on GPU and 20/3 on CPU. ``half`` times fp16 (GPU only). With
    ``ort`` also the ONNX Runtime latency: of ``onnx`` when given (the file a trial deploys), else of the
    model exported here; against ``ort_baseline`` (an open session) when given, else ``baseline`` exported.
    The baseline is timed at ``baseline_imgsz`` when given (a study's base size; ``imgsz`` otherwise).
    """
    dev = resolve_device(device)
    if imgsz <= 0 or imgsz % 32:
        raise OrchestratorError(f"imgsz must be a positive multiple of 32 (the largest stride), got {imgsz}")
    if batch < 1:
        raise OrchestratorError(f"batch must be at least 1, got {batch}")
    runs = runs if runs is not None else (50 if dev.type == "cuda" else 20)
    warmup = warmup if warmup is not None else (10 if dev.type == "cuda" else 3)
    params, nonzero = count_nonzero(model)
    size, size_zip = file_sizes(model)
    net = deployable(model).to(dev)
    base = deployable(baseline).to(dev) if baseline is not None else None
    if half:
        if dev.type != "cuda":
            raise OrchestratorError("half precision timing needs a CUDA device")
        net.half()
        base = base.half() if base is not None else None
    gflops = count_gflops(net, imgsz, dev) if not half else count_gflops(deployable(model), imgsz)
    ch = model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3
    dtype = torch.float16 if half else torch.float32
    with cpu_threads(threads if dev.type == "cpu" else None):
        size0 = baseline_imgsz or imgsz
        x1 = torch.rand(1, ch, imgsz, imgsz, device=dev, dtype=dtype)
        x0 = None if size0 == imgsz else torch.rand(1, ch, size0, size0, device=dev, dtype=dtype)
        t1 = time_models(net, base, x1, runs=runs, warmup=warmup, device=dev, x0=x0)
        if batch > 1:
            xb = torch.rand(batch, ch, imgsz, imgsz, device=dev, dtype=dtype)
            xb0 = None if size0 == imgsz else torch.rand(batch, ch, size0, size0, device=dev, dtype=dtype)
            tb = time_models(net, base, xb, runs=runs, warmup=warmup, device=dev, x0=xb0)
        else:
            tb = t1
        used_threads = torch.get_num_threads() if dev.type == "cpu" else None
    ot = _ort_timing(model, baseline, onnx, ort_baseline, (imgsz, size0), dev, runs, warmup, threads) if ort else None
    return Measurements(
        params=params,
        nonzero_params=nonzero,
        size_mb=size / MB,
        size_zip_mb=size_zip / MB,
        gflops=gflops,
        latency_ms=t1.ms,
        latency_ms_batch=tb.ms,
        speedup=t1.speedup,
        device=str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        imgsz=imgsz,
        batch=batch,
        speedup_batch=tb.speedup,
        baseline_latency_ms=t1.baseline_ms,
        runs=runs,
        threads=used_threads,
        ort_latency_ms=ot.ms if ot else None,
        ort_speedup=ot.speedup if ot else None,
        ort_baseline_latency_ms=ot.baseline_ms if ot else None,
        ort_provider=ot.provider if ot else None,
    )


ORT_MIN_RUNS = 100


def _ort_timing(
    model: nn.Module,
    baseline: nn.Module | None,
    onnx: bytes | None,
    ort_baseline: Any | None,
    sizes: tuple[int, int],
    dev: torch.device,
    runs: int,
    warmup: int,
    threads: int | None,
):
    """ONNX Runtime timing of the model's ONNX against the baseline's, interleaved (see the module doc);
    ``sizes``: the model's input size and the baseline's."""
    from .export import onnx_bytes
    from .ort_runtime import open_session, time_sessions

    imgsz, size0 = sizes
    n = threads if dev.type == "cpu" else None
    runs = max(runs, ORT_MIN_RUNS)  # a run is a few ms: more pairs steady the median ratio for little time
    sess = open_session(onnx if onnx is not None else onnx_bytes(model, imgsz=imgsz), device=dev, threads=n)
    base = ort_baseline
    if base is None and baseline is not None:
        base = open_session(onnx_bytes(baseline, imgsz=size0), device=dev, threads=n)
    return time_sessions(sess, base, imgsz, runs=runs, warmup=warmup, threads=n, baseline_imgsz=size0)


@dataclass(frozen=True)
class OnnxMeasurements:
    """Costs of an ONNX file: its bytes (raw and zip-deflated), parameters and ONNX Runtime latency."""

    params: int
    size_mb: float
    size_zip_mb: float
    int8: bool
    ort_latency_ms: float
    ort_speedup: float | None
    ort_baseline_latency_ms: float | None
    ort_provider: str
    device: str
    imgsz: int
    runs: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_onnx(
    path: str | Path,
    *,
    imgsz: int = 640,
    device: str | torch.device = "cpu",
    baseline: bytes | str | Path | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    baseline_imgsz: int | None = None,
) -> OnnxMeasurements:
    """Bytes and ONNX Runtime latency (batch 1) of an ONNX detector, against ``baseline`` ONNX if given (fed
    ``baseline_imgsz`` pixels when given: the speed-up of a smaller input against the size it replaces)."""
    from .onnx_model import inspect_onnx
    from .ort_runtime import open_session, time_sessions

    dev = resolve_device(device)
    det = inspect_onnx(path)
    if det.batch not in (None, 1):
        raise OrchestratorError(f"{det.path}: exported for batch {det.batch}; latency is timed at batch 1")
    if det.static_size is not None and det.static_size != imgsz:
        raise OrchestratorError(
            f"{det.path}: exported for {det.static_size}x{det.static_size} images: pass --imgsz {det.static_size}"
        )
    runs = runs if runs is not None else (50 if dev.type == "cuda" else 20)
    warmup = warmup if warmup is not None else (10 if dev.type == "cuda" else 3)
    n = threads if dev.type == "cpu" else None
    sess = open_session(det.path, device=dev, threads=n)
    base = open_session(baseline, device=dev, threads=n) if baseline is not None else None
    t = time_sessions(sess, base, imgsz, runs=runs, warmup=warmup, threads=n, baseline_imgsz=baseline_imgsz)
    raw = det.path.read_bytes()
    return OnnxMeasurements(
        params=det.params,
        size_mb=len(raw) / MB,
        size_zip_mb=zipped_size(raw, det.path.name) / MB,
        int8=det.int8,
        ort_latency_ms=t.ms,
        ort_speedup=t.speedup,
        ort_baseline_latency_ms=t.baseline_ms,
        ort_provider=t.provider,
        device=str(dev),
        imgsz=imgsz,
        runs=runs,
        threads=t.threads,
    )
