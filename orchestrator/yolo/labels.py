"""Label files checked once per split: every image readable and not too large, every line valid, results cached.

Kept apart from the image pipeline (data.py) because at scale it is its own job: a 100k-image split is
scanned once, then read back from its cache keyed by paths, sizes and mtimes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# OpenCV's own "[ WARN:0@0.1] ... imread_('x.jpg'): can't open/read file" lines go to stderr beside ours: each
# unreadable file is named once by the scan's problem list instead. Set at import, so loader processes have it too.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# PIL's own refusal threshold (twice Image.MAX_IMAGE_PIXELS), which official YOLOv5 meets through PIL; OpenCV's
# is 2**30. A 20000x20000 PNG of 1.1 MB decodes to 1.2 GB (3 GB on the way), up to 8 at once in the label scan.
MAX_PIXELS = 178_956_970
# 2: images above MAX_PIXELS are skipped (a cache of version 1 may hold one); 3: truncated JPEGs, label folders and
# label files shared by two images are problems
_CACHE_VERSION = 3
# A JPEG's end-of-image marker (FF D9) is looked for in this many last bytes: a camera or an editor may pad after it.
_JPEG_TAIL = 1024
# Labels a hair outside [0, 1] (rounding in converters) are clipped rather than refused.
_COORD_TOLERANCE = 1e-3


def label_path(image: Path) -> Path:
    """The YOLO label file of an image: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    return Path(_label_file(str(image)))


def _label_file(image: str) -> str:
    """:func:`label_path` on strings: a 100k-image split's cached scan must not spend seconds parsing Paths."""
    sep = os.sep
    cut = image.rfind(f"{sep}images{sep}")
    if cut >= 0:
        image = f"{image[:cut]}{sep}labels{sep}{image[cut + 8 :]}"
    elif image.startswith(f"images{sep}"):
        image = f"labels{sep}{image[7:]}"
    folder, name = os.path.split(image)
    dot = name.rfind(".")
    stem = name[:dot] if 0 < dot < len(name) - 1 else name  # Path.suffix's rule: a dot file keeps its name
    return os.path.join(folder, f"{stem}.txt") if folder else f"{stem}.txt"


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
    images = [p if isinstance(p, Path) else Path(p) for p in images]
    names = [str(p) for p in images]
    lbl_names = [_label_file(s) for s in names]
    key = _cache_key(names, lbl_names, nc)
    cache = (cache_dir if cache_dir is not None else default_cache_dir()) / "labels" / f"{key}.npz"
    cached = _read_cache(cache, images)
    if isinstance(cached, LabeledImages):
        return cached
    if cached:  # a damaged cache: said once, then scanned again and rewritten (it was a traceback on every run)
        print(f"note: {cache}: damaged label cache ({cached}); labels scanned again", file=sys.stderr)
    lbls = [Path(s) for s in lbl_names]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        work = pool.map(lambda a: _check_one(a[0], a[1], nc), zip(images, lbls))
        checked = list(_with_progress(work, len(images), f"checking {len(images):,} images and labels"))
    keep = [i for i, (shape, _, _) in enumerate(checked) if shape is not None]
    problems = tuple(p for _, _, probs in checked for p in probs) + shared_labels(names, lbl_names)
    result = LabeledImages(
        files=tuple(images[i] for i in keep),
        labels=tuple(checked[i][1] for i in keep),
        shapes=np.array([checked[i][0] for i in keep], dtype=np.int64).reshape(-1, 2),
        problems=problems,
    )
    _write_cache(cache, images, keep, result)
    return result


SHARED_LABEL = "is the label file of"  # how a shared label file's problem reads (``study.checks`` counts them)


def shared_labels(images: Sequence[str], lbls: Sequence[str]) -> tuple[str, ...]:
    """One problem per label file that two images use (``a.jpg`` and ``a.png`` both read ``a.txt``): the boxes
    are one image's, and the other is scored against them. Both are kept, as the official loader keeps them."""
    by_label: dict[str, list[str]] = {}
    for image, lbl in zip(images, lbls):
        by_label.setdefault(lbl, []).append(image)
    return tuple(
        f"{lbl}: {SHARED_LABEL} {' and '.join(users)}; both images use its boxes"
        for lbl, users in by_label.items()
        if len(users) > 1 and os.path.isfile(lbl)
    )


def _with_progress(items: Iterable, total: int, what: str) -> Iterator:
    """``items`` as they come, with a bar on a terminal's stderr: a first scan of COCO takes minutes, and a
    silent minute looks like a hang. Nothing when stderr is not a terminal (logs, pipes, ``--json``)."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _stat(p: str) -> tuple[int, int]:
    try:
        s = os.stat(p)
        return s.st_size, s.st_mtime_ns
    except OSError:
        return -1, -1


def _cache_key(images: Sequence[str], lbls: Sequence[str], nc: int) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} nc={nc}\n".encode())
    for im, lb in zip(images, lbls):
        h.update(f"{im}|{_stat(im)}|{lb}|{_stat(lb)}\n".encode())
    return h.hexdigest()[:32]


def _check_one(image: Path, lbl: Path, nc: int) -> tuple[tuple[int, int] | None, np.ndarray, list[str]]:
    """(original h, w), or None when the image must be skipped; the label rows; the problems found."""
    empty = np.zeros((0, 5), np.float32)
    refused = header_problem(image)
    if refused:
        return None, empty, [f"{refused}; skipped"]
    try:
        im = cv2.imread(str(image), cv2.IMREAD_COLOR)
    except cv2.error:
        im = None
    if im is None:
        why = "no such file" if not os.path.lexists(image) else "unreadable image (corrupt or not an image)"
        return None, empty, [f"{image}: {why}; skipped"]
    h, w = im.shape[:2]
    if h < 10 or w < 10:
        return None, empty, [f"{image}: image smaller than 10 px ({w}x{h}); skipped"]
    if not os.path.lexists(lbl):
        return (h, w), empty, []  # background image: no objects
    if not lbl.is_file():  # a folder (or a pipe that would block the scan) is no label file, nor a background
        kind = "a folder" if lbl.is_dir() else "not a regular file"
        return None, empty, [f"{lbl}: label path is {kind}; image skipped"]
    try:
        text = lbl.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return None, empty, [f"{lbl}: unreadable label file ({type(e).__name__}); image skipped"]
    rows, problems, usable = _parse_label_text(text, nc, lbl)
    return ((h, w) if usable else None), rows, problems


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


def _read_cache(cache: Path, images: Sequence[Path]) -> LabeledImages | str:
    """The cached scan; else '' when there is none, or why it cannot be used (the files are then scanned again
    and the cache rewritten): an empty file (a killed write), a file that is no zip, arrays that do not fit."""
    if not os.path.lexists(cache):
        return ""
    try:
        with np.load(cache, allow_pickle=False) as z:
            keep, counts, rows, shapes = z["keep"], z["counts"], z["rows"], z["shapes"]
            problems = tuple(json.loads(str(z["problems"])))
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:  # JSON errors: ValueError
        return _short_reason(e, cache)
    if not _cache_fits(keep, counts, rows, shapes, len(images)) or not all(isinstance(p, str) for p in problems):
        return "its arrays do not describe these images"
    labels = tuple(np.split(rows, np.cumsum(counts)[:-1])) if len(counts) else ()
    return LabeledImages(tuple(images[i] for i in keep), labels, shapes, problems)


def _short_reason(e: Exception, cache: Path) -> str:
    """Why a cache file did not load, in a few words on one line (numpy's messages can be long or empty)."""
    if isinstance(e, EOFError) or (isinstance(e, OSError) and cache.stat().st_size == 0):
        return "an empty file"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {first[:120]}"


def _cache_fits(keep: np.ndarray, counts: np.ndarray, rows: np.ndarray, shapes: np.ndarray, n: int) -> bool:
    """Whether cached arrays describe ``n`` images: a damaged cache must cost a rescan, not an IndexError."""
    k = len(keep)
    return (
        keep.ndim == counts.ndim == 1
        and keep.dtype.kind == counts.dtype.kind == "i"
        and len(counts) == k
        and shapes.shape == (k, 2)
        and rows.ndim == 2
        and rows.shape[1] == 5
        and bool(np.all((keep >= 0) & (keep < n)))
        and bool(np.all(counts >= 0))
        and int(counts.sum()) == len(rows)
    )


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


def header_problem(image: Path) -> str | None:
    """Why ``image`` must not be decoded, from its first and last bytes: too many pixels, or a truncated JPEG."""
    return oversized(image) or truncated_jpeg(image)


def truncated_jpeg(image: Path) -> str | None:
    """Why ``image`` is refused when it is a JPEG cut short (a copy or download that stopped), else None.

    libjpeg decodes such a file anyway, grey below the cut, and prints an anonymous "Premature end of JPEG
    file" on stderr; its boxes then score against a half-grey picture (issue 27: mAP 0.3657 -> 0.3159 for one
    such file). A complete JPEG ends with the end-of-image marker FF D9, perhaps followed by padding; inside
    the compressed data an FF byte is always escaped, so FF D9 in the last bytes is the marker.
    """
    try:
        with open(image, "rb") as f:
            if f.read(2) != b"\xff\xd8":  # not a JPEG: nothing to say here
                return None
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _JPEG_TAIL, 2))
            tail = f.read()
    except OSError:  # unreadable: OpenCV reports it
        return None
    if b"\xff\xd9" in tail:
        return None
    return f"{image}: truncated JPEG (no end-of-image marker; a copy cut short?)"


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
