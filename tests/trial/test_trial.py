"""The real trial on the real assets, in-process (no Ray): the seam a worker runs, with its cache."""

from __future__ import annotations

import io
import json

import pytest
from study_files import fake_study

from orchestrator.study.file import load_study_spec
from orchestrator.trial.contract import TrialSpec, WorkerCache, Workload
from orchestrator.trial.runner import execute, execute_baseline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workload(tmp_path_factory, assets):
    folder = tmp_path_factory.mktemp("trial")
    path = fake_study(
        folder,
        trial="real",
        model=str(assets / "yolov5n.pt"),
        data=str(assets / "coco128.yaml"),
        imgsz=128,
        batch=16,
        device="cpu",
        pruning={"method": "unstructured", "granularity": "stage"},
        tracking={"artifacts": "pareto"},
        resources={"cpus_per_trial": 2},
    )
    return Workload.from_spec(load_study_spec(path))


def test_baseline_then_a_pruned_fine_tuned_trial(workload):
    cache = WorkerCache()
    base = execute_baseline(workload, cache)
    assert set(base.groups) >= {"backbone.P1", "backbone.P5", "neck", "head"}
    assert 0.05 < base.metrics["map50_95"] < 0.4 and base.metrics["speedup"] == 1.0
    model = cache.items["context"].model
    ratios = {g: 0.3 for g in base.groups}
    r = execute(TrialSpec(7, workload, ratios, {"epochs": 1, "lr0": 0.002, "quantize": "none"}), cache, "test")
    assert r.ok, r.failure
    assert cache.items["context"].model is model  # the worker's baseline model is reused, not changed
    assert r.metrics["nonzero_params"] < 0.75 * base.metrics["nonzero_params"]
    assert r.metrics["params"] == base.metrics["params"]  # unstructured: same dense shapes
    assert 0.0 <= r.metrics["map50_95"] < base.metrics["map50_95"] + 0.05
    assert len(r.history) == 1 and {"box", "obj", "cls", "map50_95"} <= set(r.history[0])
    assert json.loads(r.files["ratios.json"])["ratios"] == ratios
    # ONNX Runtime latency, against the unpruned model's session the worker opened once and keeps
    assert base.metrics["ort_speedup"] == 1.0 and base.metrics["ort_latency_ms"] > 0
    assert r.metrics["ort_latency_ms"] > 0 and r.metrics["ort_speedup"] > 0
    session = cache.items["context"].ort_baseline()
    assert execute(TrialSpec(8, workload, ratios, {"epochs": 0, "lr0": 0.002, "quantize": "none"}), cache, "test").ok
    assert cache.items["context"].ort_baseline() is session

    from orchestrator.yolo.checkpoint import load_checkpoint

    path = io.BytesIO(r.files["pruned.pt"])
    tmp = workload.base_dir + "/pruned.pt"
    with open(tmp, "wb") as f:
        f.write(path.getvalue())
    loaded = load_checkpoint(tmp)  # the official-layout checkpoint opens with the allow-list loader
    assert sum(int((p == 0).sum()) for n, p in loaded.model.named_parameters() if n.endswith("conv.weight")) > 0
    assert len(loaded.masks) == 60  # the masks are recorded: a fine-tune of this file keeps its zeros


def test_bad_ratio_key_fails_the_trial_not_the_worker(workload):
    cache = WorkerCache()
    r = execute(
        TrialSpec(1, workload, {"model.99": 0.3}, {"epochs": 0, "lr0": 0.002, "quantize": "none"}), cache, "test"
    )
    assert not r.ok and "model.99" in r.failure


def test_a_real_fine_tune_stops_early_behind_a_cheaper_reference(workload):
    from orchestrator.trial.contract import EarlyStop, Reference

    cache = WorkerCache()
    base = execute_baseline(workload, cache)
    rule = EarlyStop(0.0, 1, (("gflops", "minimize"),), (Reference(2, (0.0,), (0.99, 0.99)),))
    values = {"epochs": 2, "lr0": 0.002, "quantize": "none"}
    r = execute(TrialSpec(9, workload, {g: 0.2 for g in base.groups}, values, stop=rule), cache, "test")
    assert r.ok and r.screened and r.stopped_epoch == 1 and len(r.history) == 1, r.failure
    assert r.reason.startswith("stopped after epoch 1 of 2: mAP50-95 ") and "trial 2" in r.reason
    assert r.metrics["map50_95"] == r.history[0]["map50_95"] and abs(r.stop_gap - (0.99 - r.metrics["map50_95"])) < 1e-9
    assert 0 < r.metrics["gflops"] and r.metrics["nonzero_params"] < base.metrics["nonzero_params"]
    assert "pruned.pt" not in r.files  # never shipped: it is not a result
