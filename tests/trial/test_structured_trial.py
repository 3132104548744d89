"""A structured trial with one-shot recovery and distillation, and the structured warm start, on the real assets."""

from __future__ import annotations

import pytest
from study_files import fake_study

from orchestrator.study.file import load_study_spec
from orchestrator.trial.contract import AllocationRequest, TrialSpec, WorkerCache, Workload
from orchestrator.trial.runner import execute, execute_allocations

pytestmark = pytest.mark.slow
VALUES = {"epochs": 0, "lr0": 0.0003, "quantize": "none"}


def _workload(folder, assets, imgsz=224, objectives=None, sampler=None, **pruning):
    folder.mkdir(exist_ok=True)
    extra = {"objectives": objectives} if objectives else {}
    if sampler:
        extra["sampler"] = sampler
    path = fake_study(
        folder,
        trial="real",
        model=str(assets / "yolov5n.pt"),
        data=str(assets / "coco128.yaml"),
        imgsz=imgsz,
        batch=16,
        device="cpu",
        pruning={"method": "structured", "granularity": "stage", "calib_images": 16, **pruning},
        finetune={"distill": 1.0},
        resources={"cpus_per_trial": 2},
        tracking={"artifacts": "none"},
        **extra,
    )
    return Workload.from_spec(load_study_spec(path))


def test_recovery_keeps_what_a_plain_cut_loses(tmp_path, assets):
    plain = _workload(tmp_path / "plain", assets, importance="l1", recover=[])  # names no recovery: none
    recovered = _workload(tmp_path / "rec", assets, importance="output_error", recover=["compensate", "reconstruct"])
    assert recovered.pruning.recover == ("compensate", "reconstruct") and recovered.finetune.distill == 1.0
    ratios = {g: 0.1 for g in ("backbone.P1", "backbone.P2", "backbone.P3", "backbone.P4", "backbone.P5", "neck")}
    cut = execute(TrialSpec(0, plain, ratios, VALUES), WorkerCache())
    cache = WorkerCache()
    rec = execute(TrialSpec(0, recovered, ratios, VALUES), cache)
    assert cut.ok and rec.ok, (cut.failure, rec.failure)
    assert rec.metrics["gflops"] == pytest.approx(cut.metrics["gflops"])  # the same widths
    assert rec.metrics["recovery_s"] > 0 and "recovery_s" not in cut.metrics
    assert rec.metrics["map50_95"] > 2 * cut.metrics["map50_95"] + 0.01, (
        rec.metrics["map50_95"],
        cut.metrics["map50_95"],
    )
    tuned = execute(TrialSpec(1, recovered, ratios, {**VALUES, "epochs": 1}), cache)  # distilled from the baseline
    assert tuned.ok, tuned.failure
    # calibration images cached across trials
    assert len(tuned.history) == 1 and "oneshot" in cache.items["context"].built()


def test_sensitivity_warm_start_meets_the_uniform_cuts_gflops(tmp_path, assets):
    from orchestrator.prune.budget_cut import gflops_fraction

    w = _workload(tmp_path, assets, recover=["compensate"])
    cache = WorkerCache()
    groups = {g: [] for g in ("backbone.P3", "backbone.P4", "backbone.P5", "neck")}
    bounds = dict.fromkeys(groups, (0.0, 0.6))
    (alloc,) = execute_allocations(w, AllocationRequest((0.3,), groups, bounds, None), cache)
    assert set(alloc) == set(groups) and all(0.0 <= r <= 0.6 for r in alloc.values())
    model = cache.items["context"].model
    uniform = gflops_fraction(model, dict.fromkeys(groups, 0.3), "stage", 224, w.pruning.round_to)  # as the trial cuts
    assert w.pruning.round_to == 8 and gflops_fraction(model, alloc, "stage", 224, w.pruning.round_to) <= uniform + 1e-9
    assert alloc != dict.fromkeys(groups, 0.3)  # the scan moved the cut to where it costs least


def test_the_latency_warm_start_ranks_cuts_by_measured_ms(tmp_path, assets, monkeypatch):
    """sampler.warm_start: latency: the allocation matches the uniform cut's measured ONNX Runtime speed-up, ranked by
    the latency table (timed once into the cache folder), not by GFLOPs. Opt-in: timings differ between machines."""
    from orchestrator.errors import ConfigError

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    objectives = [{"metric": "map50_95"}, {"metric": "ort_speedup"}]
    latency = {"warm_start": "latency"}
    w = _workload(
        tmp_path, assets, imgsz=128, objectives=objectives, recover=["compensate"], calib_images=4, sampler=latency
    )
    assert w.latency_objective
    assert not _workload(
        tmp_path / "s", assets, objectives=objectives, sampler={"warm_start": "sensitivity"}
    ).latency_objective
    with pytest.raises(ConfigError, match="sampler.warm_start: latency ranks cuts by ONNX Runtime milliseconds"):
        _workload(tmp_path / "g", assets, sampler=latency)  # objectives map50_95 and gflops: nothing timed to rank by
    cache = WorkerCache()
    groups = {g: [] for g in ("backbone.P4", "backbone.P5", "neck")}
    bounds = dict.fromkeys(groups, (0.0, 0.6))
    (alloc,) = execute_allocations(w, AllocationRequest((0.4,), groups, bounds, 0.05), cache)
    assert set(alloc) == set(groups) and all(0.0 <= r <= 0.6 for r in alloc.values())
    ctx = cache.items["context"]
    assert "scan" in ctx.speed_scan or alloc == dict.fromkeys(groups, 0.4)  # scanned, or the uniform fallback
    assert list((tmp_path / "cache" / "latency").glob("*.json"))  # the table was measured and kept
