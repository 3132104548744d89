"""The real and the fake trial keep one contract (runner.TrialRunner): same metric keys, epoch records and
artifact names, so what the study loop's fast tests exercise under the fake is what a real trial returns."""

from __future__ import annotations

import json

import pytest
from study_files import fake_study

from orchestrator.study.file import load_study_spec
from orchestrator.study.metrics import EPOCH_KEYS, TRIAL_METRICS
from orchestrator.trial.contract import AllocationRequest, TrialSpec, WorkerCache, Workload
from orchestrator.trial.runner import (
    ARTIFACTS,
    TrialRunner,
    execute,
    execute_allocations,
    execute_baseline,
    runner_for,
)


@pytest.fixture(scope="module", params=["fake", "real"])
def workload(request, tmp_path_factory, assets):
    folder = tmp_path_factory.mktemp(request.param)
    path = fake_study(
        folder,
        trial=request.param,
        model=str(assets / "yolov5n.pt"),
        data=str(assets / "coco128.yaml"),
        imgsz=128,
        batch=16,
        device="cpu",
        pruning={"method": "unstructured", "granularity": "stage"},
        tracking={"artifacts": "all"},
        resources={"cpus_per_trial": 2},
    )
    return Workload.from_spec(load_study_spec(path))


def test_both_kinds_are_trial_runners():
    for kind in ("real", "fake"):
        runner = runner_for(kind)
        assert isinstance(runner, object) and all(
            callable(getattr(runner, m)) for m in TrialRunner.__dict__ if m[0] != "_"
        )


def test_one_contract(workload):
    cache = WorkerCache()
    base = execute_baseline(workload, cache)
    assert base.groups and all(base.groups.values())
    assert set(TRIAL_METRICS) - {"sparsity"} <= set(base.metrics)
    ratios = {g: 0.2 for g in base.groups}
    values = {"epochs": 1, "lr0": 0.001, "quantize": "none"}
    r = execute(TrialSpec(3, workload, ratios, values), cache, "contract")
    assert r.ok, r.failure
    assert set(TRIAL_METRICS) <= set(r.metrics), set(TRIAL_METRICS) - set(r.metrics)
    assert all(isinstance(v, float | int) for v in r.metrics.values())
    assert len(r.history) == 1 and set(EPOCH_KEYS) <= set(r.history[0])
    assert set(r.files) == {ARTIFACTS["checkpoint"], ARTIFACTS["ratios"]}
    doc = json.loads(r.files[ARTIFACTS["ratios"]])
    assert {"trial", "study", "ratios", "report", *values} <= set(doc) and doc["ratios"] == ratios
    assert doc["epochs"] == 1 and doc["trial"] == 3 and doc["study"] == workload.study
    bounds = {g: (0.0, 0.6) for g in base.groups}
    maps = execute_allocations(workload, AllocationRequest((0.3,), base.groups, bounds, 0.05), cache)
    assert len(maps) == 1 and set(maps[0]) == set(base.groups)
    assert all(0.0 <= v <= 0.6 for v in maps[0].values())


def test_one_screen(workload):
    """Both trials validate the cut before fine-tuning and stop under the floor, with the same one-line reason."""
    from orchestrator.study.metrics import SCREEN_METRICS

    cache = WorkerCache()
    base = execute_baseline(workload, cache)
    values = {"epochs": 1, "lr0": 0.001, "quantize": "none"}
    spec = TrialSpec(5, workload, {g: 0.8 for g in base.groups}, values, screen=(0.9, base.metrics["map50_95"]))
    r = execute(spec, cache, "contract")
    assert r.ok and r.screened, r
    assert set(SCREEN_METRICS) <= set(r.metrics) and r.history == []
    assert r.metrics["map50_95"] < 0.9 * base.metrics["map50_95"]
    assert r.reason == f"screened: one-shot mAP50-95 {r.metrics['map50_95']:.3f} < 0.9 x {base.metrics['map50_95']:.4f}"
    assert ARTIFACTS["checkpoint"] not in r.files  # nothing was fine-tuned: nothing to ship


def test_screen_reason_is_empty_at_or_over_the_floor(workload):
    from orchestrator.trial.contract import screen_reason

    spec = TrialSpec(1, workload, {}, {}, screen=(0.5, 0.3))
    assert screen_reason(spec, 0.15) == "" and screen_reason(spec, 0.2) == ""
    assert screen_reason(spec, 0.149) == "screened: one-shot mAP50-95 0.149 < 0.5 x 0.3000"
    assert screen_reason(TrialSpec(1, workload, {}, {}), 0.0) == ""  # not screened: never stops
