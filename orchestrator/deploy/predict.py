"""Detections of a checkpoint or an ONNX file on any images, through the letterbox, forward and NMS ``val`` scores.

Why through :class:`~orchestrator.yolo.val.ValSet`: predicting on a data yaml's val split then gives exactly the
boxes ``val`` scores (same rect batches, same decode), so a user's pictures are read by the code whose mAP the
study reports, and the two cannot drift apart. Images without labels are a ValSet whose ground truth is empty.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import DataError, OrchestratorError
from ..yolo.data import IMAGE_SUFFIXES
from ..yolo.image_cache import CacheSettings
from ..yolo.labels import LabeledImages, oversized
from ..yolo.val import Forward, ValSet, predict_batches, val_stride
from .draw import draw_detections


@dataclass(frozen=True)
class Detector:
    """A model ready to predict: what runs it, its classes, and the input it needs."""

    run: torch.nn.Module | Forward
    nc: int
    names: tuple[str, ...]  # empty when the file carries none (an ONNX export without metadata)
    stride: int
    square: int | None  # a fixed-shape ONNX file's input side: square letterboxes; None: rect batches
    device: torch.device


def open_detector(weights: Path, *, imgsz: int, device: torch.device, threads: int | None = None) -> Detector:
    """A checkpoint (official .pt or ours) or an ONNX file (float or int8, in ONNX Runtime), checked for ``imgsz``."""
    if weights.suffix.lower() == ".onnx":
        from .onnx_model import inspect_onnx
        from .onnx_val import check_input_size
        from .ort_runtime import open_session, session_forward

        det = inspect_onnx(weights)
        check_input_size(det, imgsz)
        session = open_session(det.path, device=device, threads=threads)
        forward = session_forward(session, det.batch)
        return Detector(forward, det.nc, tuple(det.names), 32, det.static_size, torch.device("cpu"))
    from ..yolo.checkpoint import load_model

    model = load_model(weights)
    stride = val_stride(model)
    if imgsz % stride:
        raise OrchestratorError(f"--imgsz: must be a multiple of the model stride {stride}, got {imgsz}")
    return Detector(model, model.nc, tuple(model.names), stride, None, device)


def list_images(source: str) -> list[Path]:
    """The image files ``source`` names: one file, a folder (searched recursively) or a glob, sorted.

    Files of other kinds inside a folder or a glob are passed over, as a data yaml's folder split does; a
    source that names nothing is one :class:`DataError`.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not found:
            raise DataError(f"{source}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return found
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{source}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
        return [path]
    if glob.has_magic(source):
        matched = [Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True)]
        found = sorted(f for f in matched if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not found:
            raise DataError(f"{source}: the pattern matches no image ({len(matched)} other paths)")
        return found
    raise DataError(f"{source}: no such image, folder or glob (or data yaml split, as coco128.yaml:val)")


def read_images(files: Sequence[Path]) -> LabeledImages:
    """The files that decode, with their original (h, w), and one problem line for each that does not."""

    def shape(f: Path) -> tuple[int, int] | str:
        too_large = oversized(f)
        if too_large:
            return f"{too_large}; skipped"
        try:
            im = cv2.imread(str(f), cv2.IMREAD_COLOR)
        except cv2.error:
            im = None
        return im.shape[:2] if im is not None else f"{f}: unreadable image (missing, corrupt or not an image); skipped"

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(shape, files))
    keep = [i for i, s in enumerate(found) if not isinstance(s, str)]
    return LabeledImages(
        files=tuple(files[i] for i in keep),
        labels=tuple(np.zeros((0, 5), np.float32) for _ in keep),
        shapes=np.array([found[i] for i in keep], dtype=np.int64).reshape(-1, 2),
        problems=tuple(s for s in found if isinstance(s, str)),
    )


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: rows ``x, y, w, h, score, class`` in its original pixels."""

    file: Path
    dets: np.ndarray


def predict_images(
    detector: Detector,
    images: LabeledImages,
    *,
    imgsz: int,
    batch: int = 32,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> Iterator[ImageDetections]:
    """Each image's detections, batch by batch (rect batches sorted by aspect ratio, as ``val`` reads them).

    Decoded batches are never cached: a folder of 100k photos streams through at a few batches' memory.
    """
    try:
        vs = ValSet(
            images, imgsz, batch, stride=detector.stride, nc=detector.nc, rect=detector.square is None,
            cache=CacheSettings("none", 0.0),
        )  # fmt: skip
    except DataError as e:
        raise DataError(f"no usable image: {e}") from None
    for b in predict_batches(detector.run, vs, device=detector.device, conf=conf, iou=iou, max_det=max_det):
        for i in b.index:
            rows = b.dets[b.dets[:, 0] == i]
            yield ImageDetections(vs.files[int(i)], rows[:, 1:])


def annotated(item: ImageDetections, names: Sequence[str], max_side: int | None = None) -> Image.Image:
    """The image, read as the detector read it (OpenCV, EXIF orientation applied), with its boxes drawn.

    ``max_side``: shrink the image first and draw on the small copy, so labels keep a readable size in a thumbnail.
    """
    im = cv2.imread(str(item.file), cv2.IMREAD_COLOR)
    if im is None:  # replaced or deleted since it was read
        raise DataError(f"{item.file}: unreadable image")
    dets = item.dets
    r = min(1.0, max_side / max(im.shape[:2])) if max_side else 1.0
    if r < 1:
        im = cv2.resize(im, (round(im.shape[1] * r), round(im.shape[0] * r)), interpolation=cv2.INTER_AREA)
        dets = dets.copy()
        dets[:, :4] *= r
    return draw_detections(Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)), dets, names)


def coco_records(item: ImageDetections) -> list[dict]:
    """COCO result records of one image: ``image_id`` (its file stem, as an integer when numeric, as official
    ``--save-json`` writes it), ``category_id`` (the class index, as ``val`` scores and official val.py writes
    for any data but the full COCO), ``bbox`` [x, y, w, h] in original pixels, ``score``."""
    stem = item.file.stem
    image_id: int | str = int(stem) if stem.isnumeric() else stem
    return [
        {"image_id": image_id, "category_id": int(c), "bbox": [x, y, w, h], "score": s}
        for x, y, w, h, s, c in item.dets.tolist()
    ]


def class_names(nc: int, *candidates: Sequence[str]) -> tuple[str, ...]:
    """The first candidate list with exactly ``nc`` names, else ``0 .. nc-1`` as text."""
    for names in candidates:
        if names and len(names) == nc:
            return tuple(names)
    return tuple(str(i) for i in range(nc))


def output_name(file: Path, taken: set[str]) -> str:
    """``file``'s name for the output folder: a format PIL writes (else .jpg), and unique among ``taken``."""
    suffix = file.suffix.lower() if file.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"} else ".jpg"
    name, k = f"{file.stem}{suffix}", 1
    while name in taken:
        k += 1
        name = f"{file.stem}-{k}{suffix}"
    taken.add(name)
    return name
