"""One trial as plain data: ``TrialSpec`` in, ``TrialResult`` out, and ``run_trial`` between them.

The seam between the study (Optuna, Ray, MLflow) and the model code (tensors): both sides only
exchange these picklable dataclasses, so a trial runs unchanged in a test, a local Ray actor or a
GPU node. The heavy objects a trial needs (baseline model, datasets, baseline measurements) live in a
:class:`WorkerCache` that a worker keeps across trials.
"""

from __future__ import annotations

from typing import Any

from ..errors import OrchestratorError
from ..vocabulary import DATA_IMPORTANCES
from .contract import AllocationRequest, BaselineResult, TrialResult, TrialSpec, WorkerCache, Workload

__all__ = ["RealTrial", "run_baseline", "run_trial"]


class RealTrial:
    """The trial with tensors (runner.TrialRunner)."""

    def baseline(self, workload: Workload, cache: WorkerCache) -> BaselineResult:
        return run_baseline(workload, cache)

    def trial(self, spec: TrialSpec, cache: WorkerCache) -> TrialResult:
        return run_trial(spec, cache)

    def allocations(self, workload: Workload, request: AllocationRequest, cache: WorkerCache) -> list[dict[str, float]]:
        """Warm-start ratio maps, one per target: global magnitude (unstructured) or sensitivity (structured)."""
        ctx = _context(workload, cache)
        if workload.method == "structured":
            return _sensitivity_allocations(ctx, workload, request)
        from ..prune import magnitude_allocation

        model = ctx["model"]
        return [magnitude_allocation(model, request.groups, t, request.bounds, request.step) for t in request.targets]


def run_trial(spec: TrialSpec, cache: WorkerCache) -> TrialResult:
    """Prune the cached baseline with the spec's ratios, fine-tune, validate, measure, serialize the checkpoint."""
    import copy

    import torch

    from ..deploy.measure import measure
    from ..prune import apply_ratios
    from ..yolo.train import finetune

    w = spec.workload
    ctx = _context(w, cache)
    torch.manual_seed(w.seed + spec.number)
    recovery = None
    if w.method == "structured" and (w.recover or w.importance in DATA_IMPORTANCES):
        done = _oneshot(ctx, w).cut(
            spec.ratios, granularity=w.granularity, importance=w.importance, round_to=w.round_to, steps=w.recover
        )
        model, report, recovery = done.model, done.prune, done.recovery
    else:
        model = copy.deepcopy(ctx["model"])
        report = apply_ratios(
            model,
            spec.ratios,
            method=w.method,
            granularity=w.granularity,
            importance=w.importance,
            round_to=w.round_to if w.method == "structured" else None,
        )
    if ctx["masks"]:  # a pruned base model: its earlier cuts stay in force and recorded
        from ..yolo.masks import attach_masks, carried_masks

        attach_masks(model, carried_masks(model, ctx["masks"]))
    history: list[dict[str, float]] = []
    epochs, lr0, quantize = spec.values["epochs"], spec.values["lr0"], spec.values["quantize"]
    train_images = _train_images(ctx, w) if epochs > 0 else None
    ft = finetune(
        model,
        ctx["data"],
        epochs,
        imgsz=w.imgsz,
        batch=w.batch,
        hyp=ctx["hyp"],
        lr0=lr0,
        device=ctx["device"],
        seed=w.seed + spec.number,
        workers=_loader_workers(w.threads),
        val_set=ctx["val_set"],
        train_images=train_images,
        progress=lambda rec: history.append(_epoch_dict(rec)),
        teacher=ctx["model"] if w.distill > 0 else None,  # the unpruned model, loaded once per worker
        distill=w.distill,
    )
    int8 = _int8(ft.model, ctx, w) if quantize == "int8" else None
    m = measure(
        ft.model,
        imgsz=w.imgsz,
        batch=1,
        device=ctx["device"],
        baseline=ctx["model"],
        threads=w.threads,
        ort_baseline=_ort_baseline(ctx, w),
        onnx=int8,
    )
    metrics = _metrics(ft.metrics if int8 is None else _validate_onnx(int8, ctx, w), m)
    metrics["sparsity"] = report.sparsity
    if recovery is not None:
        metrics["recovery_s"] = float(sum(recovery.seconds.values()))
    if int8 is not None:  # the deployable file is the int8 ONNX: its bytes are the size
        from ..deploy.measure import MB, zipped_size

        metrics.update(size_mb=len(int8) / MB, size_zip_mb=zipped_size(int8, "pruned.int8.onnx") / MB)
    test = _test_metrics(ft.model, ctx, w, int8)
    files = {"ratios.json": _ratio_map(spec, report)}
    if w.save_checkpoint:
        files["pruned.pt"] = _official_bytes(ft.model, spec)
        if int8 is not None:
            files["pruned.int8.onnx"] = int8
    return TrialResult(spec.number, True, metrics, history, files, device=_device_name(ctx["device"]), test=test)


def run_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    """Groups of the unpruned model (the search space), its mAP and its costs, measured once."""
    import time as _time

    from ..deploy.measure import measure
    from ..prune import prunable_groups
    from ..yolo.val import validate

    t0 = _time.perf_counter()
    ctx = _context(workload, cache)
    method = "structured" if workload.method == "structured" else "unstructured"
    groups = prunable_groups(ctx["model"], workload.granularity, workload.exclude, method=method)
    res = validate(ctx["model"], ctx["val_set"], device=ctx["device"])
    m = measure(ctx["model"], imgsz=workload.imgsz, batch=1, device=ctx["device"], threads=workload.threads)
    metrics = _metrics(res, m)
    metrics["speedup"] = metrics["ort_speedup"] = 1.0
    return BaselineResult(groups, metrics, _device_name(ctx["device"]), _time.perf_counter() - t0)


def _context(w: Workload, cache: WorkerCache) -> dict[str, Any]:
    """Load the baseline model, data config, validation set and hyp once per worker and workload."""
    items = cache.for_workload(w)
    if "model" in items:
        return items
    from dataclasses import replace as _replace
    from pathlib import Path

    from ..assets import local_ref, resolve_data, resolve_weights
    from ..yolo.checkpoint import load_checkpoint
    from ..yolo.data import load_data_config
    from ..yolo.device import resolve_device
    from ..yolo.hyp import get_hyp
    from ..yolo.train import VAL_BATCH
    from ..yolo.val import ValSet, val_stride

    base = Path(w.base_dir)
    device = resolve_device(w.device)
    weights = resolve_weights(local_ref(w.model, base), progress=False)
    data = load_data_config(resolve_data(local_ref(w.data, base), progress=False))
    ck = load_checkpoint(weights)
    model = ck.model.eval()
    if model.nc != data.nc:
        raise OrchestratorError(f"{weights}: the model predicts {model.nc} classes but {data.file} has nc={data.nc}")
    stride = val_stride(model)
    hyp = get_hyp(w.hyp)
    if w.overrides:
        hyp = _replace(hyp, **dict(w.overrides))
    items.update(
        model=model, data=data, device=device, hyp=hyp, val_set=ValSet(data, w.imgsz, VAL_BATCH, stride=stride)
    )
    items["masks"] = ck.masks  # prune masks the base checkpoint records (empty for an unpruned one)
    return items


def _oneshot(ctx: dict[str, Any], w: Workload):
    """The unpruned model with its calibration images (train split) and channel statistics, once per worker."""
    if "oneshot" not in ctx:
        from ..prune.calibration import calibration_set
        from ..prune.oneshot import OneShot

        ctx["oneshot"] = OneShot(ctx["model"], calibration_set(ctx["data"], w.imgsz, w.calib_images, seed=w.seed))
    return ctx["oneshot"]


def _sensitivity_allocations(ctx: dict[str, Any], w: Workload, request: AllocationRequest) -> list[dict[str, float]]:
    """Per target ratio: the structured cut with the least predicted mAP loss at the uniform cut's GFLOPs.

    The per-group sensitivity scan (val split, one-shot cuts) runs once per worker and is reused for every
    target; a target the scanned ratios cannot reach keeps the uniform cut.
    """
    from ..errors import UnreachableTarget
    from ..prune.allocation import snap_ratio
    from ..prune.budget_cut import SCAN_RATIOS, cut_to_budget, gflops_fraction

    shot, out = _oneshot(ctx, w), []
    for target in request.targets:
        uniform = dict.fromkeys(request.bounds, target)
        frac = gflops_fraction(shot.model, uniform, w.granularity, w.imgsz, w.round_to)
        try:
            budget = cut_to_budget(
                shot, ctx["data"], frac, SCAN_RATIOS, w.granularity, w.importance, w.recover,
                imgsz=w.imgsz, previous=ctx.get("sensitivity"), groups=list(request.bounds), round_to=w.round_to,
            )  # fmt: skip
        except UnreachableTarget:  # any other error is the study's to see, not a silent uniform cut
            out.append({g: snap_ratio(target, b, request.step) for g, b in request.bounds.items()})
            continue
        ctx["sensitivity"] = budget  # its scan is reused for the next target
        ratios = budget["ratios"]
        out.append({g: snap_ratio(ratios.get(g, 0.0), b, request.step) for g, b in request.bounds.items()})
    return out


def _ort_baseline(ctx: dict[str, Any], w: Workload) -> Any:
    """The unpruned model's ONNX Runtime session, opened once per worker (every trial is timed against it)."""
    if "ort_baseline" not in ctx:
        from ..deploy.export import onnx_bytes
        from ..deploy.ort_runtime import open_session

        threads = w.threads if ctx["device"].type == "cpu" else None
        onnx = onnx_bytes(ctx["model"], imgsz=w.imgsz)
        ctx["ort_baseline"] = open_session(onnx, device=ctx["device"], threads=threads)
    return ctx["ort_baseline"]


def _test_metrics(model, ctx: dict[str, Any], w: Workload, onnx: bytes | None = None) -> dict[str, float]:
    """The fine-tuned model (or its deployable ``onnx``, int8) validated once on the held-out split ({} without
    one, or without labels in it)."""
    if "test_set" not in ctx:  # built once per worker and workload
        from ..yolo.data import scan_labels
        from ..yolo.train import VAL_BATCH
        from ..yolo.val import ValSet, val_stride

        data, stride = ctx["data"], val_stride(model)
        files = _test_files(w, data)
        ctx["test_set"] = None
        if files:
            images = scan_labels(files, data.nc)
            ctx["test_set"] = ValSet(images, w.imgsz, VAL_BATCH, stride=stride, nc=data.nc, names=data.names)
    if ctx["test_set"] is None:
        return {}
    from ..yolo.val import validate

    if onnx is not None:
        from ..deploy.onnx_val import validate_onnx_bytes

        r = validate_onnx_bytes(onnx, ctx["test_set"], device=ctx["device"])
    else:
        r = validate(model, ctx["test_set"], device=ctx["device"])
    if r.instances == 0:  # e.g. COCO test-dev: images without labels say nothing about accuracy
        return {}
    return {"test_map50_95": float(r.map50_95), "test_map50": float(r.map50), "test_images": float(r.images)}


def _int8(model, ctx: dict[str, Any], w: Workload) -> bytes:
    """The model as an int8 ONNX Runtime file, calibrated on train images the worker letterboxes once."""
    from ..deploy.export import onnx_bytes
    from ..deploy.quantize import Int8Options, calibration_images, quantize_int8

    options = Int8Options(*w.calibration)
    if "calibration" not in ctx:
        ctx["calibration"] = calibration_images(ctx["data"].train, w.imgsz, options.images)
    return quantize_int8(onnx_bytes(model, imgsz=w.imgsz), ctx["calibration"], options)


def _validate_onnx(onnx: bytes, ctx: dict[str, Any], w: Workload):
    """Scores of the deployable ONNX file itself, through ONNX Runtime, on the study's val set."""
    from ..deploy.onnx_val import validate_onnx_bytes

    threads = w.threads if ctx["device"].type == "cpu" else None
    return validate_onnx_bytes(onnx, ctx["val_set"], device=ctx["device"], threads=threads)


def _test_files(w: Workload, data) -> tuple:
    """The held-out images: the study's ``test_data`` yaml (its test:, else its val: split), else the data's test:."""
    if not w.test_data:
        return data.test
    from pathlib import Path

    from ..assets import local_ref, resolve_data
    from ..yolo.data import load_data_config

    cfg = load_data_config(resolve_data(local_ref(w.test_data, Path(w.base_dir)), progress=False), need=())
    if cfg.names != data.names:
        raise OrchestratorError(f"{cfg.file}: test_data's classes differ from {data.file}'s")
    return cfg.test or cfg.val


def _train_images(ctx: dict[str, Any], w: Workload):
    if "train_images" not in ctx:
        from ..yolo.train import TrainImages

        ctx["train_images"] = TrainImages(ctx["data"], w.imgsz)
    return ctx["train_images"]


def _loader_workers(threads: int) -> int:
    return 0 if threads <= 1 else min(2, threads - 1)


def _metrics(val, m) -> dict[str, float]:
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


def _epoch_dict(rec) -> dict[str, float]:
    return {
        k: float(getattr(rec, k))
        for k in (
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
        )
    }


def _ratio_map(spec: TrialSpec, report) -> bytes:
    import json

    doc = {
        "trial": spec.number,
        "study": spec.workload.study,
        **spec.values,
        "ratios": spec.ratios,
        "report": report.to_dict(),
    }
    return json.dumps(doc, indent=1, sort_keys=True, default=str).encode()


def _official_bytes(model, spec: TrialSpec) -> bytes:
    """The pruned model in the official checkpoint layout, as bytes (the driver may be on another node)."""
    import tempfile
    from pathlib import Path

    from ..yolo.official_layout import save_official

    with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
        path = save_official(
            model,
            Path(tmp) / "pruned.pt",
            extra={"orchestrator_trial": spec.number, "orchestrator_study": spec.workload.study},
        )
        return path.read_bytes()


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
