"""Augmented training batches: mosaic, random affine, HSV, flips and letterbox, labels moving with the pixels.

Every sample draws its randomness from ``numpy.random.default_rng((seed, epoch, index))``, so a batch
is the same whatever the number of loader processes. The batch sampler runs in the main process and
carries the epoch (and whether mosaic is still on) to the workers inside each key.

An image that cannot be read when its turn comes (streamed from disk: deleted, damaged, its folder gone since
the label scan) does not end the loader process in a traceback: its sample comes back as :class:`Unreadable`
and :func:`collate_counted` counts it, so the training loop decides (skip it, or stop on too many).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from .data import letterbox
from .hyp import Hyp

PAD_COLOR = (114, 114, 114)
# A box survives augmentation if it keeps > 2 px sides, > 10% of its area and an aspect ratio < 20.
MIN_SIDE_PX, MIN_AREA_KEPT, MAX_ASPECT = 2.0, 0.1, 20.0


class SampleKey(NamedTuple):
    index: int
    epoch: int
    mosaic: bool  # mosaic allowed this epoch (False for the last ``close_mosaic`` epochs)


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Random hue/saturation/value gains applied through lookup tables (BGR uint8 in, out)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def affine_matrix(
    rng: np.random.Generator, size: tuple[int, int], out: tuple[int, int], *, degrees: float, translate: float,
    scale: float, shear: float,
) -> np.ndarray:  # fmt: skip
    """2x3 matrix: centre the input, rotate+scale, shear, translate into an ``out`` (w, h) frame."""
    w, h = size
    c = np.eye(3)
    c[0, 2], c[1, 2] = -w / 2, -h / 2
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D((0, 0), rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale))
    s = np.eye(3)
    s[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    s[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    t = np.eye(3)
    t[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out[0]
    t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out[1]
    return (t @ s @ r @ c)[:2]


def warp_boxes(boxes: np.ndarray, m: np.ndarray, out: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, 4) xyxy through an affine ``m``: enclosing box of the 4 corners, clipped; also the keep mask."""
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4), np.zeros(0, bool)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)
    xy = np.c_[corners, np.ones(n * 4)] @ m.T
    xy = xy.reshape(n, 8)
    new = np.stack((xy[:, 0::2].min(1), xy[:, 1::2].min(1), xy[:, 0::2].max(1), xy[:, 1::2].max(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, out[0])
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, out[1])
    gain = math.sqrt(abs(np.linalg.det(m[:, :2])))  # area scale of the transform
    return new, keep_boxes(boxes, new, gain)


def keep_boxes(before: np.ndarray, after: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Boxes still worth learning from after a transform (not slivers, not mostly cut off)."""
    w0, h0 = (before[:, 2] - before[:, 0]) * gain, (before[:, 3] - before[:, 1]) * gain
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
    area_kept = w1 * h1 / (w0 * h0 + 1e-16)
    return (w1 > MIN_SIDE_PX) & (h1 > MIN_SIDE_PX) & (area_kept > MIN_AREA_KEPT) & (aspect < MAX_ASPECT)


def random_affine(
    img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, hyp: Hyp, out: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``img`` into an ``out`` (w, h) frame; ``labels`` (n, 5) cls, x1, y1, x2, y2 in pixels move along."""
    h, w = img.shape[:2]
    m = affine_matrix(rng, (w, h), out, degrees=hyp.degrees, translate=hyp.translate, scale=hyp.scale, shear=hyp.shear)
    if (w, h) != out or not np.allclose(m, [[1, 0, 0], [0, 1, 0]]):
        img = cv2.warpAffine(img, m, dsize=out, borderValue=PAD_COLOR)
    boxes, keep = warp_boxes(labels[:, 1:5], m, out)
    return img, np.c_[labels[keep, :1], boxes[keep]]


def _to_pixels(labels: np.ndarray, w: float, h: float, padw: float, padh: float) -> np.ndarray:
    """(n, 5) cls, cx, cy, w, h normalised -> cls, x1, y1, x2, y2 in pixels of a w x h image placed at padw, padh."""
    out = labels.astype(np.float64).copy()
    out[:, 1] = w * (labels[:, 1] - labels[:, 3] / 2) + padw
    out[:, 2] = h * (labels[:, 2] - labels[:, 4] / 2) + padh
    out[:, 3] = w * (labels[:, 1] + labels[:, 3] / 2) + padw
    out[:, 4] = h * (labels[:, 2] + labels[:, 4] / 2) + padh
    return out


def _to_normalised(labels: np.ndarray, w: int, h: int) -> np.ndarray:
    out = np.zeros((len(labels), 5), np.float32)
    out[:, 0] = labels[:, 0]
    out[:, 1] = (labels[:, 1] + labels[:, 3]) / 2 / w
    out[:, 2] = (labels[:, 2] + labels[:, 4]) / 2 / h
    out[:, 3] = (labels[:, 3] - labels[:, 1]) / w
    out[:, 4] = (labels[:, 4] - labels[:, 2]) / h
    return out


class Unreadable(NamedTuple):
    """A sample whose own image could not be read: why, in one line naming the file (or its vanished folder)."""

    reason: str


class TrainBatch(NamedTuple):
    """What the training loader yields: the readable samples, stacked, and the reasons of the unreadable ones."""

    images: torch.Tensor | None  # (B, 3, s, s) uint8; None when no sample of the batch could be read
    targets: torch.Tensor  # (n, 6): image index in the batch, cls, cx, cy, w, h
    unreadable: tuple[str, ...]


class TrainDataset(Dataset):
    """Augmented samples ``(CHW RGB uint8 tensor, (n, 6) labels: 0, cls, cx, cy, w, h normalised)``.

    ``images[i]`` gives the i-th image resized so its long side is ``imgsz`` (BGR uint8), e.g. from a
    RAM cache; ``labels[i]`` is (n, 5) cls, cx, cy, w, h normalised to that image.
    """

    def __init__(
        self, images: Sequence[np.ndarray] | Callable[[int], np.ndarray], labels: Sequence[np.ndarray],
        imgsz: int, hyp: Hyp, *, seed: int = 0, augment: bool = True,
    ):  # fmt: skip
        self.get_image = images if callable(images) else images.__getitem__
        self.labels = list(labels)
        self.imgsz, self.hyp, self.seed, self.augment = imgsz, hyp, seed, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey | int) -> tuple[torch.Tensor, torch.Tensor] | Unreadable:
        """``(image, labels)``, or :class:`Unreadable` when the sample's own image cannot be read."""
        try:
            return self._sample(key)
        except (DataError, OSError) as e:
            return Unreadable(str(e).splitlines()[0] if str(e) else type(e).__name__)

    def _sample(self, key: SampleKey | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch, mosaic_on = key if isinstance(key, tuple) else (key, 0, True)
        rng = np.random.default_rng((self.seed, epoch, index))
        hyp, s = self.hyp, self.imgsz
        if self.augment and mosaic_on and rng.random() < hyp.mosaic:
            img, labels = self._mosaic(index, rng)
        else:
            img0 = self.get_image(index)
            h0, w0 = img0.shape[:2]
            img, (r, _), (dw, dh) = letterbox(img0, s, scaleup=self.augment)
            labels = _to_pixels(self.labels[index], w0 * r, h0 * r, round(dw - 0.1), round(dh - 0.1))
            if self.augment:
                img, labels = random_affine(img, labels, rng, hyp, (s, s))
        nl = _to_normalised(labels, img.shape[1], img.shape[0])
        if self.augment:
            img = hsv_jitter(img, rng, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v)
            if rng.random() < hyp.flipud:
                img = np.flipud(img)
                nl[:, 2] = 1 - nl[:, 2]
            if rng.random() < hyp.fliplr:
                img = np.fliplr(img)
                nl[:, 1] = 1 - nl[:, 1]
        out = torch.zeros((len(nl), 6))
        out[:, 1:] = torch.from_numpy(nl)
        chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return torch.from_numpy(chw), out

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Four images around a random centre on a 2s x 2s canvas, then a random affine back to s x s."""
        s = self.imgsz
        xc, yc = (int(rng.uniform(s / 2, 3 * s / 2)) for _ in range(2))
        picks = [index, *rng.integers(0, len(self), 3).tolist()]
        canvas = np.full((2 * s, 2 * s, 3), PAD_COLOR[0], np.uint8)
        all_labels = []
        for k, i in enumerate(picks):
            try:
                img = self.get_image(i)
            except (DataError, OSError):
                if i == index:
                    raise
                # another image's tile: the sample's own image instead (the same draws follow, so every readable
                # sample stays as it was); the unreadable one is counted once, when its own sample comes
                i, img = index, self.get_image(index)
            h, w = img.shape[:2]
            if k == 0:  # top left: its bottom-right corner at the centre
                xa, ya, xb, yb = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1, y1 = w - (xb - xa), h - (yb - ya)
            elif k == 1:  # top right
                xa, ya, xb, yb = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1, y1 = 0, h - (yb - ya)
            elif k == 2:  # bottom left
                xa, ya, xb, yb = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1, y1 = w - (xb - xa), 0
            else:  # bottom right
                xa, ya, xb, yb = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1, y1 = 0, 0
            canvas[ya:yb, xa:xb] = img[y1 : y1 + (yb - ya), x1 : x1 + (xb - xa)]
            all_labels.append(_to_pixels(self.labels[i], w, h, xa - x1, ya - y1))
        labels = np.concatenate(all_labels, 0) if all_labels else np.zeros((0, 5))
        before = labels.copy()
        labels[:, 1:] = labels[:, 1:].clip(0, 2 * s)
        labels = labels[keep_boxes(before[:, 1:], labels[:, 1:])]
        # Random affine from the 2s canvas into the s x s output (the translation picks the crop).
        return random_affine(canvas, labels, rng, self.hyp, (s, s))


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """Shuffled batches of :class:`SampleKey`; call :meth:`set_epoch` before each epoch (main process)."""

    def __init__(self, n: int, batch: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = False):
        self.n, self.batch, self.seed, self.shuffle, self.drop_last = n, batch, seed, shuffle, drop_last
        self.epoch, self.mosaic = 0, True

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        self.epoch, self.mosaic = epoch, mosaic

    def __iter__(self) -> Iterator[list[SampleKey]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        keys = [SampleKey(int(i), self.epoch, self.mosaic) for i in order]
        for k in range(0, self.n, self.batch):
            chunk = keys[k : k + self.batch]
            if len(chunk) == self.batch or not self.drop_last:
                yield chunk

    def __len__(self) -> int:
        return self.n // self.batch if self.drop_last else math.ceil(self.n / self.batch)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor] | Unreadable]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images (B, 3, s, s) uint8; concatenate labels with their image index in column 0.

    An unreadable sample is a :class:`DataError` here; the training loop uses :func:`collate_counted`."""
    out = collate_counted(batch)
    if out.unreadable:
        raise DataError(out.unreadable[0])
    assert out.images is not None
    return out.images, out.targets


def collate_counted(batch: list[tuple[torch.Tensor, torch.Tensor] | Unreadable]) -> TrainBatch:
    """:func:`collate` of the readable samples, with the reasons of the unreadable ones."""
    good = [b for b in batch if not isinstance(b, Unreadable)]
    unreadable = tuple(b.reason for b in batch if isinstance(b, Unreadable))
    if not good:
        return TrainBatch(None, torch.zeros((0, 6)), unreadable)
    imgs, labels = zip(*good)
    for i, lab in enumerate(labels):
        lab[:, 0] = i
    return TrainBatch(torch.stack(imgs, 0), torch.cat(labels, 0), unreadable)


def worker_init(_: int) -> None:
    """Loader processes: one thread each, the main process does the maths."""
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
