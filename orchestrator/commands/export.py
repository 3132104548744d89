"""``orchestrator export``: write a checkpoint as ONNX (BN-fused, decoded output ``output0``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description="Export a (pruned) checkpoint: BN-fused, eval mode, input 'images' (B, 3, H, W) in [0, 1], "
        "output 'output0' (B, anchors, 5 + nc) decoded xywh pixels, objectness, class scores. With onnxruntime "
        "installed the outputs are compared with PyTorch's.",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels (default 640)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 12 or newer (default 17)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size axes")
    p.add_argument(
        "--out", default=None, help="output file (default: the weights path with .onnx; for a name, ./NAME.onnx)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..assets import resolve_weights
    from ..errors import OrchestratorError
    from ..export import export_onnx
    from ..yolo.checkpoint import load_model

    if args.batch < 1:
        raise OrchestratorError(f"--batch: expected >= 1, got {args.batch}")
    weights = resolve_weights(args.weights)
    # beside a checkpoint named by path; a name found in $ORCHESTRATOR_ASSETS or the cache exports to the working folder
    local = Path(args.weights).expanduser().is_file()
    out = Path(args.out) if args.out else weights.with_suffix(".onnx") if local else Path.cwd() / f"{weights.stem}.onnx"
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
