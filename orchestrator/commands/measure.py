"""``orchestrator measure``: parameters, nonzeros, file bytes, GFLOPs and latency of a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import OrchestratorError
from .arg_checks import check_imgsz


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "measure",
        help="parameters, bytes, GFLOPs and latency of a checkpoint or ONNX file (and speed-up against a baseline)",
        description="Measure a checkpoint: parameters and nonzeros, fp16 official-layout file bytes and their "
        "zip-deflated size, GFLOPs (FlopCounterMode; a multiply-add counts 2), and the median latency of the "
        "BN-fused model after warm-up, in eager PyTorch and in ONNX Runtime (the model exported to ONNX; CPU "
        "execution provider with --threads, CUDA's with onnxruntime-gpu on a GPU). With --baseline both are "
        "timed in this process, interleaved run by run, and the speed-up is the median of the per-pair ratios. "
        "An .onnx file (float or int8) is timed in ONNX Runtime only.",
    )
    p.add_argument("--weights", required=True, help="checkpoint (official YOLOv5 .pt or ours) or .onnx file")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels (default 640)")
    p.add_argument("--batch", type=int, default=1, help="also time this batch size (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or N (default cpu)")
    p.add_argument("--baseline", metavar="W0", help="unpruned checkpoint (or .onnx) to compute the speed-up against")
    p.add_argument(
        "--baseline-imgsz",
        type=int,
        default=None,
        metavar="N",
        help="time the baseline at this input size (default --imgsz): the speed-up of a model shipped at a "
        "smaller size against the size it replaces",
    )
    p.add_argument("--runs", type=int, default=None, help="timed runs (default 20 on CPU, 50 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (default 3 on CPU, 10 on GPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads while timing (default: torch's)")
    p.add_argument("--half", action="store_true", help="time in float16 (CUDA only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..assets import resolve_weights

    for name in ("runs", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise OrchestratorError(f"--{name}: expected >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        raise OrchestratorError(f"--warmup: expected >= 0, got {args.warmup}")
    check_imgsz(args.imgsz)
    if args.baseline_imgsz is not None:
        if not args.baseline:
            raise OrchestratorError("--baseline-imgsz: needs --baseline (the model it times)")
        if args.baseline_imgsz < 32 or args.baseline_imgsz % 32:
            raise OrchestratorError(f"--baseline-imgsz: expected a positive multiple of 32, got {args.baseline_imgsz}")
        check_imgsz(args.baseline_imgsz, "--baseline-imgsz")
    from ..deploy.measure import measure
    from ..yolo.checkpoint import load_model

    weights = resolve_weights(args.weights)
    if weights.suffix.lower() == ".onnx":
        return _run_onnx(args, weights)
    model = load_model(weights)
    baseline = load_model(resolve_weights(args.baseline)) if args.baseline else None
    m = measure(
        model,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        baseline=baseline,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        half=args.half,
        baseline_imgsz=args.baseline_imgsz,
    )
    out = m.to_dict()
    if baseline is not None:
        out["baseline_imgsz"] = args.baseline_imgsz or args.imgsz
    if baseline is None:
        for k in ("speedup", "speedup_batch", "baseline_latency_ms", "ort_speedup", "ort_baseline_latency_ms"):
            out.pop(k)
    if args.json:
        print(json.dumps({"weights": str(weights), **out}))
        return 0
    _print(out, weights)
    return 0


def _run_onnx(args: argparse.Namespace, weights: Path) -> int:
    """An ONNX file: its bytes and ONNX Runtime latency (against the baseline's ONNX)."""
    from ..assets import resolve_weights
    from ..deploy.measure import measure_onnx

    if args.half or args.batch != 1:
        raise OrchestratorError(f"{weights.name}: an ONNX file is timed at batch 1 as exported: drop --half/--batch")
    baseline = None
    if args.baseline:
        baseline = resolve_weights(args.baseline)
        if baseline.suffix.lower() != ".onnx":
            from ..deploy.export import onnx_bytes
            from ..yolo.checkpoint import load_model

            baseline = onnx_bytes(load_model(baseline), imgsz=args.baseline_imgsz or args.imgsz)
    m = measure_onnx(
        weights,
        imgsz=args.imgsz,
        device=args.device,
        baseline=baseline,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        baseline_imgsz=args.baseline_imgsz,
    )
    out = m.to_dict()
    if baseline is not None:
        out["baseline_imgsz"] = args.baseline_imgsz or args.imgsz
    if baseline is None:
        out.pop("ort_speedup")
        out.pop("ort_baseline_latency_ms")
    if args.json:
        print(json.dumps({"weights": str(weights), **out}))
        return 0
    from rich.table import Table

    from .console import stdout_console

    d = out
    t = Table(title=f"{weights.name} on {d['device']} (imgsz {d['imgsz']})", show_header=False, title_justify="left")
    t.add_row("params", f"{d['params']:,} ({'int8' if d['int8'] else 'float'})")
    t.add_row("file (ONNX)", f"{d['size_mb']:.3f} MB ({d['size_zip_mb']:.3f} MB zip-deflated)")
    _ort_rows(t, d)
    stdout_console().print(t)
    return 0


def _ort_rows(t, d: dict) -> None:
    t.add_row(
        "ONNX Runtime latency batch 1",
        f"{d['ort_latency_ms']:.2f} ms (median of {d['runs']}, {d['ort_provider']}, {d['threads']} thread(s))",
    )
    if "ort_speedup" in d and d["ort_speedup"] is not None:
        base = f"baseline {d['ort_baseline_latency_ms']:.2f} ms{_at(d)}"
        t.add_row("ONNX Runtime speed-up", f"{d['ort_speedup']:.3f}x ({base})")


def _print(d: dict, weights: Path) -> None:
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"{weights.name} on {d['device']} (imgsz {d['imgsz']})", show_header=False, title_justify="left")
    t.add_row("params", f"{d['params']:,} ({d['nonzero_params']:,} nonzero)")
    t.add_row("file (fp16, official layout)", f"{d['size_mb']:.3f} MB ({d['size_zip_mb']:.3f} MB zip-deflated)")
    t.add_row("GFLOPs (multiply-add = 2)", f"{d['gflops']:.3f}")
    t.add_row("eager PyTorch latency batch 1", f"{d['latency_ms']:.2f} ms (median of {d['runs']})")
    if d["batch"] > 1:
        t.add_row(f"latency batch {d['batch']}", f"{d['latency_ms_batch']:.2f} ms per batch")
    if "speedup" in d:
        base = f"baseline {d['baseline_latency_ms']:.2f} ms{_at(d)}"
        t.add_row("eager speed-up vs baseline", f"{d['speedup']:.3f}x ({base})")
        if d["batch"] > 1:
            t.add_row(f"speed-up batch {d['batch']}", f"{d['speedup_batch']:.3f}x")
    if d.get("ort_latency_ms") is not None:
        _ort_rows(t, {**d, "threads": d["threads"] or "-"})
    stdout_console().print(t)


def _at(d: dict) -> str:
    """The baseline's size when it is not the model's."""
    size0 = d.get("baseline_imgsz")
    return f" at {size0}" if size0 and size0 != d["imgsz"] else ""
