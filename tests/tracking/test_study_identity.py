"""A study's identity is checked, not assumed: losing a store never shows one trial's metrics under another's run.

Real drivers (``python -m orchestrator run``) on a fake-trial study, each with its own local Ray; the stores are
deleted between runs as a user (or a disk) would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.search import pareto_front
from orchestrator.study.file import load_study_spec
from orchestrator.tracking.tracker import TAG_UID

pytestmark = pytest.mark.slow


def _run(path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "orchestrator", "run", str(path), "--no-live", *extra]
    return subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, timeout=300, env=env)


def _consistent(spec) -> dict[int, str]:
    """trial number -> run id, asserting every run shows its own trial's parameters and metrics."""
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    runs = trial_runs(spec)
    assert sorted(runs) == [t.number for t in study.trials]
    for t in study.trials:
        data = runs[t.number].data
        assert data.tags[TAG_UID] == study.user_attrs["identity"]["uid"]
        assert data.metrics["map50_95"] == pytest.approx(t.user_attrs["metrics"]["map50_95"])
        assert float(data.params["lr0"]) == pytest.approx(t.params["lr0"])
    return {n: r.info.run_id for n, r in runs.items()}


def test_a_lost_optuna_storage_is_refused_then_reset_and_a_lost_mlflow_store_keeps_its_checkpoints(tmp_path, capsys):
    path = fake_study(tmp_path, budget={"n_trials": 4}, tracking={"artifacts": "all"})
    spec = load_study_spec(path)
    first = _run(path)
    assert first.returncode == 0, first.stderr[-3000:]
    old = _consistent(spec)

    # the Optuna storage is lost (deleted, or emptied): one line, exit 2, and MLflow untouched
    for lose in (os.remove, lambda f: open(f, "w").close()):
        lose(tmp_path / "mlruns" / "optuna.db")
        again = _run(path)
        assert again.returncode == 2, again.stderr[-3000:]
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: MLflow experiment {spec.experiment!r} of study 'fake' ")
        assert "--reset-tracking" in lines[0] and "new tracking.experiment" in lines[0]
        assert {n: r.info.run_id for n, r in trial_runs(spec).items()} == old

    # --reset-tracking: the old runs are archived (kept, renamed), the new study gets runs of its own
    doc = yaml.safe_load(path.read_text())
    doc["sampler"] = {"seed": 1}  # another search: the new trials differ from the old ones
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = load_study_spec(path)
    reset = _run(path, "--reset-tracking")
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert "--reset-tracking: 5 MLflow runs of study fake archived" in reset.stderr
    new = _consistent(spec)
    assert not set(new.values()) & set(old.values())
    c = MlflowClient(spec.tracking.uri)
    exp = c.get_experiment_by_name(spec.experiment).experiment_id
    assert len(c.search_runs([exp], "tags.archived != ''")) == 5

    # pareto --export, twice into the same folder: each trial folder replaced whole
    front = sorted(
        t.number
        for t in pareto_front(optuna.load_study(study_name="fake", storage=spec.storage).trials, spec.directions)
    )
    export = tmp_path / "front"
    for _ in range(2):
        assert main(["pareto", str(path), "--export", str(export), "--no-onnx"]) == 0
    assert sorted(p.name for p in export.iterdir()) == [f"trial-{n:04d}" for n in front]
    before = {p: p.read_bytes() for p in export.rglob("*") if p.is_file()}
    assert len(before) == 2 * len(front)

    # mlflow.db is lost, and a front trial's artifact folder with it: the others' checkpoints are re-attached
    lost = front[-1]
    gone = c.get_run(new[lost]).info.artifact_uri.removeprefix("file://")
    shutil.rmtree(os.path.dirname(gone))
    os.remove(tmp_path / "mlruns" / "mlflow.db")
    rebuilt = _run(path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    warnings = [ln for ln in rebuilt.stderr.splitlines() if "checkpoint is gone" in ln]
    assert warnings == [
        f"trial {lost}: its checkpoint is gone (not staged, not in the artifact folder): logged without"
    ]
    runs = _consistent(spec)
    c = MlflowClient(spec.tracking.uri)
    for n, run_id in runs.items():
        files = {os.path.basename(f.path) for f in c.list_artifacts(run_id, "model")}
        assert files == (set() if n == lost else {"pruned.pt", "ratios.json"}), (n, files)

    # the export now stops at the missing checkpoint: one line, exit 2, the earlier export left as it was
    assert main(["pareto", str(path), "--export", str(export), "--no-onnx"]) == 2
    assert capsys.readouterr().err.startswith(f"error: trial {lost} has no saved checkpoint")
    assert {p: p.read_bytes() for p in export.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".front")] == []
    assert main(["pareto", str(path), "--export", str(tmp_path / "new"), "--no-onnx"]) == 2
    assert not (tmp_path / "new").exists()
