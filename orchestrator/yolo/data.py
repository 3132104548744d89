"""YOLOv5 datasets: the data yaml, YOLO txt labels (checked and cached), image loading and letterbox.

Bad input is never a crash and never silent: a data yaml that cannot be used raises :class:`DataError`
naming the file and key; an unreadable image or a malformed label line is listed in
``LabeledImages.problems`` and that image is skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..bounded_yaml import YamlRefused, read_yaml
from ..errors import DataError

IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"})
_CACHE_VERSION = 2  # 2: images above MAX_PIXELS are skipped (a cache of version 1 may hold one)
# PIL's own refusal threshold (twice Image.MAX_IMAGE_PIXELS), which official YOLOv5 meets through PIL; OpenCV's
# is 2**30. A 20000x20000 PNG of 1.1 MB decodes to 1.2 GB (3 GB on the way), up to 8 at once in the label scan.
MAX_PIXELS = 178_956_970
# Labels a hair outside [0, 1] (rounding in converters) are clipped rather than refused.
_COORD_TOLERANCE = 1e-3
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


def label_path(image: Path) -> Path:
    """The YOLO label file of an image: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


@dataclass(frozen=True)
class LabeledImages:
    """Images that can be used, with their labels; everything skipped is in ``problems``."""

    files: tuple[Path, ...]
    labels: tuple[np.ndarray, ...]  # each (n, 5) float32: cls, cx, cy, w, h normalised
    shapes: np.ndarray  # (n, 2) int original (h, w)
    problems: tuple[str, ...]  # "path: reason" for every skipped image / label line

    @property
    def instances(self) -> int:
        return int(sum(len(lb) for lb in self.labels))


def default_cache_dir() -> Path:
    """``$ORCHESTRATOR_CACHE``, else ``$XDG_CACHE_HOME/orchestrator`` (``~/.cache/orchestrator``).

    Caches never go into a dataset folder: it may be read-only or shared.
    """
    env = os.environ.get("ORCHESTRATOR_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator"


def scan_labels(images: Sequence[Path], nc: int, cache_dir: Path | None = None) -> LabeledImages:
    """Check every image and label file once; a second scan of unchanged files is read from the cache.

    The cache key covers the image and label paths, sizes and mtimes and ``nc``; it lives in
    ``cache_dir/labels`` (default :func:`default_cache_dir`). An unwritable cache is not an error.
    """
    images = [Path(p) for p in images]
    lbls = [label_path(p) for p in images]
    key = _cache_key(images, lbls, nc)
    cache = (cache_dir if cache_dir is not None else default_cache_dir()) / "labels" / f"{key}.npz"
    cached = _read_cache(cache, images)
    if cached is not None:
        return cached
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = list(pool.map(lambda a: _check_one(a[0], a[1], nc), zip(images, lbls)))
    keep = [i for i, (shape, _, _) in enumerate(checked) if shape is not None]
    problems = tuple(p for _, _, probs in checked for p in probs)
    result = LabeledImages(
        files=tuple(images[i] for i in keep),
        labels=tuple(checked[i][1] for i in keep),
        shapes=np.array([checked[i][0] for i in keep], dtype=np.int64).reshape(-1, 2),
        problems=problems,
    )
    _write_cache(cache, images, keep, result)
    return result


def _stat(p: Path) -> tuple[int, int]:
    try:
        s = p.stat()
        return s.st_size, s.st_mtime_ns
    except OSError:
        return -1, -1


def _cache_key(images: Sequence[Path], lbls: Sequence[Path], nc: int) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} nc={nc}\n".encode())
    for im, lb in zip(images, lbls):
        h.update(f"{im}|{_stat(im)}|{lb}|{_stat(lb)}\n".encode())
    return h.hexdigest()[:32]


def _check_one(image: Path, lbl: Path, nc: int) -> tuple[tuple[int, int] | None, np.ndarray, list[str]]:
    """(original h, w), or None when the image must be skipped; the label rows; the problems found."""
    empty = np.zeros((0, 5), np.float32)
    too_large = oversized(image)
    if too_large:
        return None, empty, [f"{too_large}; skipped"]
    try:
        im = cv2.imread(str(image), cv2.IMREAD_COLOR)
    except cv2.error:
        im = None
    if im is None:
        return None, empty, [f"{image}: unreadable image (missing, corrupt or not an image); skipped"]
    h, w = im.shape[:2]
    if h < 10 or w < 10:
        return None, empty, [f"{image}: image smaller than 10 px ({w}x{h}); skipped"]
    if not lbl.is_file():
        return (h, w), empty, []  # background image: no objects
    try:
        text = lbl.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return None, empty, [f"{lbl}: unreadable label file ({type(e).__name__}); image skipped"]
    rows, problems, usable = _parse_label_text(text, nc, lbl)
    return ((h, w) if usable else None), rows, problems


def oversized(image: Path) -> str | None:
    """Why ``image`` is refused unread, from its header alone, when it holds more than :data:`MAX_PIXELS`.

    Decoding is what costs: PIL reads the size from the header without it. A file PIL cannot open is left to
    OpenCV, which reports unreadable files (and has its own, higher, limit).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: we decide here
            with Image.open(image) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:  # PIL refuses to open one twice its own limit: our limit too
        n = "".join(c for c in str(e).split(" pixels")[0] if c.isdigit())
        size = f"{int(n) / 1e6:.0f}-megapixel" if n else "oversized"
        return f"{image}: {size} image, above the limit of {MAX_PIXELS / 1e6:.0f} megapixels (a decompression bomb?)"
    except Exception:  # not an image PIL knows (or unreadable): OpenCV decides and reports
        return None
    if w * h > MAX_PIXELS:
        return (
            f"{image}: {w}x{h} image of {w * h / 1e6:.0f} megapixels, above the limit of {MAX_PIXELS / 1e6:.0f} "
            "megapixels (a decompression bomb?)"
        )
    return None


def _parse_label_text(text: str, nc: int, where: Path) -> tuple[np.ndarray, list[str], bool]:
    """Rows, problems, and whether the image is usable: one bad line skips the image, as the official
    loader does, because keeping the rest would score the unlabeled object's detections as false positives."""
    rows: list[list[float]] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        bad = _bad_line(fields, nc)
        if bad:
            problems.append(f"{where}:{n}: {bad}; image skipped")
            continue
        values = [float(v) for v in fields]
        if len(values) > 5:  # a polygon (segment label): its bounding box
            xy = np.array(values[1:]).reshape(-1, 2)
            lo, hi = xy.min(0), xy.max(0)
            values = [values[0], *((lo + hi) / 2), *(hi - lo)]
        rows.append(values)
    if problems:
        return np.zeros((0, 5), np.float32), problems, False
    if not rows:
        return np.zeros((0, 5), np.float32), problems, True
    arr = np.array(rows, dtype=np.float32)
    arr[:, 1:] = np.clip(arr[:, 1:], 0.0, 1.0)
    _, first = np.unique(arr, axis=0, return_index=True)
    if len(first) < len(arr):  # a repeated box would count as a missed object
        problems.append(f"{where}: {len(arr) - len(first)} duplicate label rows removed")
        arr = arr[np.sort(first)]
    return arr, problems, True


def _bad_line(fields: list[str], nc: int) -> str:
    """Why a label line cannot be used ('' if it can)."""
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        return f"expected 5 numbers (class cx cy w h), found {len(fields)}"
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return f"not a number in {' '.join(fields)!r}"
    if not all(math.isfinite(v) for v in values):
        return "non-finite number"
    c = values[0]
    if c != int(c) or not 0 <= c < nc:
        return f"class {fields[0]} is not an integer in 0..{nc - 1}"
    coords = values[1:]
    if min(coords) < -_COORD_TOLERANCE or max(coords) > 1 + _COORD_TOLERANCE:
        return "coordinates outside [0, 1] (labels must be normalised by the image size)"
    if len(values) == 5 and (values[3] <= 0 or values[4] <= 0):
        return "box width and height must be > 0"
    return ""


def _read_cache(cache: Path, images: Sequence[Path]) -> LabeledImages | None:
    try:
        with np.load(cache, allow_pickle=False) as z:
            keep, counts, rows, shapes = z["keep"], z["counts"], z["rows"], z["shapes"]
            problems = tuple(json.loads(str(z["problems"])))
    except (OSError, KeyError, ValueError):
        return None
    labels = tuple(np.split(rows, np.cumsum(counts)[:-1])) if len(counts) else ()
    return LabeledImages(tuple(images[i] for i in keep), labels, shapes, problems)


def _write_cache(cache: Path, images: Sequence[Path], keep: list[int], result: LabeledImages) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        rows = np.concatenate(result.labels) if result.labels else np.zeros((0, 5), np.float32)
        np.savez(
            tmp,
            keep=np.array(keep, dtype=np.int64),
            counts=np.array([len(lb) for lb in result.labels], dtype=np.int64),
            rows=rows.astype(np.float32),
            shapes=result.shapes,
            problems=np.array(json.dumps(list(result.problems))),
        )
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home or full disk only costs the next scan its speed


def load_image(path: Path, imgsz: int, augment: bool = False) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """BGR HWC uint8 with the long side resized to ``imgsz``, its original (h, w) and new (h, w).

    Shrinking uses INTER_AREA (sharper than linear for downsampling) unless augmenting; sizes round up.
    """
    too_large = oversized(path)  # the scan skipped it; a file replaced since is refused here
    if too_large:
        raise DataError(too_large)
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise DataError(f"{path}: unreadable image")
    h0, w0 = im.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if (augment or r > 1) else cv2.INTER_AREA
        im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
    return im, (h0, w0), im.shape[:2]


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
