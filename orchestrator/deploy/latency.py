"""What each single cut saves in ONNX Runtime on this machine: the latency table a ``--target-speedup`` ranks by.

FLOPs do not say where the milliseconds go on a CPU: a wide stride-2 conv and a 1x1 conv in the neck can cost
the same FLOPs and very different times, and a channel count that is not a multiple of the kernels' block size
saves less than its FLOPs say. So every single cut is measured instead: each channel group at each scan ratio
(the rest intact) and each bottleneck dropped alone, exported to ONNX in memory and timed run by run against
the unpruned model's ONNX (median of the per-pair ratios, so noise common to a pair cancels). Widths and depth
alone decide the time, so the cuts here are plain (L1, no recovery).

A saving depends on the model file, the input size, the thread count, the granularity, the rounding, the CPU and
ONNX Runtime's version, and on nothing else (not the data): the points are kept as JSON under the cache folder in
one file per such key, each point under its cut (group and ratio, or bottleneck), so the next
``prune --target-speedup`` on the same model reads them back at once and times only cuts it has not seen (other
scan ratios, a bottleneck ranked in for the first time).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..prune.apply import apply_ratios
from ..prune.depth import drop_bottlenecks, without_dropped
from ..yolo.model import copy_model

TIMING_RUNS = 40  # pairs per timing: a few ms each at 320 px, so a cut is timed in about a second
TIMING_WARMUP = 5


@dataclass(frozen=True)
class LatencyTable:
    """The unpruned model's ms, then the ms each single cut saves: ``channel[group][ratio]`` and
    ``depth["model.4.m.1"]`` (a bottleneck dropped alone). A saving may be negative: some widths run slower."""

    key: str
    base_ms: float
    channel: dict[str, dict[float, float]]
    depth: dict[str, float]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["channel"] = {g: [[r, ms] for r, ms in sorted(v.items())] for g, v in self.channel.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LatencyTable:
        channel = {str(g): {float(r): float(ms) for r, ms in v} for g, v in doc["channel"].items()}
        depth = {str(k): float(v) for k, v in doc["depth"].items()}
        return cls(str(doc["key"]), float(doc["base_ms"]), channel, depth, float(doc["seconds"]))


def cpu_name() -> str:
    """The CPU's model string (a table measured on another CPU says nothing about this one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_key(weights: Path, imgsz: int, threads: int, granularity: str, round_to: int | None) -> str:
    """A hash of everything a saving depends on but the cut itself: the model file's bytes, the input size, the
    threads, the granularity (what a group name means), the rounding, the CPU and ONNX Runtime's version."""
    import onnxruntime

    h = hashlib.sha256(Path(weights).read_bytes())
    h.update(json.dumps([imgsz, threads, granularity, round_to, cpu_name(), onnxruntime.__version__]).encode())
    return h.hexdigest()[:24]


def plain_cut(
    model: nn.Module,
    ratios: Mapping[str, float],
    drop: Mapping[str, Sequence[int]],
    granularity: str,
    round_to: int | None = None,
) -> nn.Module:
    """A copy with the bottlenecks ``drop`` names removed, then channels cut by ``ratios`` (L1, no recovery): the
    shape of the model a recovered cut gives, which is all its latency depends on."""
    m = copy_model(model)
    if drop:
        drop_bottlenecks(m, drop)
        ratios = without_dropped(m, ratios, granularity, "structured")
    if ratios:
        apply_ratios(m, ratios, method="structured", granularity=granularity, round_to=round_to)
    return m.eval()


class SpeedupTimer:
    """The unpruned model's ONNX Runtime session, kept open, and models timed against it interleaved."""

    def __init__(self, model: nn.Module, imgsz: int, threads: int, runs: int = TIMING_RUNS):
        from .export import onnx_bytes
        from .ort_runtime import open_session

        self.imgsz, self.threads, self.runs = imgsz, threads, runs
        self.base = open_session(onnx_bytes(model, imgsz=imgsz), threads=threads)

    def time(self, model: nn.Module) -> tuple[float, float]:
        """(speed-up over the unpruned model, the unpruned model's median ms in these pairs)."""
        from .export import onnx_bytes
        from .ort_runtime import open_session, time_sessions

        sess = open_session(onnx_bytes(model, imgsz=self.imgsz), threads=self.threads)
        t = time_sessions(sess, self.base, self.imgsz, runs=self.runs, warmup=TIMING_WARMUP, threads=self.threads)
        return float(t.speedup), float(t.baseline_ms)

    def saved_ms(self, model: nn.Module) -> tuple[float, float]:
        """(ms ``model`` saves over the unpruned one, the unpruned ms): from the median per-pair ratio."""
        speedup, base = self.time(model)
        return base - base / speedup, base


def measure_table(
    model: nn.Module,
    timer: SpeedupTimer,
    groups: Sequence[str],
    ratios: Sequence[float],
    drops: Sequence[str],
    granularity: str,
    round_to: int | None = None,
    known: LatencyTable | None = None,
    on_point: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Time every single cut ``known`` lacks against the unpruned model (see the module doc): each of ``groups``
    at each of ``ratios``, each bottleneck of ``drops`` (``model.4.m.1``) alone; ``on_point(done, total)`` after
    each. The result holds ``known``'s points too."""
    t0 = time.perf_counter()
    channel = {g: dict(v) for g, v in (known.channel if known else {}).items()}
    depth = dict(known.depth if known else {})
    todo = [(g, float(r)) for g in groups for r in ratios if float(r) not in channel.get(g, {})]
    todo_depth = [d for d in drops if d not in depth]
    bases = [known.base_ms] if known else []
    total = len(todo) + len(todo_depth)
    for i, (g, r) in enumerate(todo):
        channel.setdefault(g, {})[r], base = timer.saved_ms(plain_cut(model, {g: r}, {}, granularity, round_to))
        bases.append(base)
        if on_point is not None:
            on_point(i + 1, total)
    for i, d in enumerate(todo_depth):
        block, _, j = d.rpartition(".m.")
        depth[d], base = timer.saved_ms(plain_cut(model, {}, {block: [int(j)]}, granularity, round_to))
        bases.append(base)
        if on_point is not None:
            on_point(len(todo) + i + 1, total)
    base_ms = sorted(bases)[len(bases) // 2] if bases else timer.time(model)[1]
    seconds = (known.seconds if known else 0.0) + time.perf_counter() - t0
    return LatencyTable(known.key if known else "", base_ms, channel, depth, seconds)


def cached_table(
    weights: Path,
    model: nn.Module,
    timer: SpeedupTimer,
    groups: Sequence[str],
    ratios: Sequence[float],
    drops: Sequence[str],
    granularity: str,
    round_to: int | None,
    cache: Path,
    on_point: Callable[[int, int], None] | None = None,
) -> tuple[LatencyTable, int]:
    """The table for these cuts: the points measured before for the same key read from the cache, the missing
    ones measured and the file rewritten with them; (table, how many points were timed now). An unreadable or
    unwritable cache only costs a measurement."""
    key = table_key(weights, timer.imgsz, timer.threads, granularity, round_to)
    path = cache / "latency" / f"{key}.json"
    known: LatencyTable | None
    try:
        known = LatencyTable.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        known = None
    counted: list[int] = [0]

    def point(done: int, total: int) -> None:
        counted[0] = done
        if on_point is not None:
            on_point(done, total)

    table = measure_table(model, timer, groups, ratios, drops, granularity, round_to, known, point)
    table = LatencyTable(key, table.base_ms, table.channel, table.depth, table.seconds)
    if counted[0]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table.to_json()))
            tmp.replace(path)
        except OSError:
            pass
    return table, counted[0]
