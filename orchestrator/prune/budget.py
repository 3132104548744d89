"""Structured pruning to a GFLOPs budget: a per-block sensitivity scan, then the ratio map that meets the
budget with the least predicted accuracy loss.

Uniform ratios cut the stem and the first C3 as deeply as the wide stride-2 convs that hold the FLOPs,
and those small blocks are the sensitive ones. The scan cuts one group at a time at a few ratios (the
rest intact), recovers it the same way the final cut will be recovered, and scores it (the caller's
``score``: val mAP for the CLI); each point also gives the GFLOPs that cut saves. Allocation is greedy
on that table: repeatedly take the step (one group to its next ratio) with the least predicted loss per
GFLOP saved, until the budget is met. Savings of neighbouring cuts overlap (a conv between two cut
groups loses a fraction of inputs *and* outputs), so the map is checked by cutting it for real and the
greedy walk goes on until the real GFLOPs meet the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import PruningError, UnreachableTarget


@dataclass(frozen=True)
class ScanPoint:
    """One group cut alone at one ratio: its score and its model's GFLOPs."""

    group: str
    ratio: float
    score: float
    gflops: float


@dataclass(frozen=True)
class Sensitivity:
    """The scan: the unpruned score and GFLOPs, and every (group, ratio) point."""

    base_score: float
    base_gflops: float
    points: tuple[ScanPoint, ...]
    seconds: float

    def table(self) -> dict[str, list[tuple[float, float, float]]]:
        """group -> [(ratio, predicted loss, GFLOPs saved)], ratio 0 first, losses never negative."""
        out: dict[str, list[tuple[float, float, float]]] = {}
        for p in self.points:
            out.setdefault(p.group, [(0.0, 0.0, 0.0)]).append(
                (p.ratio, max(0.0, self.base_score - p.score), self.base_gflops - p.gflops)
            )
        return {g: sorted(v) for g, v in out.items()}


@dataclass(frozen=True)
class Allocation:
    """The chosen ratio map, its measured GFLOPs (fraction of the unpruned) and predicted loss."""

    ratios: dict[str, float]
    gflops_fraction: float
    predicted_loss: float
    seconds: float
    steps: list[str] = field(default_factory=list)


def scan(
    groups: Sequence[str],
    ratios: Sequence[float],
    evaluate: Callable[[Mapping[str, float]], tuple[float, float]],
    on_point: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Cut each group alone at each ratio; ``evaluate(ratio map) -> (score, GFLOPs)`` (``{}`` = unpruned).

    ``on_point(done, total)`` after each evaluation (the unpruned model's included): a scan takes minutes."""
    t0 = time.perf_counter()
    total = 1 + len(groups) * len(ratios)
    base_score, base_gflops = evaluate({})
    if on_point is not None:
        on_point(1, total)
    points = []
    for g in groups:
        for r in ratios:
            score, gflops = evaluate({g: r})
            points.append(ScanPoint(g, float(r), float(score), float(gflops)))
            if on_point is not None:
                on_point(1 + len(points), total)
    return Sensitivity(float(base_score), float(base_gflops), tuple(points), time.perf_counter() - t0)


Levels = dict[str, list[tuple[float, float, float]]]  # group -> [(level, predicted loss, saved)], level 0 first


def _interp(table: list[tuple[float, float, float]], r: float) -> tuple[float, float]:
    """(loss, saved) at level ``r``, linear between scanned levels."""
    for (r0, l0, s0), (r1, l1, s1) in zip(table, table[1:]):
        if r0 <= r <= r1:
            t = (r - r0) / (r1 - r0) if r1 > r0 else 0.0
            return l0 + t * (l1 - l0), s0 + t * (s1 - s0)
    return table[-1][1], table[-1][2]


def predicted(table: Levels, levels: Mapping[str, float]) -> tuple[float, float]:
    """(predicted loss, saving) of a level map: the single cuts' figures added up."""
    loss = saved = 0.0
    for g, r in levels.items():
        lo, sv = _interp(table[g], r)
        loss, saved = loss + lo, saved + sv
    return loss, saved


def walk(table: Levels, step_of: Callable[[str], float]) -> Iterator[tuple[dict[str, float], str]]:
    """The greedy order both budgets share: from nothing cut, repeatedly the step (one group to its next level,
    ``step_of(group)`` further, never past its largest scanned level) with the least predicted loss per unit
    saved; yields the level map after each step (groups at 0 left out) and the step's name, until every group is
    at its largest level."""
    top = {g: t[-1][0] for g, t in table.items()}
    levels = dict.fromkeys(table, 0.0)
    while True:
        best, best_cost = None, None
        for g, r in levels.items():
            nxt = round(min(r + step_of(g), top[g]), 10)
            if nxt <= r:
                continue
            l0, s0 = _interp(table[g], r)
            l1, s1 = _interp(table[g], nxt)
            gain = s1 - s0
            cost = (l1 - l0) / gain if gain > 1e-12 else float("inf")
            if best_cost is None or cost < best_cost:
                best, best_cost = (g, nxt), cost
        if best is None:
            return
        levels[best[0]] = best[1]
        yield {g: r for g, r in levels.items() if r > 0}, f"{best[0]}={best[1]:g}"


def greedy(
    table: Levels,
    saved_enough: Callable[[float], bool],
    real_enough: Callable[[Mapping[str, float]], bool],
    step_of: Callable[[str], float],
) -> tuple[dict[str, float], list[str], bool]:
    """Along :func:`walk`, the first map whose predicted saving is enough (``saved_enough``) and whose real check
    (``real_enough``) passes; the real check runs at every step from the first predicted enough. Returns (level map,
    steps taken, whether the real check passed); the last map is every step taken when it did not."""
    if real_enough({}):
        return {}, [], True
    chosen: dict[str, float] = {}
    steps: list[str] = []
    for levels, step in walk(table, step_of):
        chosen = levels
        steps.append(step)
        if saved_enough(predicted(table, levels)[1]) and real_enough(levels):
            return chosen, steps, True
    return chosen, steps, False


def allocate(
    sens: Sensitivity,
    target: float,
    gflops_of: Callable[[Mapping[str, float]], float],
    step: float = 0.05,
) -> Allocation:
    """Greedy ratio map whose real GFLOPs (``gflops_of(map)``) are at most ``target`` x the unpruned's.

    Ratios move on a ``step`` grid up to the largest scanned ratio (never extrapolated). Raises
    :class:`PruningError` naming ``--target-gflops`` when even the largest scanned cut of every group
    does not reach the target.
    """
    if not 0 < target <= 1:
        raise PruningError(f"--target-gflops must be in (0, 1], got {target:g}")
    t0 = time.perf_counter()
    table = sens.table()
    goal = target * sens.base_gflops
    real = [sens.base_gflops]

    def real_enough(ratios: Mapping[str, float]) -> bool:
        real[0] = gflops_of(ratios)
        return real[0] <= goal

    chosen, steps, met = greedy(table, lambda saved: sens.base_gflops - saved <= goal, real_enough, lambda _: step)
    if not met:
        raise UnreachableTarget(
            f"--target-gflops {target:g} is unreachable: cutting every group by its largest scanned ratio "
            f"leaves {real[0] / sens.base_gflops:.3f}x; scan larger ratios or ask for more"
        )
    loss = predicted(table, chosen)[0]
    return Allocation(chosen, real[0] / sens.base_gflops, loss, time.perf_counter() - t0, steps)
