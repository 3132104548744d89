"""MLflow view of a study on a real SQLite store: runs found again by tags, nothing logged twice, secrets masked."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_files import fake_study, trial_runs

from orchestrator.errors import OrchestratorError
from orchestrator.study.file import load_study_spec
from orchestrator.tracking.tracker import Tracker, preflight

STORAGE = "postgresql://optuna:s3cret@db.example:5432/studies"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracking")
    return load_study_spec(fake_study(folder, tracking={"refresh_s": 0}))


@pytest.fixture(scope="module")
def finished():
    """Three finished Optuna trials as the driver leaves them (attributes hold everything)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(3):
        t = study.ask(
            {
                "ratio.model.0": optuna.distributions.FloatDistribution(0, 0.6),
                "epochs": optuna.distributions.IntDistribution(0, 2),
            }
        )
        if i == 2:
            t.set_user_attr("failure", "loss became nan at epoch 1")
            study.tell(t, state=optuna.trial.TrialState.FAIL)
            continue
        t.set_user_attr("metrics", {"map50_95": 0.3 - 0.1 * i, "gflops": 1.0 - 0.2 * i, "params": 1e6})
        t.set_user_attr("history", [{"box_loss": 0.1, "map50_95": 0.2}, {"box_loss": 0.05, "map50_95": 0.25}])
        t.set_user_attr("device", "cpu (test)")
        study.tell(t, [0.3 - 0.1 * i, 1.0 - 0.2 * i])
    return study.get_trials()


def test_runs_are_reused_and_never_logged_twice(spec, finished, tmp_path):
    tracker = Tracker(spec, STORAGE)
    tracker.open()
    files = tmp_path / "files"
    files.mkdir()
    (files / "pruned.pt").write_bytes(b"x" * 10)
    assert tracker.log_trial(finished[0], files, keep_files=True)
    assert tracker.log_trial(finished[1], None, keep_files=False)
    assert tracker.log_trial(finished[2], None, keep_files=False)
    assert not tracker.log_trial(finished[0], files, keep_files=True)
    tracker.log_baseline({"map50_95": 0.31, "gflops": 1.1}, "cpu (test)")
    assert tracker.refresh_front(finished, {"map50_95": 0.31, "gflops": 1.1}, force=True)
    tracker.finish()

    again = Tracker(spec, STORAGE)  # a resumed driver
    again.open()
    assert again.parent_id == tracker.parent_id
    assert all(again.is_logged(t.number) for t in finished)
    assert not any(again.log_trial(t, None, keep_files=False) for t in finished)

    runs = trial_runs(spec)
    assert sorted(runs) == [0, 1, 2]
    c = MlflowClient(spec.tracking.uri)
    assert runs[2].info.status == "FAILED" and runs[2].data.tags["failure_reason"] == "loss became nan at epoch 1"
    assert runs[0].data.tags["device"] == "cpu (test)" and runs[0].data.tags["state"] == "COMPLETE"
    assert [a.path for a in c.list_artifacts(runs[0].info.run_id, "model")] == ["model/pruned.pt"]
    assert c.list_artifacts(runs[1].info.run_id, "model") == []
    assert [m.value for m in c.get_metric_history(runs[0].info.run_id, "epoch_box_loss")] == [0.1, 0.05]
    parent = c.get_run(tracker.parent_id)
    assert parent.data.tags["storage"] == "postgresql://optuna:***@db.example:5432/studies"
    assert "s3cret" not in str(parent.data.params) + str(parent.data.tags)
    assert parent.data.metrics["baseline_map50_95"] == 0.31


def test_a_run_left_running_is_completed_in_place(spec, finished):
    tracker = Tracker(spec, STORAGE)
    tracker.open()
    run_id = tracker.runs[1].run_id
    tracker.client.update_run(run_id, status="RUNNING")  # as if the driver died while logging it
    again = Tracker(spec, STORAGE)
    again.open()
    assert not again.is_logged(1)
    assert again.log_trial(finished[1], None, keep_files=False)
    runs = trial_runs(spec)  # still one run per trial
    assert runs[1].info.run_id == run_id and runs[1].info.status == "FINISHED"


def test_preflight_names_the_unwritable_artifact_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = load_study_spec(fake_study(tmp_path, tracking={"artifact_location": str(blocker / "artifacts")}))
    with pytest.raises(OrchestratorError, match=f"tracking.artifact_location: cannot write to {blocker}/artifacts"):
        preflight(spec)
