"""COCO-mAP validation of a YOLOv5 model: one pure function for the CLI, the fine-tune loop and a sweep worker.

:class:`ValSet` does the expensive data work once (decode, resize, letterbox into rectangular
batches kept in RAM as uint8, and the COCO ground truth); :func:`validate` then runs
inference -> NMS -> boxes back to original pixels -> COCOeval, and returns a :class:`ValResult`.
:func:`validate_forward` is the same with any backend that turns images into raw predictions (an ONNX
Runtime session, int8 or float), so a deployed file is scored by exactly the code that scores the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import DataError, DataLost
from .coco_map import coco_evaluate, coco_ground_truth
from .data import DataConfig, letterbox, load_image, rect_batch_shapes
from .image_cache import GB, CacheSettings, ImageStore, ram_count, resized_bytes
from .labels import LabeledImages, scan_labels
from .model import copy_model
from .nms import non_max_suppression

# images (B, 3, H, W) float in [0, 1] -> raw predictions (B, anchors, 5 + nc): xywh pixels, objectness, classes
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ValResult:
    """Validation scores; ``speed_ms`` is per image: preprocess, inference, nms (+ load, eval)."""

    map50_95: float
    map50: float
    precision: float  # mean over classes with labels, at the confidence of the best mean F1 (IoU 0.5)
    recall: float
    images: int
    instances: int
    speed_ms: dict[str, float]
    per_class: dict[str, float] | None = None  # class name -> AP@[.5:.95], classes with labels only
    problems: tuple[str, ...] = ()  # images / label lines skipped while reading the data


@dataclass(frozen=True)
class ValBatch:
    """One rect batch, ready for the model, and what maps its boxes back to original pixels."""

    images: torch.Tensor  # (B, 3, H, W) uint8 RGB, letterboxed to the batch shape
    index: np.ndarray  # (B,) positions in ValSet.files
    gain: np.ndarray  # (B,) resize factor original -> loaded
    pad: np.ndarray  # (B, 2) letterbox padding (dw, dh) on each side


class ValSet:
    """Validation data prepared once and reused: rect batches in RAM plus the pycocotools ground truth.

    Images are sorted by aspect ratio h/w and cut into batches of ``batch``; each batch is letterboxed
    to ``ceil(ratio * imgsz / stride + 0.5) * stride`` (no upscaling), as the official rect loader does.
    In RAM (``cache``: the whole set when it fits the budget under ``auto``) that is about
    ``images * 3 * imgsz * imgsz * 0.75`` bytes; batches past the budget are read from disk at each validation,
    by ``workers`` loader processes (0: threads of this one), with the same decode. ``rect=False`` letterboxes
    every image to ``imgsz`` x ``imgsz`` instead (for a backend with a fixed input shape, such as a static ONNX file).
    """

    def __init__(
        self,
        source: DataConfig | LabeledImages,
        imgsz: int = 640,
        batch: int = 32,
        *,
        stride: int = 32,
        nc: int | None = None,
        names: Sequence[str] | None = None,
        cache_dir: Path | None = None,
        rect: bool = True,
        cache: CacheSettings | None = None,
        workers: int = 0,
    ):
        if isinstance(source, DataConfig):
            nc, names = source.nc, source.names
            source = scan_labels(source.val, source.nc, cache_dir)
        if not source.files:
            first = f"; first problem: {source.problems[0]}" if source.problems else ""
            raise DataError(f"no usable validation images ({len(source.problems)} problems{first})")
        if nc is None:
            nc = int(max((lb[:, 0].max() for lb in source.labels if len(lb)), default=0)) + 1
        self.imgsz, self.batch, self.stride, self.nc = imgsz, batch, stride, nc
        self.names = tuple(names) if names is not None else None  # None: use the model's names
        self.files, self.labels, self.shapes = source.files, source.labels, np.asarray(source.shapes)
        self.problems = source.problems
        self.instances = source.instances
        self.image_ids = np.arange(1, len(self.files) + 1)
        # numpy's default argsort, on the same h/w values in the same file order as the official loader:
        # images with equal ratios then land in the same batches, so predictions match it exactly.
        order = np.argsort(self.shapes[:, 0] / self.shapes[:, 1])
        shapes = rect_batch_shapes(self.shapes[order], imgsz, batch, stride)
        if not rect:
            shapes = np.full_like(shapes, imgsz)
        self.plan = tuple((order[i * batch : (i + 1) * batch], tuple(shapes[i])) for i in range(len(shapes)))
        settings = cache or CacheSettings()
        self.workers = workers
        disk = CacheSettings("disk" if settings.mode == "disk" else "none", 0.0)
        self.store = ImageStore(
            self.files, resized_bytes(self.shapes, imgsz), self._decode, disk, flavour="val", imgsz=imgsz,
            cache_dir=cache_dir,
        )  # fmt: skip
        # The RAM cache holds whole letterboxed batches (what validation reuses), counted at their padded size.
        held = ram_count([len(ix) * 3 * h * w for ix, (h, w) in self.plan], settings)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            self.cached = tuple(self._make_batch(j, pool) for j in range(held))
        self.gt = coco_ground_truth(self.labels, self.shapes, self.image_ids, nc)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def batches(self) -> Sequence[ValBatch] | Iterable[ValBatch]:
        """Every rect batch in order: the RAM cache, then the rest read from disk by the loader's processes."""
        if len(self.cached) == len(self.plan):
            return self.cached
        return _StreamedBatches(self)

    def cache_info(self) -> dict[str, float]:
        """The RAM the cached batches hold and the share of images read from disk at each validation."""
        cached = sum(len(b.index) for b in self.cached)
        return {"val_cache_ram_gb": sum(b.images.numel() for b in self.cached) / GB,
                "val_cache_streamed": 1 - cached / max(len(self.files), 1)}  # fmt: skip

    def _decode(self, i: int) -> np.ndarray:
        return load_image(self.files[i], self.imgsz)[0]

    def _make_batch(self, j: int, pool: ThreadPoolExecutor | None = None) -> ValBatch:
        index, shape = self.plan[j]
        out = np.empty((len(index), 3, *shape), dtype=np.uint8)
        gain, pad = np.empty(len(index)), np.empty((len(index), 2))

        def fill(k: int) -> None:
            im = self.store(int(index[k]))
            h0, h = self.shapes[index[k], 0], im.shape[0]
            im, _, p = letterbox(im, shape, auto=False, scaleup=False, stride=self.stride)
            out[k] = im.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB
            gain[k], pad[k] = h / h0, p  # the official val rescales both axes by the height ratio

        list((pool or _SERIAL).map(fill, range(len(index))))
        return ValBatch(torch.from_numpy(out), np.asarray(index), gain, pad)


class _Serial:
    """``map`` in the calling thread: inside a loader process, its siblings are the parallelism."""

    @staticmethod
    def map(fn: Callable, items: Iterable) -> Iterable:
        return map(fn, items)


_SERIAL = _Serial()


class _BatchReader(torch.utils.data.Dataset):
    """The streamed batches of a ValSet as a dataset: item ``k`` is batch ``len(cached) + k``, built in a worker."""

    def __init__(self, vs: ValSet):
        self.vs = vs

    def __len__(self) -> int:
        return len(self.vs.plan) - len(self.vs.cached)

    def __getitem__(self, k: int) -> ValBatch | str:
        """The batch, or why one of its images could not be read: a raise here would reach the main process as
        a traceback of this one, wrapped in torch's words."""
        try:
            return self.vs._make_batch(len(self.vs.cached) + k)
        except (DataError, OSError) as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__


def _first(items: list) -> Any:
    return items[0]


class _StreamedBatches:
    """One pass over a ValSet that does not fit its budget: at most a few batches in memory at a time."""

    def __init__(self, vs: ValSet):
        self.vs = vs

    def __len__(self) -> int:
        return len(self.vs.plan)

    def __iter__(self) -> Iterator[ValBatch]:
        """The batches; an image that cannot be read now (deleted, its folder gone since the scan) stops the pass
        with :class:`DataLost`: skipping it would score its objects as missed, a wrong figure rather than none."""
        yield from self.vs.cached
        if self.vs.workers <= 0:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                for j in range(len(self.vs.cached), len(self.vs.plan)):
                    try:
                        batch = self.vs._make_batch(j, pool)
                    except (DataError, OSError) as e:
                        raise DataLost(f"val: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                    yield batch
            return
        loader = torch.utils.data.DataLoader(
            _BatchReader(self.vs), batch_size=1, collate_fn=_first, num_workers=self.vs.workers
        )
        for batch in loader:
            if isinstance(batch, str):
                raise DataLost(f"val: {batch}")
            yield batch


def validate(
    model: nn.Module,
    data: DataConfig | ValSet,
    *,
    imgsz: int | None = None,
    batch: int | None = None,
    device: str | torch.device | None = "cpu",
    half: bool = False,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    per_class: bool = False,
    fuse: bool = True,
) -> ValResult:
    """COCO mAP of ``model`` on ``data``; no printing; the caller's model is left as it was.

    ``imgsz``/``batch`` default to 640/32 for a DataConfig and to the ValSet's own (a different value
    for a ValSet is an error); ``device=None`` runs where the model's parameters are. With ``fuse`` a
    BN-fused copy runs (what official val.py measures; prune masks are made permanent in the copy);
    otherwise the model itself runs in eval mode and every module's train/eval flag is restored
    afterwards. The only file ever written is the label cache when a ValSet is built here.
    """
    t0 = time.perf_counter()
    stride = val_stride(model)
    if isinstance(data, ValSet):
        for name, asked, have in (("imgsz", imgsz, data.imgsz), ("batch", batch, data.batch)):
            if asked is not None and asked != have:
                raise ValueError(f"{name}={asked} but the ValSet was built with {name}={have}")
        if data.stride % stride:
            raise ValueError(f"model stride {stride} does not divide the ValSet stride {data.stride}")
        vs, load_s = data, 0.0
    else:
        vs = ValSet(data, imgsz or 640, batch or 32, stride=stride)
        load_s = time.perf_counter() - t0
    device = torch.device(device) if device is not None else _model_device(model)
    net, restore = _inference_model(model, device, half, fuse)
    try:
        dets, times = _predict(net, vs, device, half, conf, iou, max_det)
    finally:
        restore()
    return _scored(vs, dets, times, load_s, vs.names or getattr(model, "names", None), per_class)


def validate_forward(
    forward: Forward,
    vs: ValSet,
    *,
    names: Sequence[str] | None = None,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    per_class: bool = False,
) -> ValResult:
    """COCO mAP of predictions made by ``forward`` (any backend) on ``vs``: same NMS, boxes and COCOeval."""
    dets, times = _predict(forward, vs, torch.device("cpu"), False, conf, iou, max_det)
    return _scored(vs, dets, times, 0.0, vs.names or names, per_class)


def _scored(
    vs: ValSet,
    dets: np.ndarray,
    times: dict[str, float],
    load_s: float,
    names: Sequence[str] | None,
    per_class: bool,
) -> ValResult:
    t1 = time.perf_counter()
    scores = coco_evaluate(vs.gt, dets, vs.nc)
    n = len(vs)
    speed = {k: 1000 * v / n for k, v in times.items()}
    speed.update(load=1000 * load_s / n, eval=1000 * (time.perf_counter() - t1) / n)
    names = list(names or [])
    classes = None
    if per_class:
        classes = {
            (names[c] if c < len(names) else str(c)): float(ap) for c, ap in enumerate(scores.per_class) if ap == ap
        }
    return ValResult(
        map50_95=scores.map50_95,
        map50=scores.map50,
        precision=scores.precision,
        recall=scores.recall,
        images=n,
        instances=vs.instances,
        speed_ms=speed,
        per_class=classes,
        problems=vs.problems,
    )


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def val_stride(model: nn.Module) -> int:
    """The stride a ValSet's rect batches are padded to for ``model``: its largest stride, at least 32.

    At least 32 so that one ValSet serves every model of a study (a pruned model keeps the baseline's strides).
    """
    s = getattr(model, "stride", None)
    return max(32, int(float(s.max()) if isinstance(s, torch.Tensor) else 32.0))


@dataclass(frozen=True)
class BatchDetections:
    """The detections of one batch: which images it held and their boxes in original pixels."""

    index: np.ndarray  # (B,) positions in ValSet.files, in the batch's order
    dets: np.ndarray  # (M, 7): ValSet position, x, y, w, h (original px, rounded as official JSON), score, class


def predict_batches(
    model: nn.Module | Forward,
    vs: ValSet,
    *,
    device: str | torch.device = "cpu",
    half: bool = False,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> Iterator[BatchDetections]:
    """Each batch's detections as soon as it is done: the letterbox, forward and NMS that :func:`validate`
    scores, for a caller that draws or writes them (``orchestrator predict``) instead of scoring them.

    A module runs as a BN-fused copy (as :func:`validate` runs it); any other callable (an ONNX Runtime
    session's forward) is called as it is, on CPU tensors.
    """
    device = torch.device(device)
    if isinstance(model, nn.Module):
        net, _ = _inference_model(model, device, half, fuse=True)  # a copy: nothing to restore
    else:
        net, device, half = model, torch.device("cpu"), False
    yield from _batches(
        net, vs, device, half, conf, iou, max_det, dict.fromkeys(("preprocess", "inference", "nms"), 0.0)
    )


def _batches(
    net: nn.Module | Forward,
    vs: ValSet,
    device: torch.device,
    half: bool,
    conf: float,
    iou: float,
    max_det: int,
    times: dict[str, float],
) -> Iterator[BatchDetections]:
    """Detections batch by batch; ``times`` (preprocess, inference, nms seconds) is added to as they run."""

    def sync() -> None:  # honest timings: CUDA calls return before the work is done
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for b in vs.batches:
        with torch.inference_mode():  # per batch, not around the yield: the caller's code runs in its own mode
            t0 = time.perf_counter()
            x = b.images.to(device, non_blocking=True)
            x = (x.half() if half else x.float()) / 255
            sync()
            t1 = time.perf_counter()
            y = net(x)
            y = y[0] if isinstance(y, (tuple, list)) else y
            sync()
            t2 = time.perf_counter()
            d = non_max_suppression(y, conf, iou, max_det).cpu().double().numpy()
        dets = _to_original(d, b, vs.shapes)
        # Same precision as official --save-json predictions, so pycocotools sees the same numbers.
        dets[:, 1:5], dets[:, 5] = np.round(dets[:, 1:5], 3), np.round(dets[:, 5], 5)
        times["preprocess"] += t1 - t0
        times["inference"] += t2 - t1
        times["nms"] += time.perf_counter() - t2
        yield BatchDetections(b.index, dets)


def _predict(
    net: nn.Module | Forward, vs: ValSet, device: torch.device, half: bool, conf: float, iou: float, max_det: int
) -> tuple[np.ndarray, dict[str, float]]:
    """All detections ``(M, 7)``: image_id, x, y, w, h in original pixels (rounded as official JSON), score, class."""
    times = dict.fromkeys(("preprocess", "inference", "nms"), 0.0)
    dets = np.concatenate([b.dets for b in _batches(net, vs, device, half, conf, iou, max_det, times)])
    dets[:, 0] = vs.image_ids[dets[:, 0].astype(np.int64)]
    return dets, times


def _to_original(d: np.ndarray, b: ValBatch, shapes: np.ndarray) -> np.ndarray:
    """Batch detections (b, x1, y1, x2, y2, score, cls) -> (ValSet index, x, y, w, h original px, score, cls)."""
    j = d[:, 0].astype(np.int64)
    idx = b.index[j]
    xyxy = (d[:, 1:5] - np.tile(b.pad[j], 2)) / b.gain[j, None]
    h0, w0 = shapes[idx, 0:1], shapes[idx, 1:2]
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w0)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h0)
    return np.column_stack((idx, xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], d[:, 5], d[:, 6]))


def _inference_model(model: nn.Module, device: torch.device, half: bool, fuse: bool):
    """(module to run, restore callback). Copies when fusing or when the device/dtype must change."""
    p = next(model.parameters(), None)
    want = torch.float16 if half else torch.float32
    if fuse or (p is not None and (p.device != device or p.dtype != want)):
        net = copy_model(model)
        _make_pruning_permanent(net)
        if fuse and hasattr(net, "fuse"):
            net.fuse()
        net = net.to(device=device, dtype=want).eval()
        return net, lambda: None
    modes = [(m, m.training) for m in model.modules()]
    model.eval()

    def restore() -> None:
        for m, training in modes:
            m.training = training

    return model, restore


def _make_pruning_permanent(net: nn.Module) -> None:
    for m in net.modules():
        pruned = [h._tensor_name for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for name in pruned:
            prune.remove(m, name)
