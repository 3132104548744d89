"""The same few val images through the unpruned model and each chosen trial, drawn: what the Pareto page shows.

Why: a front trial at 0.28 mAP may still miss every small object; four annotated pictures beside the unpruned
model's say that at a glance, where the numbers do not. The images are fixed (the first val images that hold
labelled objects), so every trial is seen on the same pictures, and each model runs as it is deployed: the
trial's int8 ONNX file when it shipped one, else its checkpoint, through ``predict``'s letterbox and NMS.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OrchestratorError
from ..study.spec import StudySpec

PAGE_IMAGES = 4  # pictures per model: enough to see a pattern, small enough for a one-file page
THUMB_SIDE = 320  # px, long side: the 11 px labels stay readable; about 20 kB per JPEG
CONF, IOU = 0.25, 0.45  # what detect.py and `orchestrator predict` draw by default


@dataclass(frozen=True)
class Thumbnail:
    """One annotated picture: the val image's file name, the JPEG, how many boxes were drawn."""

    image: str
    jpeg: bytes
    boxes: int


@dataclass(frozen=True)
class FrontDetections:
    """Thumbnails of the unpruned model and of each trial; ``missing``: trial number -> why it has none."""

    unpruned: tuple[Thumbnail, ...]
    trials: dict[int, tuple[Thumbnail, ...]]
    missing: dict[int, str] = field(default_factory=dict)


def front_detections(
    spec: StudySpec, numbers: list[int], fetch: Callable[[int, Path], list[Path]], *, images: int = PAGE_IMAGES
) -> FrontDetections:
    """Draw the unpruned model's and each trial's detections on the study's first ``images`` labelled val images.

    ``fetch(number, folder)`` downloads a trial's files (its MLflow ``model/`` artifacts). A trial whose files are
    gone or do not load is listed in ``missing`` with the reason; the others are still drawn.
    """
    from ..assets import local_ref, resolve_data, resolve_weights
    from ..yolo.data import load_data_config

    base = spec.path.resolve().parent
    data = load_data_config(resolve_data(local_ref(spec.data, base)), need=("val",))
    picked = _picked_images(data.val, data.nc, images)
    unpruned = _draw(resolve_weights(local_ref(spec.model, base)), picked, data.names, spec.imgsz)
    trials: dict[int, tuple[Thumbnail, ...]] = {}
    missing: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="front-detections-") as tmp:
        for n in numbers:
            try:
                files = fetch(n, Path(tmp) / f"trial-{n:04d}")
                model = next((f for f in files if f.name.endswith(".int8.onnx")), None)
                model = model or next((f for f in files if f.name == "pruned.pt"), None)
                if model is None:
                    raise OrchestratorError("no pruned.pt nor int8 ONNX file among its artifacts")
                trials[n] = _draw(model, picked, data.names, spec.imgsz)
            except OrchestratorError as e:
                missing[n] = str(e)
    return FrontDetections(unpruned, trials, missing)


def _picked_images(files, nc: int, k: int):
    """The first ``k`` usable val images that hold labelled objects (the first usable ones if too few do)."""
    from ..yolo.labels import LabeledImages, scan_labels

    scanned = scan_labels(files, nc)
    order = [i for i, lb in enumerate(scanned.labels) if len(lb)] + [
        i for i, lb in enumerate(scanned.labels) if not len(lb)
    ]
    keep = sorted(order[:k])
    if not keep:
        raise OrchestratorError("no usable val image to draw detections on")
    return LabeledImages(
        files=tuple(scanned.files[i] for i in keep),
        labels=tuple(np.zeros((0, 5), np.float32) for _ in keep),
        shapes=scanned.shapes[keep],
        problems=(),
    )


def _draw(weights: Path, images, data_names: tuple[str, ...], imgsz: int) -> tuple[Thumbnail, ...]:
    from ..deploy.predict import annotated, class_names, open_detector, predict_images

    detector = open_detector(weights, imgsz=imgsz, device=_cpu())
    names = class_names(detector.nc, detector.names, data_names)
    drawn = {}
    for item in predict_images(detector, images, imgsz=imgsz, batch=len(images.files), conf=CONF, iou=IOU):
        buf = io.BytesIO()
        annotated(item, names, max_side=THUMB_SIDE).save(buf, format="JPEG", quality=75)
        drawn[item.file] = Thumbnail(item.file.name, buf.getvalue(), len(item.dets))
    return tuple(drawn[f] for f in images.files)  # the page shows them in file order, not batch order


def _cpu():
    import torch

    return torch.device("cpu")
