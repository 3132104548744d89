"""Calibration images for recovery after a structured cut: a few train images, letterboxed like val, never val.

Recovery (BN statistics, channel means, least-squares refits) fits the pruned model to data; fitting it
to the images it is then scored on would flatter it. So the set is drawn from the train split only, and
any file that is also listed under val is left out (``coco128``-style files where both splits overlap).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..yolo.data import DataConfig, letterbox, load_image

DEFAULT_IMAGES = 128  # enough for BN statistics and ridge fits of yolov5n's widest conv (256 * 9 inputs)


@dataclass(frozen=True)
class CalibrationSet:
    """``images``: (N, 3, imgsz, imgsz) uint8 RGB, square letterboxed; ``files`` the train images they came from."""

    files: tuple[Path, ...]
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, batch: int = 16):
        """Float batches in [0, 1], as the model takes them."""
        for i in range(0, len(self.files), batch):
            yield self.images[i : i + batch].float() / 255


def calibration_files(data: DataConfig, n: int = DEFAULT_IMAGES, seed: int = 0) -> list[Path]:
    """Up to ``n`` train images (a seeded sample, sorted), none of them a val image."""
    if n < 1:
        raise DataError(f"calibration needs at least 1 image, got {n}")
    val = {p.resolve() for p in data.val}
    train = [p for p in data.train if p.resolve() not in val]
    if not train:
        raise DataError(f"{data.file}: no train image that is not also a val image: nothing to calibrate on")
    if len(train) > n:
        pick = np.random.default_rng(seed).choice(len(train), n, replace=False)
        train = [train[i] for i in sorted(pick)]
    return train


def calibration_set(data: DataConfig, imgsz: int, n: int = DEFAULT_IMAGES, seed: int = 0) -> CalibrationSet:
    """Decode and letterbox (to ``imgsz`` square, gray padding, as val pads) the calibration images once."""
    files = calibration_files(data, n, seed)
    return CalibrationSet(tuple(files), letterboxed(files, imgsz))


def letterboxed(files: list[Path], imgsz: int) -> torch.Tensor:
    """(N, 3, imgsz, imgsz) uint8 RGB: ``files`` decoded and letterboxed square, as calibration takes them."""
    out = np.empty((len(files), 3, imgsz, imgsz), dtype=np.uint8)

    def fill(j: int) -> None:
        im = load_image(files[j], imgsz)[0]
        im = letterbox(im, imgsz, auto=False, scaleup=False)[0]
        out[j] = im.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(files))))
    return torch.from_numpy(out)
