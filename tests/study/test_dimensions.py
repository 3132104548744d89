"""A search dimension is one declaration: a dummy one, declared here in a few lines, is read from the study file,
sampled by Optuna, passed to the (fake) trial, logged to MLflow and shown by ``status``."""

from __future__ import annotations

import json

import pytest
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.search import load_existing
from orchestrator.study.dimensions import DIMENSIONS, IntRange, register, unregister
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study


@pytest.fixture
def warmup():
    dim = register(IntRange("warmup", "finetune", (0, 0)))  # the whole declaration
    yield dim
    unregister("warmup")


def test_declared_dimension_is_read_and_checked(tmp_path, warmup):
    spec = load_study_spec(fake_study(tmp_path, finetune={"warmup": {"min": 1, "max": 4}}))
    assert (spec.space["warmup"].low, spec.space["warmup"].high) == (1, 4)
    with pytest.raises(ConfigError) as e:
        load_study_spec(fake_study(tmp_path, finetune={"warmup": {"min": 4, "max": 1}}))
    assert "finetune.warmup: min <= max must hold, got min=4 max=1" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_study_spec(fake_study(tmp_path, finetune={"warmpu": 2}))
    assert "finetune.warmpu: unknown key (did you mean 'warmup'?)" in str(e.value)


def test_unknown_without_the_declaration(tmp_path):
    assert "warmup" not in DIMENSIONS
    with pytest.raises(ConfigError, match="finetune.warmup: unknown key"):
        load_study_spec(fake_study(tmp_path, finetune={"warmup": 2}))


def test_declared_dimension_reaches_the_trial_mlflow_and_status(tmp_path, warmup, capsys):
    path = fake_study(
        tmp_path, finetune={"warmup": {"min": 0, "max": 5}}, budget={"n_trials": 5}, tracking={"artifacts": "all"}
    )
    spec = load_study_spec(path)
    assert run_study(spec, live=False).complete == 5
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert [t.params["warmup"] for t in trials[:2]] == [5, 5]  # baselines: the most a searched trial can get
    assert all(0 <= t.params["warmup"] <= 5 for t in trials)
    runs = trial_runs(spec)
    assert all(runs[t.number].data.params["warmup"] == str(t.params["warmup"]) for t in trials)
    for t in trials:  # what the fake trial received, as it wrote it into its ratio map
        from mlflow.tracking import MlflowClient

        c = MlflowClient(spec.tracking.uri)
        doc = json.loads(
            open(c.download_artifacts(runs[t.number].info.run_id, "model/ratios.json", str(tmp_path))).read()
        )
        assert doc["warmup"] == t.params["warmup"]
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "origin" in line)
    assert "warmup" in header
    assert main(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [r["dimensions"]["warmup"] for r in status["trials"]] == [t.params["warmup"] for t in trials]
