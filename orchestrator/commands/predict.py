"""``orchestrator predict``: a checkpoint's or ONNX file's detections drawn on images (and COCO JSON records)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..errors import DataError, OrchestratorError
from .arg_checks import check_imgsz

SPLITS = ("train", "val", "test")
_YAML_SOURCE = re.compile(r"^(?P<yaml>.+\.ya?ml)(?::(?P<split>[^:/\\]+))?$", re.IGNORECASE)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="draw a model's detections on images (checkpoint or ONNX file), optionally as COCO JSON",
        description="Run a YOLOv5 checkpoint (official .pt or ours) or an ONNX export of one (float or int8, in "
        "ONNX Runtime) on images and write each with its boxes, class names and confidences drawn into --out. "
        "Images are letterboxed, batched and filtered by NMS exactly as `orchestrator val` does; with val's "
        "thresholds (--conf 0.001 --iou 0.6) the JSON records score val's mAP.",
    )
    p.add_argument("--weights", required=True, help="checkpoint (official YOLOv5 .pt or ours) or .onnx file")
    p.add_argument(
        "--source",
        required=True,
        help="an image, a folder (searched recursively), a quoted glob ('photos/*.jpg'), or a data yaml's split "
        "(coco128.yaml:val; a yaml alone means its val split)",
    )
    p.add_argument("--out", default="runs/predict", help="folder for the annotated images (default runs/predict)")
    p.add_argument("--json", action="store_true", help="also write OUT/predictions.json: COCO result records")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25; val uses 0.001)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45; val uses 0.6)")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default 300, as val)")
    p.add_argument("--imgsz", type=int, default=640, help="long side of the inference images in pixels (default 640)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32, as val)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--data",
        default=None,
        help="data yaml whose class names label the boxes of an ONNX file that carries none "
        "(default: the source's yaml, else COCO's names for an 80-class model)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    # Heavy imports here, not at module top: every command module is imported to build the parser.
    from ..assets import resolve_weights
    from ..deploy.predict import class_names, open_detector
    from .device_arg import parse_device

    device = parse_device(args.device)
    weights = resolve_weights(args.weights)
    images, source_names, source_yaml = _images(args.source)
    for problem in images.problems:  # one line each; the rest go on
        print(f"warning: {problem}", file=sys.stderr)
    if not images.files:
        raise DataError(f"{args.source}: no usable image ({len(images.problems)} unreadable or refused)")
    detector = open_detector(weights, imgsz=args.imgsz, device=device)
    if source_yaml is not None and detector.nc != len(source_names):
        raise OrchestratorError(
            f"{weights}: the model predicts {detector.nc} classes but {source_yaml} has nc={len(source_names)}"
        )
    names = class_names(detector.nc, detector.names, source_names, *_fallback_names(args.data))
    return _write(args, detector, images, names)


def _check_args(args: argparse.Namespace) -> None:
    if args.imgsz < 32 or args.imgsz % 32:
        raise OrchestratorError(f"--imgsz: expected a positive multiple of 32, got {args.imgsz}")
    check_imgsz(args.imgsz)
    if args.batch < 1:
        raise OrchestratorError(f"--batch: expected >= 1, got {args.batch}")
    if not 0 <= args.conf <= 1:
        raise OrchestratorError(f"--conf: expected a confidence in [0, 1], got {args.conf}")
    if not 0 < args.iou <= 1:
        raise OrchestratorError(f"--iou: expected an IoU in (0, 1], got {args.iou}")
    if args.max_det < 1:
        raise OrchestratorError(f"--max-det: expected >= 1, got {args.max_det}")


def _images(source: str):
    """(the usable images with every problem found, the source yaml's class names, the yaml) for ``--source``."""
    from ..deploy.predict import list_images, read_images

    m = _YAML_SOURCE.match(source)
    if m is None:
        return read_images(list_images(source)), (), None
    from ..assets import resolve_data
    from ..yolo.data import load_data_config
    from ..yolo.labels import scan_labels

    split = m["split"] or "val"
    if split not in SPLITS:
        raise DataError(f"{source}: unknown split {split!r} (expected {', '.join(SPLITS)})")
    cfg = load_data_config(resolve_data(m["yaml"]), need=(split,))
    # the label scan val runs: the same images kept (one with a bad label line is skipped by both)
    return scan_labels(getattr(cfg, split), cfg.nc), cfg.names, cfg.file


def _fallback_names(data: str | None) -> list[tuple[str, ...]]:
    """Class names from ``--data``, then COCO's (the shipped coco.yaml) for a model with 80 classes."""
    from ..assets.datasets import SHIPPED
    from ..yolo.data import load_data_config

    out = []
    if data is not None:
        from ..assets import resolve_data

        out.append(load_data_config(resolve_data(data), need=()).names)
    out.append(load_data_config(SHIPPED / "coco.yaml", need=()).names)
    return out


def _write(args: argparse.Namespace, detector, images, names: tuple[str, ...]) -> int:
    from ..deploy.predict import annotated, coco_records, output_name, predict_images

    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OrchestratorError(f"--out: cannot create {out} ({e.strerror or e}): choose another folder") from None
    order = {f: i for i, f in enumerate(images.files)}
    records: list[list[dict]] = [[] for _ in images.files]
    taken: set[str] = set()
    written = boxes = 0
    stream = predict_images(
        detector, images, imgsz=args.imgsz, batch=args.batch, conf=args.conf, iou=args.iou, max_det=args.max_det
    )
    for item in _with_progress(stream, len(images.files)):
        records[order[item.file]] = coco_records(item)
        boxes += len(item.dets)
        try:
            annotated(item, names).save(out / output_name(item.file, taken))
        except DataError as e:  # gone or replaced since it was read: one line, the rest go on
            print(f"warning: {e}; skipped", file=sys.stderr)
            continue
        except OSError as e:
            raise OrchestratorError(f"--out: cannot write into {out} ({e.strerror or e})") from None
        written += 1
    line = f"{written} annotated images, {boxes} boxes (conf >= {args.conf:g}, IoU {args.iou:g}) in {out}"
    if args.json:
        path = out / "predictions.json"
        path.write_text(json.dumps([r for rs in records for r in rs]))
        line += f"; COCO records: {path}"
    print(line)
    return 0


def _with_progress(items, total: int):
    """``items`` with a bar on a terminal's stderr for more than one image; as they are in a pipe or a log."""
    if total < 2 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("predict", total=total)
        for item in items:
            yield item
            bar.advance(task)
