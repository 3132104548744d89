"""Decoded images of one split under a memory budget: in RAM while they fit, as .npy files, or read on each use.

Why a budget and not a switch: a trial worker used to decode its whole split into RAM (about 0.9 MB per image
at 640), which is fine for coco128 and impossible for COCO (110 GB per worker). ``auto`` keeps the RAM cache
when the split fits the budget (the same decode in the same order, so the same digits) and otherwise streams:
the loader's processes decode each batch from disk, so memory follows the batch, not the dataset.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TrainingError
from .data import DataConfig, load_image
from .labels import default_cache_dir, scan_labels

CACHE_MODES = ("auto", "ram", "disk", "none")
DEFAULT_BUDGET_GB = 2.0
GB = 1e9


@dataclass(frozen=True)
class CacheSettings:
    """How decoded images are kept: ``auto`` (RAM when the split fits ``budget_gb``, else streamed), ``ram``
    (RAM up to the budget, the rest streamed), ``disk`` (.npy files in the cache folder) or ``none``."""

    mode: str = "auto"
    budget_gb: float = DEFAULT_BUDGET_GB

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {', '.join(CACHE_MODES)}, got {self.mode!r}")
        if not self.budget_gb >= 0:
            raise ValueError(f"cache budget_gb must be >= 0, got {self.budget_gb}")


def resized_bytes(shapes: np.ndarray, imgsz: int) -> np.ndarray:
    """Bytes of each image once resized to long side ``imgsz`` (h * w * 3), from the label scan's (h, w)."""
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    if not len(shapes):
        return np.zeros(0, np.int64)
    r = imgsz / shapes.max(1)
    return (np.ceil(shapes[:, 0] * r) * np.ceil(shapes[:, 1] * r) * 3).astype(np.int64)


def ram_count(sizes: Sequence[int] | np.ndarray, settings: CacheSettings) -> int:
    """How many leading items the RAM cache holds: all or none for ``auto``, the prefix that fits for ``ram``."""
    if settings.mode in ("disk", "none"):
        return 0
    total = np.cumsum(np.asarray(sizes, dtype=np.int64))
    fits = int(np.searchsorted(total, round(settings.budget_gb * GB), side="right"))
    if settings.mode == "auto":
        return len(total) if fits == len(total) else 0
    return fits


def split_key(files: Sequence[Path], imgsz: int, flavour: str) -> str:
    """A folder name for one split's decoded files: paths, sizes, mtimes, ``imgsz`` and the resize flavour."""
    h = hashlib.sha256(f"v1 {imgsz} {flavour}\n".encode())
    for f in files:
        try:
            s = Path(f).stat()
            h.update(f"{f}|{s.st_size}|{s.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|-\n".encode())
    return h.hexdigest()[:24]


def writable_folder(folder: Path) -> str:
    """'' when ``folder`` can hold cache files, else why not (read-only, full, not a folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        return f"{folder}: {e.strerror or type(e).__name__}"
    return ""


class ImageStore:
    """The i-th decoded image of a split, from whichever place the settings chose; picklable for loader workers.

    ``decode(i)`` is the one decoder every path goes through, so a cached, a disk and a streamed image are the
    same bytes. ``mode`` after construction says what was resolved: ``ram``, ``ram+stream``, ``disk`` or ``stream``.
    """

    def __init__(
        self,
        files: Sequence[Path],
        sizes: np.ndarray,
        decode: Callable[[int], np.ndarray],
        settings: CacheSettings,
        *,
        flavour: str,
        imgsz: int,
        cache_dir: Path | None = None,
    ):
        self.settings, self.decode, self.folder = settings, decode, None
        self._given_up = None  # set when a write fails: shared with the loader processes, so one says it once
        self.ram: tuple[np.ndarray, ...] = ()
        n_ram = ram_count(sizes, settings)
        if settings.mode == "disk":
            folder = (cache_dir or default_cache_dir()) / "images" / split_key(files, imgsz, flavour)
            why = writable_folder(folder)
            if why:
                print(f"warning: image cache folder unusable ({why}); streaming images from disk", file=sys.stderr)
            else:
                self.folder = folder
                self._given_up = multiprocessing.Value("b", 0)
        if n_ram:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self.ram = tuple(pool.map(decode, range(n_ram)))
        self.ram_bytes = int(sum(im.nbytes for im in self.ram))
        self.count = len(files)
        if self.folder is not None:
            self.mode = "disk"
        elif n_ram == len(files):
            self.mode = "ram"
        else:
            self.mode = "ram+stream" if n_ram else "stream"

    def __call__(self, i: int) -> np.ndarray:
        if i < len(self.ram):
            return self.ram[i]
        if self.folder is None or self._given_up.value:
            return self.decode(i)
        return self._from_disk(i)

    def _from_disk(self, i: int) -> np.ndarray:
        """The .npy of image ``i``, written on first use. A write that fails (the disk filled up, the folder went
        read-only) only costs speed: one warning, and from then on every image is streamed from the dataset."""
        path = self.folder / f"{i}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass
        im = self.decode(i)
        tmp = path.with_name(f"{i}.{os.getpid()}.tmp.npy")
        buf = io.BytesIO()  # written by Python, not numpy's tofile: a failed write keeps its errno (ENOSPC, EROFS)
        np.save(buf, im, allow_pickle=False)
        try:
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
            tmp.replace(path)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self._give_up(e)
        return im

    def _give_up(self, e: OSError) -> None:
        with self._given_up.get_lock():
            first, self._given_up.value = not self._given_up.value, 1
        if first:
            why = e.strerror or type(e).__name__
            print(f"warning: image cache folder {self.folder}: {why}; streaming images from disk", file=sys.stderr)

    def describe(self) -> dict[str, float]:
        """Figures a trial logs: the budget, the bytes held in RAM and the share of images read from disk."""
        return {
            "cache_budget_gb": float(self.settings.budget_gb),
            "cache_ram_gb": self.ram_bytes / GB,
            "cache_streamed": (self.count - len(self.ram)) / max(self.count, 1),
        }


class TrainImages:
    """Training images and labels, checked once; decoded images kept as ``cache`` says; reusable across fine-tunes.

    With the default ``auto`` cache a split that fits the budget is decoded into RAM once (about
    ``images * imgsz * imgsz * 3 * 0.75`` bytes); a larger one is decoded batch by batch by the loader's processes.
    """

    def __init__(
        self,
        data: DataConfig,
        imgsz: int,
        *,
        cache_images: bool = True,
        cache_dir: Path | None = None,
        cache: CacheSettings | None = None,
    ):
        found = scan_labels(data.train, data.nc, cache_dir)
        if not found.files:
            why = f": {found.problems[0]}" if found.problems else ""
            raise TrainingError(f"{data.file}: train: no usable training images ({len(data.train)} listed){why}")
        self.imgsz, self.files, self.labels, self.problems = imgsz, found.files, found.labels, found.problems
        settings = cache or CacheSettings(mode="auto" if cache_images else "none")
        sizes = resized_bytes(found.shapes, imgsz)
        self.store = ImageStore(
            self.files, sizes, self.load, settings, flavour="train", imgsz=imgsz, cache_dir=cache_dir
        )

    def __len__(self) -> int:
        return len(self.files)

    @property
    def cached(self) -> tuple[np.ndarray, ...] | None:
        """The images held in RAM (None when every image is read from disk)."""
        return self.store.ram or None

    def load(self, i: int) -> np.ndarray:
        return load_image(self.files[i], self.imgsz, augment=True)[0]

    def image(self, i: int) -> np.ndarray:
        """BGR uint8, long side ``imgsz``."""
        return self.store(i)
