"""``orchestrator val``: COCO mAP of a checkpoint on a data yaml's ``val`` split (rich table or one JSON object)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import OrchestratorError
from .arg_checks import check_imgsz
from .cache_arg import add_cache_args, cache_settings


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "val",
        help="COCO mAP of a YOLOv5 checkpoint or ONNX file on a dataset",
        description="Validate a YOLOv5 checkpoint (official .pt or ours) or an ONNX export of one (float or int8, "
        "run in ONNX Runtime) on the val split of a YOLOv5 data yaml: rect batches (square ones for a fixed-shape "
        "ONNX file), NMS (conf 0.001, IoU 0.6, 300 per image), pycocotools mAP.",
    )
    p.add_argument("--weights", required=True, help="checkpoint (official YOLOv5 .pt or ours) or .onnx file")
    p.add_argument("--data", required=True, help="YOLOv5 data yaml (path, val, names)")
    p.add_argument("--imgsz", type=int, default=640, help="long side of the inference images in pixels (default 640)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p.add_argument("--per-class", action="store_true", help="also report AP@[.5:.95] per class")
    p.add_argument("--yes", action="store_true", help="allow downloading a large dataset (COCO: ~20 GB)")
    p.add_argument("--workers", type=int, default=0, help="loader processes for batches read from disk (default 0)")
    add_cache_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.imgsz < 32 or args.imgsz % 32:
        raise OrchestratorError(f"--imgsz: expected a positive multiple of 32, got {args.imgsz}")
    check_imgsz(args.imgsz)
    if args.batch < 1:
        raise OrchestratorError(f"--batch: expected >= 1, got {args.batch}")
    if args.workers < 0:
        raise OrchestratorError(f"--workers: expected >= 0, got {args.workers}")
    cache = cache_settings(args)
    from ..assets import resolve_data, resolve_weights

    weights = resolve_weights(args.weights)
    onnx = None
    if weights.suffix.lower() == ".onnx":
        if args.half:
            raise OrchestratorError("--half: an ONNX file runs at the precision it was exported in (drop --half)")
        from ..deploy.onnx_model import inspect_onnx

        onnx = inspect_onnx(weights)  # a hostile file is refused here, before torch and the dataset are loaded
    # Heavy imports here, not at module top: every command module is imported to build the parser.
    from ..errors import DataError
    from ..yolo.checkpoint import load_model
    from ..yolo.data import load_data_config
    from ..yolo.val import ValSet, val_stride, validate
    from .device_arg import parse_device

    device = parse_device(args.device, args.half)
    data = resolve_data(args.data, allow_large=args.yes)
    cfg = load_data_config(data, need=("val",))
    if onnx is not None:
        from ..deploy.onnx_val import validate_onnx_file

        _refuse_as_check_does(cfg, None)
        v = validate_onnx_file(onnx, cfg, imgsz=args.imgsz, batch=args.batch, device=device, per_class=args.per_class)
        if v.result.problems:
            _warn(v.result.problems)
        return _report(args, v.result, {**v.result.speed_ms, "load": v.load_ms}, weights, cfg, device)
    model = load_model(weights)
    if model.nc != cfg.nc:
        raise OrchestratorError(f"{weights}: the model predicts {model.nc} classes but {cfg.file} has nc={cfg.nc}")
    _refuse_as_check_does(cfg, model.nc)
    stride = val_stride(model)
    if args.imgsz % stride:
        raise OrchestratorError(f"--imgsz: must be a multiple of the model stride {stride}, got {args.imgsz}")
    t = time.perf_counter()
    try:
        vs = ValSet(cfg, args.imgsz, args.batch, stride=stride, cache=cache, workers=args.workers)
    except DataError as e:
        raise DataError(f"{cfg.file}: val: {e}") from None
    if vs.problems:
        _warn(vs.problems)
    load_ms = 1000 * (time.perf_counter() - t) / len(vs)
    r = validate(model, vs, device=device, half=args.half, per_class=args.per_class)
    speed = {**r.speed_ms, "load": load_ms}  # decode + letterbox, done here once rather than in validate
    return _report(args, r, speed, weights, cfg, device)


def _report(args: argparse.Namespace, r, speed: dict[str, float], weights: Path, cfg, device) -> int:
    if args.json:
        out = {
            "weights": str(weights),
            "data": str(cfg.file),
            "imgsz": args.imgsz,
            "batch": args.batch,
            "device": str(device),
            "map50_95": r.map50_95,
            "map50": r.map50,
            "precision": r.precision,
            "recall": r.recall,
            "images": r.images,
            "instances": r.instances,
            "speed_ms": speed,
            "problems": list(r.problems),
        }
        if r.per_class is not None:
            out["per_class"] = r.per_class
        print(json.dumps(out))
    else:
        _print_table(r, speed, weights, cfg.file, args.imgsz)
    return 0


def _refuse_as_check_does(cfg, nc: int | None) -> None:
    """The val split read through ``check``'s own scan: what ``check`` refuses (a class id outside the data yaml's
    classes, no usable image) is refused here in the same words, not warned about with exit 0. What it only warns
    about, it says here too: the skipped images through :func:`_warn` (naming up to five), the rest (a label file
    two images share, a split without one labelled object) in check's words."""
    from ..study.checks import scan_dataset

    for warning in scan_dataset(cfg, nc, splits=("val",), count_line=False):
        print(f"warning: {warning}", file=sys.stderr)


def _warn(problems: tuple[str, ...]) -> None:
    from ..yolo.labels import SHARED_LABEL

    problems = tuple(p for p in problems if f": {SHARED_LABEL} " not in p)  # said by _refuse_as_check_does
    if not problems:
        return
    shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
    print(f"warning: {len(problems)} data problem(s), images skipped or rows dropped: {shown}", file=sys.stderr)


def _print_table(r, speed: dict[str, float], weights: Path, data: Path, imgsz: int) -> None:
    from rich.table import Table

    from .console import stdout_console

    console = stdout_console()
    t = Table(title=f"{weights.name} on {data.name} (val, imgsz {imgsz})")
    for col in ("Images", "Instances", "P", "R", "mAP50", "mAP50-95"):
        t.add_column(col, justify="right")
    t.add_row(
        str(r.images),
        str(r.instances),
        f"{r.precision:.3f}",
        f"{r.recall:.3f}",
        f"{r.map50:.4f}",
        f"{r.map50_95:.4f}",
    )
    console.print(t)
    if r.per_class:
        pc = Table(title="AP@[.5:.95] per class")
        pc.add_column("class")
        pc.add_column("AP", justify="right")
        for name, ap in sorted(r.per_class.items(), key=lambda kv: -kv[1]):
            pc.add_row(name, f"{ap:.4f}")
        console.print(pc)
    s = speed
    console.print(
        f"Speed per image: {s['load']:.1f} ms load, {s['preprocess']:.1f} ms preprocess, "
        f"{s['inference']:.1f} ms inference, {s['nms']:.1f} ms NMS, {s['eval']:.1f} ms COCOeval"
    )
