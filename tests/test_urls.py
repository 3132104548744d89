"""Passwords in storage and tracking URLs never reach a log line, a printed summary, an MLflow param or tag."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_files import fake_study

from orchestrator.cli import main
from orchestrator.errors import OrchestratorError
from orchestrator.search import ATTR_FAILURE, create_or_load, open_storage
from orchestrator.spec import load_study_spec
from orchestrator.tracking import Tracker
from orchestrator.urls import mask_url

SECRET = "s3cret-Pw"


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://optuna:s3cret@db:5432/studies", "postgresql://optuna:***@db:5432/studies"),
        ("postgresql+psycopg2://u:p%40ss:w@db/x", "postgresql+psycopg2://u:***@db/x"),
        ("mysql://root:pw@127.0.0.1/optuna?charset=utf8", "mysql://root:***@127.0.0.1/optuna?charset=utf8"),
        ("https://alice:tok3n@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
        (
            "postgresql://db/x?user=u&password=pw&sslmode=require",
            "postgresql://db/x?user=u&password=***&sslmode=require",
        ),
        ("https://store.example/w.pt?token=abc&x=1", "https://store.example/w.pt?token=***&x=1"),
        ("could not connect to mysql://a:b@h/db: refused", "could not connect to mysql://a:***@h/db: refused"),
        ("sqlite:///mlruns/optuna.db", "sqlite:///mlruns/optuna.db"),
        ("journal:///shared/optuna.log", "journal:///shared/optuna.log"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("ray://head:10001", "ray://head:10001"),
    ],
)
def test_mask_url(url: str, masked: str):
    assert mask_url(url) == masked


def _secret_study(tmp_path, **overrides):
    return fake_study(
        tmp_path,
        storage=f"postgresql://optuna:{SECRET}@127.0.0.1:9/studies",
        tracking={"uri": f"https://bob:{SECRET}@127.0.0.1:9/"},
        **overrides,
    )


def test_check_prints_masked_urls(tmp_path, capsys):
    path = _secret_study(tmp_path)
    assert main(["check", str(path), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["storage"] == "postgresql://optuna:***@127.0.0.1:9/studies"
    assert summary["tracking"] == "https://bob:***@127.0.0.1:9/"
    assert SECRET not in out.out + out.err
    assert main(["check", str(path)]) == 0  # the table
    assert SECRET not in str(capsys.readouterr())


def test_unreachable_stores_are_named_without_their_password(tmp_path, capsys):
    with pytest.raises(OrchestratorError) as e:
        open_storage(f"postgresql://optuna:{SECRET}@127.0.0.1:9/studies")
    assert str(e.value).startswith("cannot open the Optuna storage postgresql://optuna:***@127.0.0.1:9/studies: ")
    assert SECRET not in str(e.value)
    # the whole command: the tracking server does not answer; stderr names it masked
    assert main(["run", str(_secret_study(tmp_path)), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the MLflow tracking server https://bob:***@127.0.0.1:9/ does not answer")
    assert SECRET not in err


def test_mlflow_params_tags_and_study_file_are_masked(tmp_path):
    """The parent run logs the study file (params + study.yaml) and the storage URL; trial tags carry reasons."""
    path = fake_study(
        tmp_path,
        model=f"https://user:{SECRET}@weights.example/yolov5n.pt",
        storage=f"postgresql://optuna:{SECRET}@db.example/studies",
    )
    spec = load_study_spec(path)
    assert SECRET in spec.text  # what the user wrote
    tracker = Tracker(spec, spec.storage)
    tracker.open()
    study = optuna.create_study(directions=spec.directions)
    t = study.ask({"epochs": optuna.distributions.IntDistribution(0, 2)})
    t.set_user_attr(ATTR_FAILURE, f"OperationalError: connection to postgresql://optuna:{SECRET}@db.example failed")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert tracker.log_trial(study.trials[0], None, keep_files=False)
    tracker.finish()

    c = MlflowClient(spec.tracking.uri)
    parent = c.get_run(tracker.parent_id)
    assert parent.data.tags["storage"] == "postgresql://optuna:***@db.example/studies"
    assert parent.data.params["model"] == "https://user:***@weights.example/yolov5n.pt"
    assert parent.data.params["storage"] == "postgresql://optuna:***@db.example/studies"
    text = c.download_artifacts(tracker.parent_id, "study.yaml", str(tmp_path / "dl"))
    logged = open(text).read()
    assert "user:***@weights.example" in logged and SECRET not in logged
    trial = c.get_run(tracker.runs[0].run_id)
    assert trial.data.tags["failure_reason"].endswith("postgresql://optuna:***@db.example failed")
    everything = [parent.data.params, parent.data.tags, trial.data.params, trial.data.tags]
    assert SECRET not in json.dumps(everything)


def test_status_masks_failure_reasons(tmp_path, capsys):
    path = fake_study(tmp_path)
    spec = load_study_spec(path)
    study = create_or_load(spec, open_storage(spec.storage))
    t = study.ask({"epochs": optuna.distributions.IntDistribution(0, 2)})
    t.set_user_attr(ATTR_FAILURE, f"cannot reach https://bob:{SECRET}@mlflow.example/")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert main(["status", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["trials"][0]["failure"] == "cannot reach https://bob:***@mlflow.example/"
    assert main(["status", str(path)]) == 0
    assert SECRET not in out + capsys.readouterr().out
