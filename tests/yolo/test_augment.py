"""Augmentation moves labels with the pixels, drops degenerate boxes, and is reproducible per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from orchestrator.yolo.augment import EpochBatchSampler, SampleKey, TrainDataset, collate, keep_boxes, warp_boxes
from orchestrator.yolo.hyp import Hyp

NO_COLOUR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def _synthetic(n: int = 6, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Black images of various shapes with white rectangles; the labels are exactly those rectangles."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        h, w = (int(x) for x in rng.choice([(96, 128), (128, 96), (128, 128), (80, 128)]))
        img = np.zeros((h, w, 3), np.uint8)
        rows = []
        for _ in range(3):
            bw, bh = rng.integers(12, w // 2), rng.integers(12, h // 2)
            x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            if img[y1 : y1 + bh, x1 : x1 + bw].any():
                continue  # keep rectangles apart
            img[y1 : y1 + bh, x1 : x1 + bw] = 255
            rows.append([0, (x1 + bw / 2) / w, (y1 + bh / 2) / h, bw / w, bh / h])
        images.append(img)
        labels.append(np.array(rows, np.float32).reshape(-1, 5))
    return images, labels


def _white_fraction_inside_and_outside(img: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Smallest white fraction inside a label box, and white pixels outside every box away from the border.

    Boxes cut down to slivers at the image border are dropped on purpose (< 2 px or < 10% of their area
    left), so white within 6 px of the border may be unlabelled; anywhere else it means a lost box.
    """
    a = img[0].numpy() > 127
    s = a.shape[0]
    inside = np.zeros_like(a)
    fractions = []
    for _, _, cx, cy, w, h in labels.tolist():
        x1, y1, x2, y2 = (cx - w / 2) * s, (cy - h / 2) * s, (cx + w / 2) * s, (cy + h / 2) * s
        inside[max(int(y1) - 1, 0) : int(y2) + 2, max(int(x1) - 1, 0) : int(x2) + 2] = True
        core = a[int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
        if core.size:
            fractions.append(core.mean())
    stray = a & ~inside
    stray[:6], stray[-6:], stray[:, :6], stray[:, -6:] = False, False, False, False
    return min(fractions, default=1.0), int(stray.sum())


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_labels_follow_pixels(mosaic):
    images, labels = _synthetic()
    hyp = Hyp(mosaic=mosaic, degrees=0.0, scale=0.5, translate=0.2, fliplr=0.5, flipud=0.5, **NO_COLOUR)
    ds = TrainDataset(images, labels, 128, hyp, seed=1)
    seen = 0
    for epoch in range(4):
        for i in range(len(ds)):
            img, lab = ds[SampleKey(i, epoch, True)]
            assert img.shape == (3, 128, 128) and img.dtype == torch.uint8
            assert ((lab[:, 2:4] >= 0) & (lab[:, 2:4] <= 1)).all() and (lab[:, 4:] > 0).all()
            inside, stray = _white_fraction_inside_and_outside(img, lab)
            assert inside > 0.97, "a label box does not cover its white rectangle"
            assert stray == 0, "white pixels outside every label: a box was lost or misplaced"
            seen += len(lab)
    assert seen > 0


def test_plain_letterbox_keeps_exact_boxes():
    images, labels = _synthetic()
    ds = TrainDataset(images, labels, 160, Hyp(), augment=False)
    img, lab = ds[SampleKey(0, 0, True)]
    h, w = images[0].shape[:2]
    r = 1.0  # no augmentation: never scaled up
    # letterboxed: the box keeps its pixel size times r
    assert lab[:, 4].numpy() * 160 == pytest.approx(labels[0][:, 3] * w * r, abs=1e-3)
    assert lab[:, 5].numpy() * 160 == pytest.approx(labels[0][:, 4] * h * r, abs=1e-3)
    inside, stray = _white_fraction_inside_and_outside(img, lab)
    assert inside == 1.0 and stray == 0


def test_degenerate_boxes_dropped_and_clipped():
    m = np.array([[1.0, 0, -50], [0, 1.0, 0]])  # shift everything 50 px left
    boxes = np.array([[10, 10, 40, 40], [40, 10, 100, 40], [45, 10, 52, 40]], float)
    new, keep = warp_boxes(boxes, m, (100, 100))
    # first leaves the image, third keeps a 2 px sliver (< 10% of its area), second is clipped at 0
    assert keep.tolist() == [False, True, False]
    assert new[1].tolist() == [0, 10, 50, 40]
    assert keep_boxes(np.array([[0, 0, 100, 3.0]]), np.array([[0, 0, 100, 3.0]])).tolist() == [False]  # aspect 33


def test_same_seed_same_batches_any_worker_count():
    images, labels = _synthetic(8)
    ds = TrainDataset(images, labels, 96, Hyp(), seed=5)

    def batches(workers: int):
        sampler = EpochBatchSampler(len(ds), 4, seed=5)
        sampler.set_epoch(2)
        dl = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        return list(dl)

    a, b = batches(0), batches(2)
    assert len(a) == 2
    for (ia, la), (ib, lb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert set(torch.unique(a[0][1][:, 0]).tolist()) <= {0, 1, 2, 3}
    other = TrainDataset(images, labels, 96, Hyp(), seed=6)[SampleKey(0, 2, True)][0]
    assert not torch.equal(ds[SampleKey(0, 2, True)][0], other)
