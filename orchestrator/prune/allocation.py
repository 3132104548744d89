"""Per-group ratios that one global L1 threshold would give: a prior for the per-group search.

Uniform ratios (the official ``prune()``) cut every layer by the same fraction, so the small, sensitive
layers (the stem, C3 bottleneck 1x1s) lose as much as the large 3x3 convs. On yolov5n at 320 px (64 val
images, no fine-tune) uniform 50% keeps mAP50-95 0.026; the same 50% allocated by a global magnitude
threshold and applied as per-block ratios on a 0.05 grid keeps 0.212 (``bench/bench_allocation.py``).
The sweep enqueues these allocations so the sampler starts from them instead of discovering by chance
which groups can take deep cuts.

The ratios are snapped to the search space's grid and clipped to each group's bounds, and the
threshold is the smallest whose snapped ratios remove at least as many weights as the uniform ratio
would: an allocation is never larger (in nonzero weights) than the uniform baseline it is paired with,
unless the bounds cap the cut (then every group gets the most its bounds allow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import PruningError
from .convs import conv_layers


def _removed(ratio: float, n: int) -> int:
    return round(ratio * n)  # what torch.nn.utils.prune removes for an amount given as a fraction


def snap_ratio(frac: float, bounds: tuple[float, float], step: float | None) -> float:
    """``frac`` on the search grid (``low + k * step``) and inside ``bounds``: a ratio Optuna can enqueue."""
    lo, hi = bounds
    if step:
        frac = lo + round((frac - lo) / step) * step
        hi = lo + math.floor((hi - lo) / step + 1e-9) * step
    return round(min(max(frac, lo), hi), 10)


def magnitude_allocation(
    model: nn.Module,
    groups: Mapping[str, Sequence[str]],
    target: float,
    bounds: Mapping[str, tuple[float, float]],
    step: float | None = None,
) -> dict[str, float]:
    """Group -> ratio from one L1 threshold over every grouped conv, removing at least ``target`` of them.

    ``groups`` maps group names to conv names (as :func:`prunable_groups` gives them); ``bounds`` gives
    each group's (low, high); ``step`` the grid ratios are snapped to (``low + k * step``).
    """
    if not 0 <= target < 1:
        raise PruningError(f"target sparsity must be >= 0 and < 1, got {target:g}")
    convs = conv_layers(model)
    with torch.no_grad():
        sorted_mags = {
            g: torch.cat([convs[c].weight.detach().abs().flatten() for c in cs]).float().sort().values
            for g, cs in groups.items()
        }
    sizes = {g: [convs[c].weight.numel() for c in cs] for g, cs in groups.items()}
    need = sum(_removed(target, n) for ns in sizes.values() for n in ns)

    def snap(g: str, frac: float) -> float:
        return snap_ratio(frac, bounds[g], step)

    def ratios_at(threshold: float) -> dict[str, float]:
        out = {}
        for g, m in sorted_mags.items():
            below = int(torch.searchsorted(m, torch.tensor(threshold, dtype=m.dtype), right=True))
            out[g] = snap(g, below / m.numel())
        return out

    def removed(ratios: dict[str, float]) -> int:
        return sum(_removed(ratios[g], n) for g, ns in sizes.items() for n in ns)

    lo_t, hi_t = -1.0, max(float(m[-1]) for m in sorted_mags.values()) + 1.0
    if removed(ratios_at(hi_t)) < need:  # the bounds cap the cut: the best that fits
        return ratios_at(hi_t)
    for _ in range(64):  # removed() grows with the threshold: bisect for the smallest that is enough
        mid = (lo_t + hi_t) / 2
        if removed(ratios_at(mid)) >= need:
            hi_t = mid
        else:
            lo_t = mid
    return ratios_at(hi_t)
