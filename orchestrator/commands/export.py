"""``orchestrator export``: write a checkpoint as ONNX (BN-fused, decoded output ``output0``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..vocabulary import (
    ACTIVATION_TYPES,
    CALIBRATION_METHODS,
    DEFAULT_ACTIVATIONS,
    DEFAULT_FLOAT_LAYERS,
    DEFAULT_IMAGES,
    DEFAULT_METHOD,
    DEFAULT_PER_CHANNEL,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (float, or int8 with --int8)",
        description="Export a (pruned) checkpoint: BN-fused, eval mode, input 'images' (B, 3, H, W) in [0, 1], "
        "output 'output0' (B, anchors, 5 + nc) decoded xywh pixels, objectness, class scores. The outputs are "
        "compared with PyTorch's in ONNX Runtime. With --int8: ONNX Runtime static post-training quantization "
        "(QDQ, int8 weights, uint8 activations calibrated on images of the data yaml's train split, the Detect "
        "decode kept float; by default per-tensor weights, percentile calibration and the first layer float, "
        "bench/bench_int8.py's most accurate fast form, docs/deploy.md); that file has dynamic axes, so "
        "`orchestrator val` scores it on the same rect batches as the checkpoint.",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels (default 640)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 12 or newer (default 17)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size axes")
    p.add_argument(
        "--out",
        default=None,
        help="output file (default: the weights path with .onnx, or .int8.onnx; for a name, ./NAME.onnx)",
    )
    p.add_argument("--int8", action="store_true", help="int8 post-training quantization (needs --data)")
    p.add_argument("--data", default=None, help="--int8: data yaml whose train images calibrate the ranges")
    p.add_argument(
        "--calibration", choices=CALIBRATION_METHODS, default=DEFAULT_METHOD, help=f"--int8 (default {DEFAULT_METHOD})"
    )
    p.add_argument(
        "--calib-images", type=int, default=DEFAULT_IMAGES, help=f"--int8: train images (default {DEFAULT_IMAGES})"
    )
    p.add_argument("--float-head", action="store_true", help="--int8: keep the Detect output convs float too")
    p.add_argument(
        "--float-layers",
        type=int,
        nargs="*",
        default=list(DEFAULT_FLOAT_LAYERS),
        metavar="N",
        help="--int8: model.N layers kept float (default: "
        f"{' '.join(map(str, DEFAULT_FLOAT_LAYERS)) or 'none'}; the flag alone: every layer int8)",
    )
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PER_CHANNEL,
        help=f"--int8: one weight scale per output channel, else per tensor (default {DEFAULT_PER_CHANNEL})",
    )
    p.add_argument(
        "--activations",
        choices=ACTIVATION_TYPES,
        default=DEFAULT_ACTIVATIONS,
        help=f"--int8: uint8 (u8) or int8 (s8) activations (default {DEFAULT_ACTIVATIONS})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..assets import resolve_weights
    from ..deploy.export import export_onnx
    from ..errors import OrchestratorError
    from ..yolo.checkpoint import load_model

    if args.batch < 1:
        raise OrchestratorError(f"--batch: expected >= 1, got {args.batch}")
    if args.int8 or args.data:
        return _run_int8(args)
    weights = resolve_weights(args.weights)
    out = _out(args, weights, ".onnx")
    model = load_model(weights)
    r = export_onnx(model, out, imgsz=args.imgsz, batch=args.batch, opset=args.opset, dynamic=args.dynamic)
    info = {
        "out": str(r.path),
        "format": args.format,
        "input": list(r.input_shape),
        "output0": list(r.output_shape),
        "opset": r.opset,
        "max_abs_diff": r.max_abs_diff,
    }
    if args.json:
        print(json.dumps(info))
    else:
        diff = "not checked (onnxruntime missing)" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}"
        print(
            f"{r.path}: input {tuple(r.input_shape)} -> output0 {tuple(r.output_shape)}, opset {r.opset}; "
            f"max |onnxruntime - PyTorch| = {diff}"
        )
    return 0


def _out(args: argparse.Namespace, weights: Path, suffix: str) -> Path:
    """--out, else beside a checkpoint named by path; a name found in $ORCHESTRATOR_ASSETS or the cache exports
    to the working folder."""
    if args.out:
        return Path(args.out)
    local = Path(args.weights).expanduser().is_file()
    name = f"{weights.stem}-{args.imgsz}{suffix}"  # the input size is part of what the file is
    return weights.with_name(name) if local else Path.cwd() / name


def _run_int8(args: argparse.Namespace) -> int:
    """Quantize: export float ONNX in memory, calibrate on train images, write the int8 QDQ file."""
    from ..assets import resolve_data, resolve_weights
    from ..deploy.export import onnx_bytes
    from ..deploy.quantize import Int8Options, calibration_images, quantize_int8
    from ..errors import OrchestratorError
    from ..yolo.checkpoint import load_model
    from ..yolo.data import load_data_config

    if not args.int8:
        raise OrchestratorError("--data is only used with --int8 (its train images calibrate the quantization)")
    if not args.data:
        raise OrchestratorError("--int8: needs --data (a data yaml whose train images calibrate the quantization)")
    if args.imgsz < 32 or args.imgsz % 32:
        raise OrchestratorError(f"--imgsz: expected a positive multiple of 32, got {args.imgsz}")
    if args.opset < 13:
        raise OrchestratorError(f"--opset: int8 per-channel quantization needs 13 or newer, got {args.opset}")
    options = Int8Options(
        args.calibration,
        args.calib_images,
        args.float_head,
        activations=args.activations,
        per_channel=args.per_channel,
        float_layers=tuple(args.float_layers),
    )
    weights = resolve_weights(args.weights)
    out = _out(args, weights, ".int8.onnx")
    cfg = load_data_config(resolve_data(args.data), need=("train",))
    model = load_model(weights)
    if model.nc != cfg.nc:
        raise OrchestratorError(f"{weights}: the model predicts {model.nc} classes but {cfg.file} has nc={cfg.nc}")
    images = calibration_images(cfg.train, args.imgsz, options.images)
    q = quantize_int8(onnx_bytes(model, imgsz=args.imgsz, opset=args.opset), images, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(q)
    info = {
        "out": str(out),
        "format": "onnx",
        "int8": True,
        "size_mb": len(q) / 1e6,
        "calibration": options.method,
        "calib_images": len(images),
        "float_head": options.float_head,
        "float_layers": list(options.float_layers),
        "per_channel": options.per_channel,
        "activations": options.activations,
        "opset": args.opset,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"{out}: int8 (QDQ, {options.label}), {len(q) / 1e6:.3f} MB; calibrated with {options.method} on "
            f"{len(images)} train images of {cfg.file.name} at {args.imgsz}"
        )
    return 0
