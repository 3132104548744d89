"""Scan + allocate for ``orchestrator prune --target-gflops``: scores come from the val split, fits from train.

The scan recovers each single-group cut by compensation only (seconds per point); the final cut gets
the full recovery the user asked for. Widths depend on the ratios alone, so GFLOPs are checked on a
plain magnitude cut without recovery.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import PruningError
from ..yolo.data import DataConfig
from ..yolo.flops import count_gflops
from ..yolo.model import copy_model
from ..yolo.val import ValSet, val_stride, validate
from .apply import apply_ratios
from .budget import ScanPoint, Sensitivity, allocate, scan
from .layers import prunable_groups
from .oneshot import OneShot
from .unstructured import deployable

SCAN_STEPS = ("compensate",)
SCAN_RATIOS = (0.25, 0.5)  # each group cut alone at these (prune --scan-ratios' default)


def cut_gflops(
    model: torch.nn.Module, ratios: Mapping[str, float], granularity: str, imgsz: int, round_to: int | None = None
) -> float:
    """GFLOPs of a plain structured cut of a copy by ``ratios`` (kept channels rounded as the final cut rounds
    them); ``{}``: the model's own."""
    m = copy_model(model) if ratios else model
    if ratios:
        apply_ratios(m, ratios, method="structured", granularity=granularity, round_to=round_to)
    return count_gflops(deployable(m), imgsz)


def gflops_fraction(
    model: torch.nn.Module, ratios: Mapping[str, float], granularity: str, imgsz: int, round_to: int | None = None
) -> float:
    """:func:`cut_gflops` as a fraction of the unpruned model's."""
    return cut_gflops(model, ratios, granularity, imgsz, round_to) / cut_gflops(model, {}, granularity, imgsz)


def sensitivity(
    shot: OneShot,
    data: DataConfig,
    scan_ratios: Sequence[float],
    granularity: str,
    importance: str,
    steps: Sequence[str],
    imgsz: int,
    groups: Sequence[str],
    previous: Mapping[str, Any] | None = None,
    round_to: int | None = None,
    on_point: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """The per-group scan on the val split (or ``previous``'s, reused): what both budgets rank cuts by."""
    val_set = val_set_of(shot, data, imgsz)
    scan_steps = tuple(s for s in SCAN_STEPS if s in steps)

    def evaluate(ratios: Mapping[str, float]) -> tuple[float, float]:
        m = (
            shot.cut(ratios, granularity=granularity, importance=importance, round_to=round_to, steps=scan_steps).model
            if ratios
            else shot.model
        )
        return validate(m, val_set(), device=torch.device("cpu")).map50_95, count_gflops(deployable(m), imgsz)

    if previous:
        return _reuse(previous, groups, cut_gflops(shot.model, {}, granularity, imgsz, round_to))
    return scan(groups, scan_ratios, evaluate, on_point)


def val_set_of(shot: OneShot, data: DataConfig, imgsz: int) -> Callable[[], ValSet]:
    """The val split, decoded at its first use: a reused scan never reads the val images."""
    return functools.cache(lambda: ValSet(data, imgsz, 32, stride=val_stride(shot.model)))


def cut_to_budget(
    shot: OneShot,
    data: DataConfig,
    target: float,
    scan_ratios: Sequence[float],
    granularity: str,
    importance: str,
    steps: Sequence[str],
    imgsz: int | None = None,
    previous: Mapping[str, Any] | None = None,
    groups: Sequence[str] | None = None,
    round_to: int | None = None,
    on_point: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Scan every structured group, allocate ratios meeting ``target`` x GFLOPs; a JSON-able summary.

    ``previous``: the summary of an earlier run on the same model and data; its scan is reused (the
    scan is the expensive part and does not depend on the target). ``groups``: only these are cut (a study's
    search space, ``exclude`` applied); default every structured group. ``round_to``: kept channel counts are
    rounded as the final cut rounds them, so the GFLOPs the allocation meets are the ones the model has.
    ``on_point(done, total)``: the scan's progress.
    """
    imgsz = imgsz or int(shot.calib.images.shape[-1])
    groups = list(groups or prunable_groups(shot.model, granularity, method="structured"))  # the searched ones
    sens = sensitivity(
        shot, data, scan_ratios, granularity, importance, steps, imgsz, groups, previous, round_to, on_point
    )
    alloc = allocate(sens, target, lambda ratios: cut_gflops(shot.model, ratios, granularity, imgsz, round_to))
    return {
        "target": target,
        "ratios": alloc.ratios,
        "gflops_fraction": alloc.gflops_fraction,
        "predicted_loss": alloc.predicted_loss,
        "scan_seconds": sens.seconds,
        "allocation_seconds": alloc.seconds,
        **scan_record(sens),
    }


def scan_record(sens: Sensitivity) -> dict[str, Any]:
    """The scan as JSON (what ``--scan-from`` reads back)."""
    return {"unpruned_map50_95": sens.base_score, "scan": [[p.group, p.ratio, p.score, p.gflops] for p in sens.points]}


def _reuse(previous: Mapping[str, Any], groups: Sequence[str], base_gflops: float) -> Sensitivity:
    try:
        points = tuple(ScanPoint(str(g), float(r), float(s), float(f)) for g, r, s, f in previous["scan"])
        sens = Sensitivity(float(previous["unpruned_map50_95"]), base_gflops, points, 0.0)
    except (KeyError, TypeError, ValueError):
        raise PruningError("--scan-from: not the JSON of an earlier `prune --target-gflops --json` run") from None
    unknown = sorted({p.group for p in points} - set(groups))
    if unknown:
        raise PruningError(f"--scan-from: groups {', '.join(unknown[:3])} are not this model's (other granularity?)")
    return sens
