"""One trial as plain data: ``TrialSpec`` in, ``TrialResult`` out, and ``run_trial`` between them.

The seam between the study (Optuna, Ray, MLflow) and the model code (tensors): both sides only
exchange these picklable dataclasses, so a trial runs unchanged in a test, a local Ray actor or a
GPU node. The heavy objects a trial needs (baseline model, datasets, baseline measurements) live in a
:class:`.context.WorkerContext` that a worker keeps across trials (in its :class:`WorkerCache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..study.metrics import ONESHOT
from . import steps
from .context import WorkerContext
from .contract import (
    AllocationRequest,
    BaselineResult,
    TrialResult,
    TrialSpec,
    WorkerCache,
    Workload,
    screen_reason,
)
from .heldout import held_out_files

__all__ = ["RealTrial", "run_baseline", "run_trial"]


class RealTrial:
    """The trial with tensors (runner.TrialRunner)."""

    def baseline(self, workload: Workload, cache: WorkerCache) -> BaselineResult:
        return run_baseline(workload, cache)

    def trial(self, spec: TrialSpec, cache: WorkerCache) -> TrialResult:
        return run_trial(spec, cache)

    def allocations(self, workload: Workload, request: AllocationRequest, cache: WorkerCache) -> list[dict[str, float]]:
        """Warm-start ratio maps, one per target: global magnitude (unstructured) or sensitivity (structured)."""
        ctx = WorkerContext.of(workload, cache)
        if workload.pruning.method == "structured":
            return _sensitivity_allocations(ctx, request)
        from ..prune import magnitude_allocation

        return [
            magnitude_allocation(ctx.model, request.groups, t, request.bounds, request.step) for t in request.targets
        ]


def run_trial(spec: TrialSpec, cache: WorkerCache) -> TrialResult:
    """Cut the cached baseline with the spec's ratios, screen it (when asked), fine-tune, deploy, measure, validate
    on the held-out split. A cut under the screen's floor returns its one-shot figures, ``screened``; a fine-tune
    that early stopping ends returns its best figures by then (``stopped_epoch``, screened too)."""
    import dataclasses

    import torch

    w = spec.workload.at_size(spec.values.get("imgsz", spec.workload.imgsz))
    spec = dataclasses.replace(spec, workload=w)  # every step runs at the trial's size, timed against the base
    ctx = WorkerContext.of(w, cache)
    torch.manual_seed(w.seed + spec.number)
    pruned = steps.cut(spec, ctx)
    shot = steps.one_shot(spec, ctx, pruned) if spec.screen is not None else {}
    reason = screen_reason(spec, shot["map50_95"]) if shot else ""
    if reason:
        files = {"ratios.json": _ratio_map(spec, pruned)}
        return TrialResult(spec.number, True, shot, [], files, device=ctx.device_name(), screened=True, reason=reason)
    tuned = steps.fine_tune(spec, ctx, pruned)
    if tuned.stopped is not None:
        reason, gap = tuned.stopped
        metrics = {**steps.stopped_metrics(spec, pruned, tuned), **({ONESHOT: shot["map50_95"]} if shot else {})}
        files = {"ratios.json": _ratio_map(spec, pruned)}
        return TrialResult(
            spec.number, True, metrics, tuned.history, files, device=ctx.device_name(), screened=True,
            reason=reason, stopped_epoch=len(tuned.history), stop_gap=gap,
        )  # fmt: skip
    shipped = steps.deploy(spec, ctx, tuned)
    metrics = steps.measure(spec, ctx, pruned, tuned, shipped)
    if shot:
        metrics[ONESHOT] = shot["map50_95"]
    test = steps.held_out(ctx, shipped, lambda: held_out_files(ctx.data, w.test_data, Path(w.base_dir), progress=False))
    files = {"ratios.json": _ratio_map(spec, pruned)}
    if w.save_checkpoint:
        files["pruned.pt"] = _official_bytes(shipped.model, spec)
        if shipped.int8 is not None:
            files["pruned.int8.onnx"] = shipped.int8
    return TrialResult(spec.number, True, metrics, tuned.history, files, device=ctx.device_name(), test=test)


def run_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    """Groups of the unpruned model (the search space), its mAP and its costs, measured once."""
    import time as _time

    from ..deploy.measure import measure
    from ..prune import prunable_groups
    from ..yolo.val import validate

    t0 = _time.perf_counter()
    ctx = WorkerContext.of(workload, cache)
    p = workload.pruning
    method = "structured" if p.method == "structured" else "unstructured"
    groups = prunable_groups(ctx.model, p.granularity, p.exclude, method=method)
    res = validate(ctx.model, ctx.val_set, device=ctx.device)
    m = measure(ctx.model, imgsz=workload.imgsz, batch=1, device=ctx.device, threads=workload.threads)
    metrics = steps.metrics_of(res, m)
    metrics["speedup"] = metrics["ort_speedup"] = 1.0
    return BaselineResult(groups, metrics, ctx.device_name(), _time.perf_counter() - t0)


def _sensitivity_allocations(ctx: WorkerContext, request: AllocationRequest) -> list[dict[str, float]]:
    """Per target ratio: the structured cut with the least predicted mAP loss at the uniform cut's GFLOPs.

    The per-group sensitivity scan (val split, one-shot cuts) runs once per worker and is reused for every
    target; a target the scanned ratios cannot reach keeps the uniform cut.
    """
    from ..errors import UnreachableTarget
    from ..prune.allocation import snap_ratio
    from ..prune.budget_cut import SCAN_RATIOS, cut_to_budget, gflops_fraction

    w, p = ctx.workload, ctx.workload.pruning
    if w.latency_objective and ctx.device.type == "cpu":
        return _speedup_allocations(ctx, request)
    shot, out = ctx.oneshot(), []
    for target in request.targets:
        uniform = dict.fromkeys(request.bounds, target)
        frac = gflops_fraction(shot.model, uniform, p.granularity, w.imgsz, p.round_to)
        try:
            budget = cut_to_budget(
                shot, ctx.data, frac, SCAN_RATIOS, p.granularity, p.importance, p.recover,
                imgsz=w.imgsz, previous=ctx.sensitivity, groups=list(request.bounds), round_to=p.round_to,
            )  # fmt: skip
        except UnreachableTarget:  # any other error is the study's to see, not a silent uniform cut
            out.append({g: snap_ratio(target, b, request.step) for g, b in request.bounds.items()})
            continue
        ctx.sensitivity = budget  # its scan is reused for the next target
        ratios = budget["ratios"]
        out.append({g: snap_ratio(ratios.get(g, 0.0), b, request.step) for g, b in request.bounds.items()})
    return out


def _speedup_allocations(ctx: WorkerContext, request: AllocationRequest) -> list[dict[str, float]]:
    """Per target ratio: the channel cut with the least predicted mAP loss that ONNX Runtime runs as fast as the
    uniform cut (measured here, interleaved with the unpruned model), ranked by the latency table's ms.

    For a study after an ONNX Runtime latency; channel cuts only (a warm start is a ratio map). A target whose
    uniform cut is no faster than the unpruned model, or that the scanned cuts cannot reach, keeps the uniform cut.
    """
    from ..assets import cache_dir, local_ref, resolve_weights
    from ..deploy.latency import SpeedupTimer, plain_cut
    from ..deploy.speedup_cut import cut_to_speedup
    from ..errors import UnreachableTarget
    from ..prune.allocation import snap_ratio
    from ..prune.budget_cut import SCAN_RATIOS

    w, p = ctx.workload, ctx.workload.pruning
    shot, out = ctx.oneshot(), []
    weights = resolve_weights(local_ref(w.model, Path(w.base_dir)), progress=False)
    timer = SpeedupTimer(shot.model, w.imgsz, w.threads)
    for target in request.targets:
        uniform = {g: snap_ratio(target, b, request.step) for g, b in request.bounds.items()}
        speedup = timer.time(plain_cut(shot.model, uniform, {}, p.granularity, p.round_to))[0] if target else 1.0
        if speedup <= 1.0:
            out.append(uniform)
            continue
        try:
            budget = cut_to_speedup(
                shot, ctx.data, weights, speedup, SCAN_RATIOS, p.granularity, p.importance, p.recover, w.imgsz,
                w.threads, round_to=p.round_to, max_depth=0, groups=list(request.bounds), timer=timer,
                memo=ctx.speed_scan, cache=cache_dir(),
            )  # fmt: skip
        except UnreachableTarget:
            out.append(uniform)
            continue
        ratios = budget["ratios"]
        out.append({g: snap_ratio(ratios.get(g, 0.0), b, request.step) for g, b in request.bounds.items()})
    return out


def _ratio_map(spec: TrialSpec, pruned: steps.Cut) -> bytes:
    import json

    doc = {
        "trial": spec.number,
        "study": spec.workload.study,
        **spec.values,
        "ratios": spec.ratios,
        "report": pruned.report.to_dict(),
    }
    if pruned.depth is not None:  # C3 block -> [bottlenecks before, after]
        doc["bottlenecks"] = {name: list(pair) for name, pair in pruned.depth.blocks.items()}
    return json.dumps(doc, indent=1, sort_keys=True, default=str).encode()


def _official_bytes(model: Any, spec: TrialSpec) -> bytes:
    """The pruned model in the official checkpoint layout, as bytes (the driver may be on another node)."""
    import tempfile
    from pathlib import Path

    from ..yolo.official_layout import save_official

    with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
        path = save_official(
            model,
            Path(tmp) / "pruned.pt",
            extra={
                "orchestrator_trial": spec.number,
                "orchestrator_study": spec.workload.study,
                "orchestrator_imgsz": spec.workload.imgsz,  # the input size it was fine-tuned and validated at
            },
        )
        return path.read_bytes()
