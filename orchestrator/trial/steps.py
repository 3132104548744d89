"""The real trial's steps, in the order ``run_trial`` runs them: cut, one-shot screen, fine-tune, deploy, measure,
held-out.

Each step takes the worker's :class:`.context.WorkerContext` and the previous step's small result. The order
is part of the behaviour: the trial seeds torch once at its start, and every step after draws from that stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..vocabulary import DATA_IMPORTANCES
from .context import WorkerContext, loader_workers
from .contract import TrialSpec, stop_reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn


@dataclass(frozen=True)
class Cut:
    """The pruned model before fine-tuning; ``recovery`` when the one-shot path ran its recovery steps; ``depth``
    the bottlenecks a depth cut dropped (``prune.depth.DepthCut``; None when the trial drops none)."""

    model: nn.Module
    report: Any  # prune.PruneReport: sparsity and what was cut
    recovery: Any = None  # prune.oneshot recovery record (its seconds per step)
    depth: Any = None


@dataclass(frozen=True)
class Tuned:
    """The fine-tuned model (its best EMA), its val scores, and one record per epoch; ``stopped`` (reason, how far
    it trailed) when early stopping ended it before its last epoch."""

    model: nn.Module
    val: Any  # yolo.val.ValResult of ``model``
    history: list[dict[str, float]]
    stopped: tuple[str, float] | None = None


@dataclass(frozen=True)
class Deployed:
    """What the trial ships: the fp16 ``.pt`` of ``model``, or the int8 ONNX file when ``int8`` is set."""

    model: nn.Module
    int8: bytes | None


def cut(spec: TrialSpec, ctx: WorkerContext) -> Cut:
    """The spec's depth and ratios applied to a copy of the baseline; a pruned base keeps its earlier masks.

    ``depth`` (the bottlenecks dropped, ranked once per worker on train images) goes first, whatever the method:
    structured, :meth:`OneShot.cut` drops them and refits what follows with the channel cut's recovery;
    unstructured, the shallower copy is refit (``reconstruct``) before its masks, which zero weights of the
    layers that are left. Either way the ratios of groups the depth cut removed are left out.
    """
    p, depth = spec.workload.pruning, int(spec.values.get("depth", 0))
    if p.method == "structured" and (p.recover or p.importance in DATA_IMPORTANCES or depth):
        done = ctx.oneshot().cut(
            spec.ratios, granularity=p.granularity, importance=p.importance, round_to=p.round_to, steps=p.recover,
            depth=depth,
        )  # fmt: skip
        result = Cut(done.model, done.prune, done.recovery, done.depth if depth else None)
    else:
        import copy

        from ..prune import apply_ratios
        from ..prune.depth import without_dropped

        ratios, dropped, recovery = spec.ratios, None, None
        if depth:
            shallow = ctx.oneshot().shallower(depth)
            model, dropped, recovery = shallow.model, shallow.cut, shallow.recovery
            ratios = without_dropped(model, ratios, p.granularity, p.method)
        else:
            model = copy.deepcopy(ctx.model)
        report = apply_ratios(
            model,
            ratios,
            method=p.method,
            granularity=p.granularity,
            importance=p.importance,
            round_to=p.round_to if p.method == "structured" else None,
        )
        result = Cut(model, report, recovery, dropped)
    if ctx.masks:  # a pruned base model: its earlier cuts stay in force and recorded
        from ..yolo.masks import attach_masks, carried_masks

        masks = ctx.masks
        if result.depth is not None:  # a bottleneck that moved up the chain takes its own masks along
            moved = result.depth.renamed  # name now -> name before
            masks = {n: m for n, m in masks.items() if n not in moved} | {
                n: masks[old] for n, old in moved.items() if old in masks
            }
        attach_masks(result.model, carried_masks(result.model, masks))
    return result


def one_shot(spec: TrialSpec, ctx: WorkerContext, pruned: Cut) -> dict[str, float]:
    """The cut model's val scores and weight counts before any fine-tune: what the screen judges a trial on.

    Seconds at the study's imgsz, against the minutes a fine-tune costs; latency is not measured (a screened
    trial is never on the front, and timing is the slow part of ``measure``).
    """
    from ..deploy.measure import count_nonzero
    from ..yolo.val import validate

    res = validate(pruned.model, ctx.val_set, device=ctx.device)
    params, nonzero = count_nonzero(pruned.model)
    return {
        "map50_95": float(res.map50_95),
        "map50": float(res.map50),
        "params": float(params),
        "nonzero_params": float(nonzero),
        "sparsity": float(pruned.report.sparsity),
    }


def cut_costs(spec: TrialSpec, pruned: Cut) -> dict[str, float]:
    """The costs a trial knows before it trains (study.metrics.CUT_COSTS), measured as ``measure`` measures them:
    what early stopping compares it on, and what a stopped trial reports."""
    from ..deploy.measure import count_nonzero

    params, nonzero = count_nonzero(pruned.model)
    costs = {"params": float(params), "nonzero_params": float(nonzero), "sparsity": float(pruned.report.sparsity)}
    if spec.stop is not None and any(m == "gflops" for m, _ in spec.stop.costs):
        from ..prune.unstructured import deployable
        from ..yolo.flops import count_gflops

        costs["gflops"] = count_gflops(deployable(pruned.model), spec.workload.imgsz)
    return costs


def fine_tune(spec: TrialSpec, ctx: WorkerContext, pruned: Cut) -> Tuned:
    """The spec's epochs at its lr0 on the cached train images, distilled from the baseline when asked; under
    early stopping (``spec.stop``) it ends after the first epoch at which :func:`.contract.stop_reason` says so."""
    from ..yolo.train import TrainSettings, finetune

    w = spec.workload
    history: list[dict[str, float]] = []
    costs = cut_costs(spec, pruned) if spec.stop is not None else {}
    gaps: list[float] = []

    def stop(rec: Any) -> str:
        why, gap = stop_reason(spec, rec.epoch, max(h["map50_95"] for h in history), costs)
        gaps.append(gap)
        return why

    epochs = spec.values["epochs"]
    settings = TrainSettings(
        imgsz=w.imgsz,
        batch=w.batch,
        hyp=ctx.hyp,
        lr0=spec.values["lr0"],
        device=ctx.device,
        seed=w.seed + spec.number,
        workers=loader_workers(w.threads, ctx.device.type == "cuda"),
        distill=w.finetune.distill,
    )
    ft = finetune(
        pruned.model,
        ctx.data,
        epochs,
        settings,
        val_set=ctx.val_set,
        train_images=ctx.train_images() if epochs > 0 else None,
        teacher=ctx.model if w.finetune.distill > 0 else None,  # the unpruned model, loaded once per worker
        progress=lambda rec: history.append(epoch_dict(rec)),
        stop=stop if spec.stop is not None else None,
    )
    return Tuned(ft.model, ft.metrics, history, (ft.stopped, gaps[-1]) if ft.stopped else None)


def stopped_metrics(spec: TrialSpec, pruned: Cut, tuned: Tuned) -> dict[str, float]:
    """What a trial stopped early reports: its best val scores by then and the costs of its cut (no deploy, no
    latency: it is never on the front)."""
    best = max(tuned.history, key=lambda h: h["map50_95"])
    return {"map50_95": best["map50_95"], "map50": best["map50"], **cut_costs(spec, pruned)}


def deploy(spec: TrialSpec, ctx: WorkerContext, tuned: Tuned) -> Deployed:
    """The deployable form the spec's ``quantize`` asks for: int8 ONNX calibrated on train images, or none."""
    if spec.values["quantize"] != "int8":
        return Deployed(tuned.model, None)
    from ..deploy.export import onnx_bytes
    from ..deploy.quantize import Int8Options, quantize_int8

    q = spec.workload.quantize
    options = Int8Options(q.calibration, q.calib_images, per_channel=q.per_channel, float_layers=q.float_layers)
    calibration = ctx.calibration(options.images)
    return Deployed(
        tuned.model, quantize_int8(onnx_bytes(tuned.model, imgsz=spec.workload.imgsz), calibration, options)
    )


def measure(spec: TrialSpec, ctx: WorkerContext, pruned: Cut, tuned: Tuned, shipped: Deployed) -> dict[str, float]:
    """The trial's metrics: scores of what ships (the int8 file itself when there is one) and its costs."""
    from ..deploy.measure import MB, zipped_size
    from ..deploy.measure import measure as measure_costs

    w = spec.workload
    m = measure_costs(
        shipped.model,
        imgsz=w.imgsz,
        batch=1,
        device=ctx.device,
        baseline=ctx.model,
        threads=w.threads,
        ort_baseline=ctx.ort_baseline(),
        onnx=shipped.int8,
        baseline_imgsz=w.speed_imgsz,
    )
    val = tuned.val if shipped.int8 is None else _validate_onnx(shipped.int8, ctx)
    metrics = metrics_of(val, m)
    metrics["sparsity"] = pruned.report.sparsity
    metrics.update(ctx.cache_metrics())
    if pruned.recovery is not None:
        metrics["recovery_s"] = float(sum(pruned.recovery.seconds.values()))
    if shipped.int8 is not None:  # the deployable file is the int8 ONNX: its bytes are the size
        int8 = shipped.int8
        metrics.update(size_mb=len(int8) / MB, size_zip_mb=zipped_size(int8, "pruned.int8.onnx") / MB)
    return metrics


def held_out(ctx: WorkerContext, shipped: Deployed, files: Callable[[], tuple]) -> dict[str, float]:
    """What ships, validated once on the held-out split ({} without one, or without labels in it)."""
    from ..yolo.val import val_stride

    test_set = ctx.test_set(val_stride(shipped.model), files)
    if test_set is None:
        return {}
    if shipped.int8 is not None:
        from ..deploy.onnx_val import validate_onnx_bytes

        r = validate_onnx_bytes(shipped.int8, test_set, device=ctx.device)
    else:
        from ..yolo.val import validate

        r = validate(shipped.model, test_set, device=ctx.device)
    if r.instances == 0:  # e.g. COCO test-dev: images without labels say nothing about accuracy
        return {}
    return {"test_map50_95": float(r.map50_95), "test_map50": float(r.map50), "test_images": float(r.images)}


def _validate_onnx(onnx: bytes, ctx: WorkerContext) -> Any:
    """Scores of the deployable ONNX file itself, through ONNX Runtime, on the study's val set."""
    from ..deploy.onnx_val import validate_onnx_bytes

    return validate_onnx_bytes(onnx, ctx.val_set, device=ctx.device, threads=ctx.ort_threads)


def metrics_of(val: Any, m: Any) -> dict[str, float]:
    """A validation result and a ``Measurements`` as the study's metric names (study/metrics.py)."""
    return {
        "map50_95": float(val.map50_95),
        "map50": float(val.map50),
        "precision": float(val.precision),
        "recall": float(val.recall),
        "params": float(m.params),
        "nonzero_params": float(m.nonzero_params),
        "size_mb": float(m.size_mb),
        "size_zip_mb": float(m.size_zip_mb),
        "gflops": float(m.gflops),
        "latency_ms": float(m.latency_ms),
        "speedup": float(m.speedup) if m.speedup is not None else 1.0,
        "ort_latency_ms": float(m.ort_latency_ms),
        "ort_speedup": float(m.ort_speedup) if m.ort_speedup is not None else 1.0,
    }


_EPOCH_KEYS = (
    "box",
    "obj",
    "cls",
    "lr",
    "map50_95",
    "map50",
    "precision",
    "recall",
    "images_per_s",
    "train_s",
    "val_s",
    "skipped_images",  # training images that could not be read that epoch (streamed from a disk that lost them)
)


def epoch_dict(rec: Any) -> dict[str, float]:
    """One fine-tune epoch as the trial's history record."""
    return {k: float(getattr(rec, k)) for k in _EPOCH_KEYS}
