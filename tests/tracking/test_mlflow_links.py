"""What the MLflow UI is told about a study (on a real SQLite store): a model-training experiment, a parent run
whose description links the Pareto page and the trials, a saved runs view with the objectives and their charts."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_files import fake_study

from orchestrator.study.file import load_study_spec
from orchestrator.tracking.links import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    SHARED_VIEW_TAG,
    pareto_view,
    share_key,
    trial_runs_view,
)
from orchestrator.tracking.tracker import Tracker


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tracker that logged four trials (one a uniform baseline) and refreshed the front."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study_spec(
        fake_study(
            tmp_path_factory.mktemp("links"),
            objectives=[{"metric": "map50_95"}, {"metric": "gflops"}, {"metric": "params"}],
        )
    )
    study = optuna.create_study(directions=spec.directions)
    dist = {
        "ratio.model.2": optuna.distributions.FloatDistribution(0, 0.6),
        "epochs": optuna.distributions.IntDistribution(0, 2),
    }
    for i in range(4):
        t = study.ask(dist)
        m = {"map50_95": 0.3 - 0.05 * i, "gflops": 1.0 - 0.1 * i, "params": 1e6 - 1e5 * i}
        t.set_user_attr("metrics", m)
        if i == 1:
            t.set_user_attr("uniform_ratio", 0.3)
        study.tell(t, [m[o.metric] for o in spec.objectives])
    tracker = Tracker(spec, spec.storage)
    tracker.open()
    trials = study.get_trials()
    for t in trials:
        tracker.log_trial(t, None, keep_files=False)
    tracker.refresh_front(trials, {"map50_95": 0.35, "gflops": 1.1, "params": 1.2e6}, force=True)
    tracker.finish()
    return spec, tracker


def test_experiment_is_model_training_and_parent_links_the_views(logged):
    spec, tracker = logged
    c = MlflowClient(spec.tracking.uri)
    exp = c.get_experiment(tracker.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    note = c.get_run(tracker.parent_id).data.tags[NOTE_TAG]
    assert f"({pareto_view(tracker.experiment_id, tracker.parent_id)})" in note
    assert f"({trial_runs_view(tracker.experiment_id, spec.name, shared=True)})" in note
    view = "#/experiments/7/runs/abc/artifactPath/pareto/pareto.html?workflowType=machine_learning"
    assert pareto_view("7", "abc") == view
    arts = [a.path for a in c.list_artifacts(tracker.parent_id, "pareto")]
    assert "pareto/pareto.html" in arts and "pareto/gflops_vs_map50_95.png" in arts  # refreshed together
    names = sorted(r.info.run_name for r in c.search_runs([tracker.experiment_id], "tags.role = 'trial'"))
    assert names == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]  # sort as numbers do


def test_saved_view_shows_objectives_and_charts_each_pair(logged):
    spec, tracker = logged
    exp = MlflowClient(spec.tracking.uri).get_experiment(tracker.experiment_id)
    view = json.loads(exp.tags[SHARED_VIEW_TAG + share_key(spec.name)])
    assert view["searchFilter"] == "tags.role = 'trial' and tags.study = 'fake'"
    assert view["orderByKey"] == "tags.`mlflow.runName`" and view["orderByAsc"] == "true"
    cols = view["selectedColumns"]
    assert {"metrics.`map50_95`", "metrics.`gflops`", "metrics.`params`", "tags.`origin`"} <= set(cols)
    scatters = [(c["xaxis"]["key"], c["yaxis"]["key"]) for c in view["compareRunCharts"] if c["type"] == "SCATTER"]
    assert sorted(scatters) == sorted([("gflops", "map50_95"), ("params", "map50_95"), ("params", "gflops")])
    (parallel,) = [c for c in view["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == ["epochs", "ratio.model.2"]
    assert parallel["selectedMetrics"] == ["map50_95", "gflops", "params"]
    assert view["runsHiddenMode"] == "SHOW_ALL"  # the UI's default would chart the first 10 trials only
