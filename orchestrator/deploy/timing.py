"""Two models timed side by side, run by run, so noise common to a pair cancels in their ratio."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Timer = Callable[[Callable[[], Any]], float]  # runs the callable once, returns its ms


@dataclass(frozen=True)
class Timing:
    """Median ms of the model, of the baseline (if any), and the median per-pair ratio baseline/model."""

    ms: float
    baseline_ms: float | None
    speedup: float | None


def time_interleaved(
    run: Callable[[], Any], baseline: Callable[[], Any] | None, *, runs: int, warmup: int, timer: Timer
) -> Timing:
    """Warm both up, then time them alternately; which goes first alternates too (neither always runs warm)."""
    for _ in range(warmup):
        run()
        if baseline is not None:
            baseline()
    ts: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        order = [(run, ts), (baseline, tb)] if i % 2 else [(baseline, tb), (run, ts)]
        for fn, out in order:
            if fn is not None:
                out.append(timer(fn))
    ms = statistics.median(ts)
    if baseline is None:
        return Timing(ms, None, None)
    return Timing(ms, statistics.median(tb), statistics.median(b / t for b, t in zip(tb, ts)))
