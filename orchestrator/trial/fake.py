"""A trial without tensors (``trial: fake``): deterministic metrics from the ratios, a short sleep.

It exercises the whole study loop (Optuna, Ray, MLflow, resume, failures) in seconds, and its
fault switches (``fake.fail_on``, ``nan_on``, ``kill_on``) let tests break it on purpose.
The metrics follow the shape of real pruning: cost falls linearly with the ratios, accuracy falls
faster when one group is pruned much harder than the others (so a per-group search can beat uniform).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time

from ..errors import TrainingError
from ..study.metrics import ONESHOT
from .contract import (
    AllocationRequest,
    BaselineResult,
    TrialResult,
    TrialSpec,
    WorkerCache,
    Workload,
    screen_reason,
    stop_reason,
)

_GROUPS = {"layer": 24, "block": 10, "stage": 4}
_BASE = {"map50_95": 0.314, "map50": 0.491, "params": 1_867_405.0, "gflops": 1.13, "latency_ms": 40.0}


class FakeTrial:
    """The trial without tensors (runner.TrialRunner)."""

    def baseline(self, workload: Workload, cache: WorkerCache) -> BaselineResult:
        return fake_baseline(workload, cache)

    def trial(self, spec: TrialSpec, cache: WorkerCache) -> TrialResult:
        return run_fake_trial(spec, cache)

    def allocations(self, workload: Workload, request: AllocationRequest, cache: WorkerCache) -> list[dict[str, float]]:
        return fake_allocations(request)


def fake_groups(granularity: str) -> dict[str, list[str]]:
    n = _GROUPS[granularity]
    return {f"model.{i}": [f"model.{i}.conv"] for i in range(n)}


def fake_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    metrics = dict(_BASE)
    metrics.update(nonzero_params=_BASE["params"], size_mb=7.5, size_zip_mb=6.9, speedup=1.0)
    metrics.update(ort_latency_ms=_BASE["latency_ms"] / 2, ort_speedup=1.0)
    return BaselineResult(fake_groups(workload.pruning.granularity), metrics, "cpu (fake)", 0.0)


def fake_allocations(request: AllocationRequest) -> list[dict[str, float]]:
    """No weights to rank: late groups are cut more (0.5x to 1.5x the target), clipped to the bounds."""
    n = max(len(request.bounds) - 1, 1)
    return [
        {g: round(min(max(t * (0.5 + i / n), lo), hi), 4) for i, (g, (lo, hi)) in enumerate(request.bounds.items())}
        for t in request.targets
    ]


def run_fake_trial(spec: TrialSpec, cache: WorkerCache) -> TrialResult:
    fake = spec.workload.fake
    items = cache.for_workload(spec.workload)
    items["trials"] = items.get("trials", 0) + 1  # lets tests see that the cache survives across trials
    if spec.number in fake.kill_on and (spec.attempt == 0 or fake.kill_twice):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(fake.sleep_s)
    if spec.number in fake.fail_on:
        raise RuntimeError(f"fake failure injected in trial {spec.number}")
    groups = fake_groups(spec.workload.pruning.granularity)
    ratios = [spec.ratios.get(g, 0.0) for g in groups]
    mean = sum(ratios) / len(ratios)
    spread = sum((r - mean) ** 2 for r in ratios) / len(ratios)
    # weights: late groups hold more parameters; accuracy suffers with the mean and with the hardest cut
    w = [(i + 1) / sum(range(1, len(ratios) + 1)) for i in range(len(ratios))]
    kept = 1.0 - sum(wi * r for wi, r in zip(w, ratios))
    epochs, lr0 = spec.values["epochs"], spec.values["lr0"]
    raw = max(0.0, 1.0 - 1.6 * mean**2 - 2.0 * max(ratios) ** 3 + 0.5 * spread)
    acc = raw * _recovery(epochs)
    oneshot = round(_BASE["map50_95"] * raw * _recovery(0), 6)  # the cut before any fine-tune
    if reason := screen_reason(spec, oneshot):
        return _screened(spec, raw, kept, reason)
    history = []
    costs = _costs(kept)
    for epoch in range(epochs):
        if spec.number in fake.nan_on:
            raise TrainingError(f"loss became nan at epoch {epoch} (lr0={lr0:g}): lower lr0 or the ratios")
        got = raw * _recovery(epoch + 1)  # the curve rises toward the final figure, as a real fine-tune's does
        history.append(
            {"box": 0.05 / (epoch + 1), "obj": 0.04, "cls": 0.02, "lr": lr0,
             "map50_95": round(_BASE["map50_95"] * got, 6), "map50": round(_BASE["map50"] * got, 6)}
        )  # fmt: skip
        why, gap = stop_reason(spec, epoch + 1, history[-1]["map50_95"], costs)
        if why:
            metrics = {"map50_95": history[-1]["map50_95"], "map50": history[-1]["map50"], **costs}
            device = f"cpu (fake) {socket.gethostname()}"
            return TrialResult(
                spec.number, True, metrics, history, device=device, screened=True, reason=why,
                stopped_epoch=epoch + 1, stop_gap=gap,
            )  # fmt: skip
    metrics = {
        "map50_95": round(_BASE["map50_95"] * acc, 6),
        "map50": round(_BASE["map50"] * acc, 6),
        "params": round(_BASE["params"] * kept),
        "nonzero_params": round(_BASE["params"] * kept),
        "size_mb": round(7.5 * kept, 4),
        "size_zip_mb": round(6.9 * kept, 4),
        "gflops": round(_BASE["gflops"] * kept, 5),
        "latency_ms": round(_BASE["latency_ms"] * (0.3 + 0.7 * kept), 4),
    }
    base, size = spec.workload.speed_imgsz, spec.values.get("imgsz", spec.workload.imgsz)
    if size != base:  # a smaller input: FLOPs and time with its area, some accuracy lost (the real trend's shape)
        area = (size / base) ** 2
        metrics.update(gflops=round(metrics["gflops"] * area, 5), latency_ms=round(metrics["latency_ms"] * area, 4))
        shrink = 1.0 - 0.6 * (1.0 - size / base)
        metrics.update(map50_95=round(metrics["map50_95"] * shrink, 6), map50=round(metrics["map50"] * shrink, 6))
    if depth := spec.values.get("depth", 0):  # bottlenecks dropped: shaped like bench_depth (docs/pruning.md "Depth")
        metrics.update(gflops=round(metrics["gflops"] * (1 - 0.03 * depth), 5))
        metrics.update(latency_ms=round(metrics["latency_ms"] * (1 - 0.02 * depth), 4))
        keep = max(0.0, 1.0 - 0.1 * depth)
        metrics.update(map50_95=round(metrics["map50_95"] * keep, 6), map50=round(metrics["map50"] * keep, 6))
    metrics["speedup"] = round(_BASE["latency_ms"] / metrics["latency_ms"], 5)
    metrics["ort_latency_ms"] = round(metrics["latency_ms"] / 2, 4)  # ONNX Runtime: about 2x eager on CPU
    metrics["ort_speedup"] = metrics["speedup"]
    if spec.values["quantize"] == "int8":  # shaped like real int8 PTQ: 0.58x the fp16 file, 1.6x faster, 2% lower mAP
        metrics.update(size_mb=round(metrics["size_mb"] * 0.58, 4), size_zip_mb=round(metrics["size_zip_mb"] * 0.47, 4))
        metrics.update(map50_95=round(metrics["map50_95"] * 0.98, 6), map50=round(metrics["map50"] * 0.98, 6))
        metrics.update(ort_latency_ms=round(metrics["ort_latency_ms"] / 1.6, 4))
        metrics["ort_speedup"] = round(metrics["ort_speedup"] * 1.6, 5)
    metrics["sparsity"] = round(1.0 - kept, 6)
    if spec.screen is not None:
        metrics[ONESHOT] = oneshot
    files = {}
    if spec.workload.save_checkpoint:
        seed = hashlib.sha256(json.dumps(spec.ratios, sort_keys=True).encode()).digest()
        files["pruned.pt"] = (seed * (fake.checkpoint_kb * 1024 // len(seed) + 1))[: fake.checkpoint_kb * 1024]
        if spec.values["quantize"] == "int8":
            files["pruned.int8.onnx"] = files["pruned.pt"][: len(files["pruned.pt"]) // 4]
    doc = {"trial": spec.number, "study": spec.workload.study, **spec.values, "ratios": spec.ratios}
    files["ratios.json"] = json.dumps({**doc, "report": {"method": "fake"}}, indent=1, sort_keys=True).encode()
    return TrialResult(spec.number, True, metrics, history, files, device=f"cpu (fake) {socket.gethostname()}")


def _costs(kept: float) -> dict[str, float]:
    """The costs known at the cut (study.metrics.CUT_COSTS), as the finished trial reports them."""
    params = round(_BASE["params"] * kept)
    return {"params": params, "nonzero_params": params, "gflops": round(_BASE["gflops"] * kept, 5),
            "sparsity": round(1.0 - kept, 6)}  # fmt: skip


def _recovery(epochs: int) -> float:
    """The fraction of the cut's accuracy a fine-tune of ``epochs`` gives back (0.8 with none: one-shot)."""
    return 1.0 - 0.5 ** (1 + epochs) * 0.4


def _screened(spec: TrialSpec, raw: float, kept: float, reason: str) -> TrialResult:
    """A trial stopped at the screen: its one-shot scores and weight counts, as the real trial returns them."""
    shot = raw * _recovery(0)
    metrics = {
        "map50_95": round(_BASE["map50_95"] * shot, 6),
        "map50": round(_BASE["map50"] * shot, 6),
        "params": round(_BASE["params"] * kept),
        "nonzero_params": round(_BASE["params"] * kept),
        "sparsity": round(1.0 - kept, 6),
    }
    return TrialResult(
        spec.number, True, metrics, device=f"cpu (fake) {socket.gethostname()}", screened=True, reason=reason
    )
