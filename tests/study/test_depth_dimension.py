"""``pruning.depth`` as a search dimension: the study file's forms, the Optuna space and the baselines' value, a fake
study that records it, and ``check`` refusing a depth the model cannot give (one line, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flat_model import flat_checkpoint
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.search import baseline_values, build_space, load_existing
from orchestrator.search.record import is_uniform
from orchestrator.study.dimensions import Range, parameter_names
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study

GROUPS = ["model.0", "model.1"]


def test_study_file_forms(tmp_path):
    plain = load_study_spec(fake_study(tmp_path))
    assert plain.space["depth"] == Range(0, 0) and "depth" not in parameter_names(plain.space)  # columns unchanged
    assert "depth" not in build_space(plain, GROUPS).distributions()
    ranged = load_study_spec(fake_study(tmp_path, pruning={"depth": {"min": 0, "max": 4}}))
    dist = build_space(ranged, GROUPS).distributions()["depth"]
    assert (dist.low, dist.high) == (0, 4) and "depth" in parameter_names(ranged.space)
    fixed = load_study_spec(fake_study(tmp_path, pruning={"depth": 2}))
    assert fixed.space["depth"] == Range(2, 2) and "depth" in parameter_names(fixed.space)  # recorded, a column


def test_baselines_drop_the_fewest(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, pruning={"depth": {"min": 1, "max": 4}}))
    assert baseline_values(spec)["depth"] == 1
    space = build_space(spec, GROUPS)
    assert space.enqueued_params(dict.fromkeys(GROUPS, 0.3), baseline_values(spec))["depth"] == 1
    told = load_study_spec(fake_study(tmp_path, pruning={"depth": {"max": 4}}, baselines={"ratios": [0.1], "depth": 3}))
    assert baseline_values(told)["depth"] == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "pruning.depth: must be >= 0, got -1"),
        ("2", "pruning.depth: must be an integer or {min, max}, got '2'"),
        ({"min": 3, "max": 1}, "pruning.depth: min <= max must hold, got min=3 max=1"),
        ({"min": 1}, "pruning.depth.max: missing"),
    ],
)
def test_bad_depth_is_refused_naming_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError) as e:
        load_study_spec(fake_study(tmp_path, pruning={"depth": value}))
    assert message in str(e.value) and len(e.value.problems) == 1


def test_fake_study_records_depth(tmp_path, capsys):
    spec = load_study_spec(fake_study(tmp_path, pruning={"depth": {"min": 0, "max": 3}}, budget={"n_trials": 5}))
    assert run_study(spec, live=False).complete == 5
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert all(0 <= t.params["depth"] <= 3 for t in trials)
    assert [t.params["depth"] for t in trials if is_uniform(t)] == [0, 0]  # the two uniform baselines
    runs = trial_runs(spec)
    assert all(runs[t.number].data.params["depth"] == str(t.params["depth"]) for t in trials)
    assert main(["status", str(spec.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert {r["dimensions"]["depth"] for r in rows} == {t.params["depth"] for t in trials}


def _check(study: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESTRATOR_CACHE=str(study.parent / "cache"))
    cmd = [sys.executable, "-m", "orchestrator", "check", str(study)]
    return subprocess.run(cmd, cwd=study.parent, capture_output=True, text=True, timeout=300, env=env)


def _real(folder: Path, model: Path, assets: Path, depth, **overrides) -> Path:
    return fake_study(
        folder, trial="real", model=str(model), data=str(assets / "coco128.yaml"), imgsz=320,
        pruning={"method": "structured", "depth": depth}, **overrides,
    )  # fmt: skip


def test_check_refuses_depth_on_a_model_without_c3_blocks(tmp_path, assets):
    study = _real(tmp_path, flat_checkpoint(tmp_path), assets, {"max": 2})
    p = _check(study)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: {study}: pruning.depth: flat.pt has no C3 blocks, so no bottleneck to drop: leave depth out"
    ]


def test_check_refuses_more_bottlenecks_than_the_model_has(tmp_path, assets):
    study = _real(tmp_path, assets / "yolov5n.pt", assets, {"min": 1, "max": 12})
    p = _check(study)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: {study}: pruning.depth: 12 bottlenecks to drop, but yolov5n.pt has 11 in its C3 blocks"
    ]
    ok = _check(_real(tmp_path, assets / "yolov5n.pt", assets, {"min": 1, "max": 11}))  # all of them: allowed
    assert ok.returncode == 0, ok.stderr


def test_fake_trial_is_cheaper_and_less_accurate_with_depth(tmp_path):
    from orchestrator.trial.contract import TrialSpec, WorkerCache, Workload
    from orchestrator.trial.fake import run_fake_trial

    w = Workload.from_spec(load_study_spec(fake_study(tmp_path, fake={"sleep_s": 0}, pruning={"depth": {"max": 3}})))
    values = {"epochs": 0, "lr0": 0.001, "quantize": "none", "imgsz": 640}
    flat, deep = (run_fake_trial(TrialSpec(0, w, {}, {**values, "depth": d}), WorkerCache()).metrics for d in (0, 2))
    assert deep["gflops"] < flat["gflops"] and deep["map50_95"] < flat["map50_95"]
    assert deep["ort_speedup"] > flat["ort_speedup"]


def test_check_names_baselines_depth_when_the_baselines_ask_too_many(tmp_path, assets, capsys):
    study = _real(tmp_path, assets / "yolov5n.pt", assets, {"max": 2}, baselines={"depth": 12})
    assert main(["check", str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {study}: baselines.depth: 12 bottlenecks to drop, but yolov5n.pt has 11 in its C3 blocks"]
