"""YOLOv5 datasets: the data yaml, YOLO txt labels (checked and cached), image loading and letterbox.

Bad input is never a crash and never silent: a data yaml that cannot be used raises :class:`DataError`
naming the file and key; an unreadable image or a malformed label line is listed in
``LabeledImages.problems`` and that image is skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..bounded_yaml import YamlRefused, read_yaml
from ..errors import DataError
from .labels import header_problem

IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"})
MAX_CLASSES = 10_000  # COCO has 80, Objects365 365, LVIS 1203; 10^6 names is a hostile file, refused before use


@dataclass(frozen=True)
class DataConfig:
    """A data yaml, resolved: absolute image lists per split and the class names."""

    file: Path  # the data yaml
    root: Path  # resolved `path` (relative -> relative to the yaml's folder)
    train: tuple[Path, ...]  # image files (from a folder, a list .txt file, or a list of either)
    val: tuple[Path, ...]
    names: tuple[str, ...]
    nc: int
    test: tuple[Path, ...] = ()  # the held-out split (optional `test:`): read only to report a chosen front


def load_data_config(path: str | Path, *, need: Sequence[str] = ("train", "val")) -> DataConfig:
    """Read and resolve a YOLOv5 data yaml; raises DataError("coco.yaml: val: ...") on any problem.

    Splits listed in ``need`` must be present and hold images; other splits are resolved when they
    exist and left empty otherwise (``orchestrator val`` needs only ``val``).
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise DataError(f"{path}: no such data file")
    try:  # duplicate keys, alias bombs and huge files refused in well under a second
        doc = read_yaml(file)
    except YamlRefused as e:
        raise DataError(f"{file}: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{file}: expected a mapping with path, train, val and names")

    root = Path(str(doc.get("path") or "")).expanduser()
    root = (root if root.is_absolute() else file.parent / root).resolve()
    names, nc = _names(doc, file)
    splits: dict[str, tuple[Path, ...]] = {}
    for key in ("val", "train", "test"):  # val first: its problem is the one every command hits
        value = doc.get(key)
        if value in (None, "", []):
            if key in need:
                raise DataError(f"{file}: {key}: missing (expected an image folder, a .txt list of images, or a list)")
            splits[key] = ()
            continue
        try:
            splits[key] = _resolve_split(value, root)
        except DataError as e:
            if key in need:
                raise DataError(f"{file}: {key}: {e}") from None
            splits[key] = ()
    return DataConfig(
        file=file, root=root, train=splits["train"], val=splits["val"], names=names, nc=nc, test=splits["test"]
    )


def _names(doc: dict, file: Path) -> tuple[tuple[str, ...], int]:
    raw, nc = doc.get("names"), doc.get("nc")
    count = len(raw) if isinstance(raw, dict | list) else nc if isinstance(nc, int) and raw is None else 0
    if count > MAX_CLASSES:
        raise DataError(f"{file}: {'names' if raw else 'nc'}: {count:,} classes, more than the {MAX_CLASSES:,} allowed")
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DataError(f"{file}: names: keys must be class indices 0..nc-1") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{file}: names: keys must be 0..{len(keys) - 1} without gaps, got {keys[:5]}...")
        by_int = {int(k): v for k, v in raw.items()}
        names = tuple(str(by_int[k]) for k in keys)
    elif isinstance(raw, list):
        names = tuple(str(n) for n in raw)
    elif raw is None and isinstance(nc, int) and nc > 0:
        names = tuple(f"class{i}" for i in range(nc))
    else:
        raise DataError(f"{file}: names: expected a list or a {{index: name}} mapping")
    if nc is not None and nc != len(names):
        raise DataError(f"{file}: nc: {nc} does not match the {len(names)} names")
    if not names:
        raise DataError(f"{file}: names: empty")
    return names, len(names)


def _resolve_split(value: object, root: Path) -> tuple[Path, ...]:
    entries = value if isinstance(value, list) else [value]
    files: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise DataError(f"expected a path, got {entry!r}")
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file() and p.suffix.lower() == ".txt":
            found = _read_list_file(p, root)
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found = [p]
        else:
            raise DataError(f"{p} does not exist")
        if not found:
            raise DataError(f"no images found in {p}")
        files.extend(found)
    # One sorted list, as the official loader orders images (the rect batches depend on this order).
    return tuple(sorted({f.resolve() for f in files}, key=str))


def _read_list_file(p: Path, root: Path) -> list[Path]:
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line or Path(line).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        f = Path(line)
        # Official lists write "./images/x.jpg" relative to the list's folder; other relative lines to the root.
        out.append(f if f.is_absolute() else (p.parent / f if line.startswith("./") else root / f))
    return out


def load_image(path: Path, imgsz: int, augment: bool = False) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """BGR HWC uint8 with the long side resized to ``imgsz``, its original (h, w) and new (h, w).

    Shrinking uses INTER_AREA (sharper than linear for downsampling) unless augmenting; sizes round up.
    """
    refused = header_problem(path)  # the scan skipped it; a file replaced since is refused here
    if refused:
        raise DataError(refused)
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise DataError(unreadable_why(path))
    h0, w0 = im.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if (augment or r > 1) else cv2.INTER_AREA
        im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
    return im, (h0, w0), im.shape[:2]


def unreadable_why(path: Path) -> str:
    """Why an image that the scan could read cannot be read now, naming the highest folder that is gone: a
    dataset moved or deleted mid-epoch is one line about its folder, not one per image."""
    if os.path.lexists(path):
        return f"{path}: unreadable image (changed since the scan?)"
    gone, parent = None, Path(path).parent
    while parent != parent.parent and not os.path.lexists(parent):
        gone, parent = parent, parent.parent
    if gone is not None:
        return f"{gone}: dataset folder gone (moved or deleted while in use)"
    return f"{path}: no such file (deleted while in use?)"


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int],
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping aspect ratio and pad to ``new_shape`` (h, w); returns the image, (rw, rh) and (dw, dh).

    ``dw, dh`` are the padding on each side (half the total, possibly .5); ``auto`` pads only up to a
    multiple of ``stride``; ``scaleup=False`` never enlarges (validation keeps pixels as loaded).
    """
    h, w = img.shape[:2]
    th, tw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(th / h, tw / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = round(w * r), round(h * r)
    dw, dh = tw - nw, th - nh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    # An odd total pad puts the extra pixel at the bottom/right.
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, (r, r), (dw, dh)


def rect_batch_shapes(shapes: np.ndarray, imgsz: int, batch: int, stride: int = 32, pad: float = 0.5) -> np.ndarray:
    """Per-batch letterbox (h, w) for images already sorted by aspect ratio h/w.

    Each batch takes the extreme aspect ratio of its images so all fit without upscaling; sizes are
    ``ceil(ratio * imgsz / stride + pad) * stride`` (pad 0.5 keeps half a stride of border).
    """
    ar = shapes[:, 0] / shapes[:, 1]  # h / w
    nb = math.ceil(len(ar) / batch)
    out = np.ones((nb, 2))
    for i in range(nb):  # one iteration per batch, not per image
        a = ar[i * batch : (i + 1) * batch]
        lo, hi = a.min(), a.max()
        if hi < 1:
            out[i] = (hi, 1)
        elif lo > 1:
            out[i] = (1, 1 / lo)
    return (np.ceil(out * imgsz / stride + pad).astype(int) * stride).astype(np.int64)
