"""Whether the held-out split is held out: no figure may be reported as held-out when its images were trained or
selected on.

A ``test_data:`` pointing at the training folder, a yaml without ``test:`` whose ``val:`` is the study's own val,
or ``test: images/train`` in the study's data yaml each made every "held-out" figure a val or train figure, with
no word said. Files are matched by resolved path (symlinks and ``..`` followed), then by content for files of
equal size (size and the SHA-1 of their first 64 KiB: a copied folder is the same images). Reading only the
files whose size some train or val file shares keeps this to a few reads on a real dataset.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    from ..yolo.data import DataConfig

_HEAD = 64 * 1024  # bytes hashed per file: enough to tell two different images apart
_SHOWN = 3  # shared files named in a message


def held_out_split(data: DataConfig, test_cfg: DataConfig | None) -> tuple[tuple[Path, ...], str]:
    """The held-out images and where they come from: ``test_cfg`` (a ``test_data:`` yaml) gives its ``test:``,
    else its ``val:``; without it, ``data``'s own ``test:`` (empty when it has none). The one place this is
    decided (trials, ``pareto --test`` and ``check`` alike)."""
    if test_cfg is None:
        return data.test, f"{data.file} test:"
    if test_cfg.test:
        return test_cfg.test, f"{test_cfg.file} test:"
    return test_cfg.val, f"{test_cfg.file} val: (it has no test:)"


@dataclass(frozen=True)
class Leak:
    """Held-out files also in a split the study trains or selects on."""

    split: str  # "train" or "val"
    shared: tuple[Path, ...]  # the held-out files found there
    held_out: int  # how many held-out files there are

    def describe(self) -> str:
        names = ", ".join(p.name for p in self.shared[:_SHOWN])
        more = ", ..." if len(self.shared) > _SHOWN else ""
        return f"{len(self.shared)} of its {self.held_out} images are in the study's {self.split} split ({names}{more})"


def find_leaks(held_out: Sequence[Path], data: DataConfig) -> list[Leak]:
    """The study's splits (``val``, ``train``) that share files with ``held_out``, by path or by content."""
    leaks = []
    for split, files in (("val", data.val), ("train", data.train)):
        shared = _shared(held_out, files)
        if shared:
            leaks.append(Leak(split, shared, len(held_out)))
    return leaks


def check_held_out(held_out: Sequence[Path], source: str, data: DataConfig) -> list[str]:
    """Raise DataError when every held-out file is also a train or val file (no figure of it is held out); one
    warning line when only some are (the figures are reported, the user told which files leak)."""
    if not held_out:
        return []
    leaks = find_leaks(held_out, data)
    if not leaks:
        return []
    what = "; ".join(leak.describe() for leak in leaks)
    if len({p for leak in leaks for p in leak.shared}) == len(held_out):
        raise DataError(
            f"the held-out split ({source}) is not held out: {what}. Give test: images the study never trains "
            "or selects on"
        )
    return [f"the held-out split ({source}) overlaps the study's data: {what}; their figures are not held out"]


def _shared(held_out: Sequence[Path], files: Sequence[Path]) -> tuple[Path, ...]:
    """The files of ``held_out`` that are also in ``files``: the same file, or the same bytes (size, head)."""
    paths = {os.path.realpath(p) for p in files}
    same = [p for p in held_out if os.path.realpath(p) in paths]
    rest = [p for p in held_out if os.path.realpath(p) not in paths]
    by_size: dict[int, list[Path]] = {}
    for p in files:
        if (n := _size(p)) is not None:
            by_size.setdefault(n, []).append(p)
    candidates = [(p, n) for p in rest if (n := _size(p)) is not None and n in by_size]
    if candidates:
        sizes = {n for _, n in candidates}
        known = {_digest(f, n) for n in sizes for f in by_size[n]} - {None}
        same += [p for p, n in candidates if _digest(p, n) in known]
    order = {p: i for i, p in enumerate(held_out)}
    return tuple(sorted(same, key=order.__getitem__))


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None  # an unreadable file is the label scan's to report


def _digest(p: Path, size: int) -> tuple[int, str] | None:
    try:
        with open(p, "rb") as f:
            return size, hashlib.sha1(f.read(_HEAD), usedforsecurity=False).hexdigest()
    except OSError:
        return None
