"""The relative search space (``sampler.space: relative``): a trial's ratios as a perturbation of the heuristic.

Why: sampling one ratio per group from scratch (19 for the quickstart) mostly cuts some sensitive group too deep;
the warm-start allocation (one global magnitude threshold for unstructured cuts) is already good at every level.
So the sampler picks an overall ``level`` (the target sparsity of an allocation) and a bounded offset per group,
and every sample is an allocation that works, moved a little. The allocations are computed by a worker once per
study (they need the weights) on the level grid, and kept in the study record so that a resumed driver translates
the same parameters into the same ratios. The absolute ratios stay what a trial runs, logs and exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..study.dimensions import LEVEL, OFFSET_PREFIX, relative_distributions


@dataclass(frozen=True)
class RelativeSpace:
    """The allocation at each level and the per-group bounds and offset that perturb it."""

    allocations: dict[float, dict[str, float]]  # level -> group -> ratio (on the study's grid)
    bounds: dict[str, tuple[float, float]]  # group -> (low, high), as the absolute space has them
    step: float | None
    offset: float  # how far a group may move from its allocated ratio

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.allocations))

    def distributions(self) -> dict[str, Any]:
        return relative_distributions(list(self.bounds), self.levels, self.offset, self.step)

    def ratios(self, params: dict[str, Any]) -> dict[str, float]:
        """The absolute ratios of a trial's parameters: its level's allocation plus its offsets, kept in bounds."""
        level = float(params[LEVEL])
        base = self.allocations[min(self.allocations, key=lambda v: abs(v - level))]  # the grid point sampled
        return {
            g: _snap(base[g] + float(params.get(OFFSET_PREFIX + g, 0.0)), b, self.step) for g, b in self.bounds.items()
        }

    def params_for(self, level: float, ratios: dict[str, float]) -> dict[str, float]:
        """The parameters nearest to ``ratios`` at ``level`` (exact for the warm start: offsets 0). An enqueued uniform
        baseline keeps its own ratios (search.record.ATTR_RATIOS); these only tell the sampler where it lies."""
        dists = self.distributions()
        level = min(self.allocations, key=lambda v: abs(v - level))
        base = self.allocations[level]
        out: dict[str, float] = {LEVEL: level}
        for g in self.bounds:
            d = dists[OFFSET_PREFIX + g]
            out[OFFSET_PREFIX + g] = _snap(ratios[g] - base[g], (d.low, d.high), self.step)
        return out


def level_grid(bounds: dict[str, tuple[float, float]], step: float | None) -> tuple[float, ...]:
    """The levels allocations are computed at: the ratio grid from the lowest to the highest bound (11 without a
    step), each a target sparsity of the whole model."""
    lo, hi = min(b[0] for b in bounds.values()), max(b[1] for b in bounds.values())
    step = step or (hi - lo) / 10 or 1.0
    n = math.floor((hi - lo) / step + 1e-9)
    return tuple(round(lo + k * step, 10) for k in range(n + 1))


def relative_space(
    allocations: list[dict[str, float]], levels: tuple[float, ...], bounds: dict, step: float | None, offset: float
) -> RelativeSpace:
    """The space from the worker's allocations (one per level, in ``levels`` order)."""
    return RelativeSpace(dict(zip(levels, allocations)), dict(bounds), step, offset)


def _snap(value: float, bounds: tuple[float, float], step: float | None) -> float:
    """``value`` on the grid ``low + k * step`` and inside ``bounds`` (what Optuna can enqueue and a trial runs)."""
    lo, hi = bounds
    if step:
        value = lo + round((value - lo) / step) * step
    return round(min(max(value, lo), hi), 10)
