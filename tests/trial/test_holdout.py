"""The held-out test split: a real (tiny) study whose data has ``test:`` ends with test figures on every Pareto
trial and every uniform baseline, in MLflow and in ``status --json``, and on no other trial."""

from __future__ import annotations

import json

import optuna
import pytest
from data_subsets import subset_yaml
from study_files import fake_study, trial_runs

from orchestrator import cli
from orchestrator.errors import OrchestratorError
from orchestrator.search import ATTR_BASELINE, ATTR_METRICS, ATTR_TEST, held_out_points, revealed
from orchestrator.study.file import load_study_spec
from orchestrator.trial.contract import TrialSpec, WorkerCache, Workload
from orchestrator.trial.heldout import validate_on_test
from orchestrator.trial.runner import execute


def _trial(number: int, values: list[float], **attrs) -> optuna.trial.FrozenTrial:
    metrics = {"map50_95": values[0], "gflops": values[1]}
    attrs = {ATTR_TEST: {"test_map50_95": number / 10}, ATTR_METRICS: metrics, **attrs}
    t = optuna.trial.create_trial(values=values, user_attrs=attrs)
    t.number = number
    return t


def test_only_the_front_and_the_uniform_baselines_are_revealed():
    directions = ["maximize", "minimize"]  # mAP, size
    trials = [
        _trial(0, [0.30, 10.0], **{ATTR_BASELINE: 0.1}),  # a uniform baseline, dominated by 2
        _trial(1, [0.20, 9.0]),  # dominated by 2, not a baseline: sealed
        _trial(2, [0.31, 8.0]),  # the front
        _trial(3, [0.10, 2.0]),  # the front
    ]
    assert revealed(trials, directions) == {
        0: {"test_map50_95": 0.0},
        2: {"test_map50_95": 0.2},
        3: {"test_map50_95": 0.3},
    }
    assert held_out_points(trials, directions, "gflops") == [(10.0, 0.0), (8.0, 0.2), (2.0, 0.3)]


def test_pareto_plot_draws_the_held_out_points(tmp_path):
    from orchestrator.search import pareto_front
    from orchestrator.tracking.plots import front_plots

    spec = load_study_spec(fake_study(tmp_path))  # objectives: map50_95 (max), gflops (min)
    trials = [_trial(0, [0.30, 10.0], **{ATTR_BASELINE: 0.1}), _trial(2, [0.31, 8.0]), _trial(3, [0.10, 2.0])]
    front = pareto_front(trials, spec.directions)
    (drawn,) = front_plots(trials, front, spec, {}, tmp_path)
    with_test = drawn.read_bytes()
    for t in trials:  # the same study without held-out figures
        del t.user_attrs[ATTR_TEST]
    (drawn,) = front_plots(trials, front, spec, {}, tmp_path)
    assert drawn.name == "gflops_vs_map50_95.png" and drawn.read_bytes() != with_test


def test_on_demand_from_a_saved_checkpoint(yolov5n, coco128_yaml, tmp_path):
    """pareto --test for a trial that ran before the data had a test split: validated now from its checkpoint."""
    from orchestrator.yolo.official_layout import save_official

    pt = save_official(yolov5n, tmp_path / "model" / "pruned.pt")
    no_test = subset_yaml(coco128_yaml, tmp_path, val=slice(0, 8))
    spec = load_study_spec(fake_study(tmp_path, name="a", trial="real", data=str(no_test), imgsz=64))
    with pytest.raises(OrchestratorError, match="no test split: add `test:`"):
        validate_on_test(spec, [5], lambda n, folder: [pt])
    with_test = subset_yaml(coco128_yaml, tmp_path / "model", val=slice(0, 8), test=slice(8, 16))
    spec = load_study_spec(fake_study(tmp_path, name="b", trial="real", data=str(with_test), imgsz=64))
    got = validate_on_test(spec, [5], lambda n, folder: [pt])
    assert list(got) == [5] and got[5]["test_images"] == 8 and 0 < got[5]["test_map50"] <= 1


def test_test_data_names_its_own_yaml(assets, coco128_yaml, tmp_path, capsys):
    """study file `test_data:`: a separate yaml whose val: (no test: there) is the held-out split; check finds it."""
    data = subset_yaml(coco128_yaml, tmp_path, train=slice(0, 4), val=slice(4, 12))
    (tmp_path / "held").mkdir()
    held = subset_yaml(coco128_yaml, tmp_path / "held", val=slice(12, 24))
    study = fake_study(
        tmp_path, trial="real", model=str(assets / "yolov5n.pt"), data=str(data), test_data=str(held), imgsz=64
    )
    assert cli.main(["check", str(study)]) == 0, capsys.readouterr().err
    spec = load_study_spec(study)
    r = execute(
        TrialSpec(0, Workload.from_spec(spec), {"backbone.P1": 0.1}, {"epochs": 0, "lr0": 0.001, "quantize": "none"}),
        WorkerCache(),
    )
    assert r.ok, r.failure
    assert r.test["test_images"] == 12 and 0 <= r.test["test_map50_95"] <= r.test["test_map50"] <= 1
    assert "test_map50_95" not in r.metrics  # sealed: not among the figures selection reads


@pytest.mark.slow
def test_front_and_baselines_get_held_out_figures(assets, coco128_yaml, tmp_path, capsys):
    data = subset_yaml(coco128_yaml, tmp_path, train=slice(0, 4), val=slice(4, 20), test=slice(20, 36))
    study = fake_study(
        tmp_path,
        trial="real",
        model=str(assets / "yolov5n.pt"),
        data=str(data),
        imgsz=64,
        device="cpu",
        finetune={"epochs": 0},  # no training: the test is about which figures exist, not about accuracy
        baselines={"ratios": [0.3]},
        budget={"n_trials": 2},  # the uniform baseline and one sampled trial
        resources={"num_cpus": 2, "cpus_per_trial": 2},
    )
    assert cli.main(["run", str(study), "--no-live"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["status", str(study), "--json"]) == 0
    trials = [r for r in json.loads(capsys.readouterr().out)["trials"] if r["state"] == "COMPLETE"]
    chosen = {r["number"] for r in trials if r["pareto"] or r["uniform_ratio"] is not None}
    assert any(r["uniform_ratio"] is not None for r in trials) and chosen
    runs = trial_runs(load_study_spec(study))
    for r in trials:
        logged = runs[r["number"]].data.metrics
        if r["number"] in chosen:
            assert 0 <= r["test"]["test_map50"] <= 1 and r["test"]["test_images"] == 16
            assert logged["test_map50_95"] == pytest.approx(r["test"]["test_map50_95"])
            assert logged["map50_95"] == pytest.approx(r["metrics"]["map50_95"])  # val figures stay beside
        else:  # sealed: a trial nobody chose shows no held-out figure anywhere
            assert r["test"] is None and "test_map50_95" not in logged
    assert cli.main(["pareto", str(study), "--test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["number"] for r in out["front"] + out["uniform"]} == chosen
    assert all(r["test"]["test_map50_95"] >= 0 for r in out["front"] + out["uniform"])


def test_pareto_csv_puts_test_beside_val(tmp_path):
    import csv
    import io

    from orchestrator.search import pareto_front
    from orchestrator.tracking.tracker import pareto_csv

    spec = load_study_spec(fake_study(tmp_path))
    trials = [_trial(2, [0.31, 8.0]), _trial(3, [0.10, 2.0])]
    rows = list(csv.DictReader(io.StringIO(pareto_csv(pareto_front(trials, spec.directions), spec))))
    assert [(r["trial"], r["map50_95"], r["test_map50_95"]) for r in rows] == [
        ("2", "0.31", "0.2"),
        ("3", "0.1", "0.3"),
    ]
    for t in trials:
        del t.user_attrs[ATTR_TEST]
    assert "test_map50_95" not in pareto_csv(pareto_front(trials, spec.directions), spec)
