"""Scan + allocate for ``orchestrator prune --target-speedup``: cuts ranked by milliseconds saved, not FLOPs.

Candidate steps are a channel group to its next ratio and one more bottleneck dropped (the least missed first, as
``--depth N`` drops them). A step's saving is what the latency table measured for that cut alone on this machine
(:mod:`.latency`); its predicted loss is the sensitivity scan's (val split): channel groups cut alone with
compensation, as for ``--target-gflops``, and the ``k`` least missed bottlenecks dropped with their layers
after refit (reconstruct), for each ``k``. The greedy order of :func:`.budget.walk` takes the step with the least
predicted loss per millisecond, to the end (every group at its largest scanned ratio, every ranked bottleneck
dropped: the ceiling, timed first, so an unreachable target is refused before the scan). Single-cut savings
do not add up (neighbouring cuts overlap, timings are noisy), so the table only picks the first map to time:
the shortest prefix of the walk whose plain cut runs ``target`` x as fast as the unpruned model (ONNX Runtime,
interleaved) is found by bisection from there, in about ``log2(steps)`` timings.

Input size is not a lever here: a checkpoint does not fix the size it runs at (``export --imgsz`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import PruningError, UnreachableTarget
from ..prune.budget import Levels, predicted, walk
from ..prune.budget_cut import sensitivity, val_set_of
from ..prune.depth import plan_total
from ..prune.layers import prunable_groups
from ..prune.oneshot import OneShot
from ..yolo.data import DataConfig
from ..yolo.val import validate
from .latency import TIMING_RUNS, LatencyTable, SpeedupTimer, cached_table, plain_cut

DEPTH = "depth"  # the level map's key for how many of the least missed bottlenecks go
CHANNEL_STEP = 0.05


def check_target(target: float) -> None:
    """A speed-up is over the unpruned model: at most 1 asks for nothing (or for a slower model)."""
    if not target > 1:
        raise PruningError(f"--target-speedup must be > 1 (a speed-up over the unpruned model), got {target:g}")


def cut_to_speedup(
    shot: OneShot,
    data: DataConfig,
    weights: Path,
    target: float,
    scan_ratios: Sequence[float],
    granularity: str,
    importance: str,
    steps: Sequence[str],
    imgsz: int,
    threads: int,
    round_to: int | None = None,
    max_depth: int | None = None,
    groups: Sequence[str] | None = None,
    runs: int = TIMING_RUNS,
    on_table: Callable[[int, int], None] | None = None,
    on_point: Callable[[int, int], None] | None = None,
    timer: SpeedupTimer | None = None,
    memo: dict[str, Any] | None = None,
    *,
    cache: Path,
) -> dict[str, Any]:
    """The latency table (cached), the sensitivity scan, then the cut meeting ``target`` x the unpruned model's
    speed in ONNX Runtime (``threads`` threads, ``imgsz`` px) with the least predicted loss; a JSON-able summary.

    ``max_depth``: at most that many bottlenecks dropped (0: channel cuts only; default every one).
    ``on_table`` / ``on_point``: progress of the timings and of the scan. ``timer``: an open one to time against
    (else one is opened); ``memo``: a dict that keeps the scan for the next call on the same model and data (a
    study's warm start asks for several targets). Raises :class:`UnreachableTarget`
    naming ``--target-speedup`` (before the scan when even every scanned cut together falls short).
    """
    check_target(target)
    t0 = time.perf_counter()
    model = shot.model
    groups = list(groups or prunable_groups(model, granularity, method="structured"))
    ranking = [] if max_depth == 0 or not _has_c3(model) else shot.ranking[:max_depth]
    drops = [f"{r.block}.m.{r.index}" for r in ranking]
    timer = timer or SpeedupTimer(model, imgsz, threads, runs)
    table, timed = cached_table(
        weights, model, timer, groups, scan_ratios, drops, granularity, round_to, cache, on_point=on_table
    )
    table_s = time.perf_counter() - t0

    def plan(levels: Mapping[str, float]) -> tuple[dict[str, float], dict[str, list[int]]]:
        k = int(levels.get(DEPTH, 0))
        return {g: r for g, r in levels.items() if g != DEPTH}, plan_total(ranking, k) if k else {}

    measured: list[float] = []

    def real_enough(chosen: Mapping[str, float]) -> bool:
        ratios, drop = plan(chosen)
        measured.append(timer.time(plain_cut(model, ratios, drop, granularity, round_to))[0])
        return measured[-1] >= target

    top = max(scan_ratios)
    everything = {**dict.fromkeys(groups, top), **({DEPTH: float(len(ranking))} if ranking else {})}
    if not real_enough(everything):
        raise UnreachableTarget(
            f"--target-speedup {target:g} is unreachable: every scanned cut together (each group cut {top:g}, "
            f"{len(ranking)} bottlenecks dropped) runs {measured[-1]:.2f}x as fast as the unpruned model; "
            "ask for less or scan larger ratios"
        )
    ceiling = measured[-1]
    t1 = time.perf_counter()
    scan_key = (tuple(groups), tuple(scan_ratios), len(ranking))
    if memo is not None and memo.get("key") == scan_key:
        sens, depth_scores = memo["scan"]
    else:
        sens, depth_scores = _scan(shot, data, scan_ratios, granularity, importance, steps, imgsz, groups,
                                   len(ranking), round_to, on_point)  # fmt: skip
        if memo is not None:
            memo.update(key=scan_key, scan=(sens, depth_scores))
    scan_s = time.perf_counter() - t1
    levels = _levels(table, sens.base_score, sens.points, depth_scores, drops)
    t2 = time.perf_counter()
    path = list(walk(levels, lambda g: 1.0 if g == DEPTH else CHANNEL_STEP))
    needed = table.base_ms * (1 - 1 / target)
    guess = next((i for i, (lv, _) in enumerate(path) if predicted(levels, lv)[1] >= needed), len(path) - 1)
    i, speedup = _shortest(len(path), guess, lambda i: real_enough(path[i][0]), measured, ceiling)
    chosen, walked = path[i][0], [step for _, step in path[: i + 1]]
    ratios, drop = plan(chosen)
    return {
        "target": target,
        "ratios": ratios,
        "depth": int(chosen.get(DEPTH, 0)),
        "dropped": [f"{b}.m.{j}" for b, js in drop.items() for j in js],
        "speedup": speedup,
        "ceiling_speedup": ceiling,
        "predicted_loss": predicted(levels, chosen)[0],
        "unpruned_ms": table.base_ms,
        "unpruned_map50_95": sens.base_score,
        "imgsz": imgsz,
        "threads": threads,
        "steps": walked,
        "timings": len(measured),
        "table": {"key": table.key, "timed_now": timed, "seconds": table_s},
        "scan_seconds": scan_s,
        "allocation_seconds": time.perf_counter() - t2,
    }


def _shortest(
    n: int, guess: int, meets: Callable[[int], bool], measured: list[float], last: float
) -> tuple[int, float]:
    """The shortest prefix of the walk (an index into its ``n`` maps) whose timing meets the target: bisection,
    probing the table's ``guess`` first (speed grows along the walk, each step cutting more; the last map, every
    cut, met it at ``last``x). (index, its measured speed-up) after about ``log2(n)`` timings, not one per step."""
    lo, hi, best = 0, n - 1, last
    probe = min(guess, hi - 1) if hi else 0
    while lo < hi:
        if meets(probe):
            hi, best = probe, measured[-1]
        else:
            lo = probe + 1
        probe = (lo + hi) // 2
    return hi, best


def _has_c3(model: torch.nn.Module) -> bool:
    from ..prune.depth import c3_blocks

    return bool(c3_blocks(model))


def _scan(
    shot: OneShot,
    data: DataConfig,
    scan_ratios: Sequence[float],
    granularity: str,
    importance: str,
    steps: Sequence[str],
    imgsz: int,
    groups: Sequence[str],
    depth: int,
    round_to: int | None,
    on_point: Callable[[int, int], None] | None,
):
    """The channel groups' sensitivity scan, then the val score with the ``k`` least missed bottlenecks dropped
    (and their layers after refit), for each ``k`` up to ``depth``; progress counts both."""
    total = 1 + len(groups) * len(scan_ratios) + depth

    def channel_point(done: int, _total: int) -> None:
        if on_point is not None:
            on_point(done, total)

    sens = sensitivity(shot, data, scan_ratios, granularity, importance, steps, imgsz, groups, None, round_to,
                       channel_point)  # fmt: skip
    val_set, scores = val_set_of(shot, data, imgsz), []
    for k in range(1, depth + 1):
        m = shot.cut({}, granularity=granularity, importance=importance, steps=("reconstruct",), depth=k).model
        scores.append(validate(m, val_set(), device=torch.device("cpu")).map50_95)
        if on_point is not None:
            on_point(total - depth + k, total)
    return sens, scores


def _levels(
    table: LatencyTable, base_score: float, points, depth_scores: Sequence[float], drops: Sequence[str]
) -> Levels:
    """group -> [(ratio, predicted loss, ms saved)] and ``depth`` -> [(k, loss, ms the k bottlenecks save)]."""
    out: Levels = {}
    for p in points:
        out.setdefault(p.group, [(0.0, 0.0, 0.0)]).append(
            (p.ratio, max(0.0, base_score - p.score), table.channel[p.group][p.ratio])
        )
    out = {g: sorted(v) for g, v in out.items()}
    if depth_scores:
        saved, rows = 0.0, [(0.0, 0.0, 0.0)]
        for k, (score, d) in enumerate(zip(depth_scores, drops), start=1):
            saved += table.depth[d]
            rows.append((float(k), max(0.0, base_score - score), saved))
        out[DEPTH] = rows
    return out
