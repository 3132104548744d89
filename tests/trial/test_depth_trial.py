"""A real two-trial study with ``pruning.depth``: each trial's checkpoint (in MLflow, official layout) has that many
fewer bottlenecks, its costs fall with them, its mAP is measured, and the depth is the trial's MLflow param."""

from __future__ import annotations

import json

import pytest
from data_subsets import subset_yaml
from study_files import fake_study, trial_runs

from orchestrator.search import load_existing
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study

pytestmark = (
    pytest.mark.slow
)  # two real trials at imgsz 160 on 4 + 4 images; each test 1-4 min on the loaded 2-core CPU


def test_depth_study_ships_shallower_checkpoints(tmp_path, assets):
    from mlflow.tracking import MlflowClient

    from orchestrator.prune.depth import c3_blocks
    from orchestrator.yolo.checkpoint import load_checkpoint

    data = subset_yaml(assets / "coco128.yaml", tmp_path, train=slice(0, 4), val=slice(8, 12))
    path = fake_study(
        tmp_path, "depth", trial="real", model=str(assets / "yolov5n.pt"), data=str(data), imgsz=160, device="cpu",
        pruning={"method": "structured", "granularity": "stage", "ratio": {"max": 0.2}, "calib_images": 4,
                 "depth": {"min": 1, "max": 4}},
        finetune={"epochs": 0}, baselines={"ratios": [0.1]}, budget={"n_trials": 2},
        objectives=[{"metric": "map50_95"}, {"metric": "gflops"}],
        resources={"num_cpus": 2, "cpus_per_trial": 2}, tracking={"artifacts": "all"},
    )  # fmt: skip
    spec = load_study_spec(path)
    assert run_study(spec, live=False).complete == 2
    trials = load_existing(spec).get_trials(deepcopy=False)
    runs, client = trial_runs(spec), MlflowClient(spec.tracking.uri)
    for t in trials:
        depth, run = t.params["depth"], runs[t.number]
        assert 1 <= depth <= 4 and run.data.params["depth"] == str(depth)
        local = client.download_artifacts(run.info.run_id, "model", str(tmp_path / f"t{t.number}"))
        ck = load_checkpoint(f"{local}/pruned.pt")
        assert sum(b.bottlenecks for b in c3_blocks(ck.model)) == 11 - depth  # yolov5n has 11
        m = run.data.metrics
        assert 0.0 < m["map50_95"] < 1.0 and m["recovery_s"] > 0 and m["gflops"] < 0.9 * 4.5 * (160 / 640) ** 2
        doc = json.loads((tmp_path / f"t{t.number}" / "model" / "ratios.json").read_text())
        assert sum(b - a for b, a in doc["bottlenecks"].values()) == depth


def test_unstructured_trial_drops_depth_then_masks_what_is_left(tmp_path, assets):
    from orchestrator.prune import prunable_groups
    from orchestrator.prune.depth import c3_blocks
    from orchestrator.trial import steps
    from orchestrator.trial.context import WorkerContext
    from orchestrator.trial.contract import TrialSpec, WorkerCache, Workload

    data = subset_yaml(assets / "coco128.yaml", tmp_path, train=slice(0, 4), val=slice(4, 8))
    path = fake_study(
        tmp_path, "u", trial="real", model=str(assets / "yolov5n.pt"), data=str(data), imgsz=64, device="cpu",
        pruning={"method": "unstructured", "granularity": "layer", "calib_images": 4, "depth": {"max": 3}},
        objectives=[{"metric": "map50_95"}, {"metric": "nonzero_params"}],
    )  # fmt: skip
    w = Workload.from_spec(load_study_spec(path))
    ctx = WorkerContext.of(w, WorkerCache())
    groups = prunable_groups(ctx.model, "layer", method="unstructured")
    values = {"epochs": 0, "lr0": 0.001, "quantize": "none", "imgsz": 64, "depth": 3}
    cut = steps.cut(TrialSpec(0, w, dict.fromkeys(groups, 0.3), values), ctx)
    assert sum(b.bottlenecks for b in c3_blocks(cut.model)) == 8 and cut.depth.dropped == 3
    assert cut.report.sparsity == pytest.approx(0.3, abs=0.01)  # the masks cover the layers that are left
    assert cut.recovery.convs_changed.get("reconstruct", 0) > 0  # what follows the dropped bottlenecks was refit
    assert sum(b.bottlenecks for b in c3_blocks(ctx.model)) == 11  # the worker's baseline is untouched
