"""The MLflow tracking server goes away mid-study: trials go on, results stay in Optuna, MLflow catches up later."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from study_files import fake_study, trial_runs

from orchestrator.search import load_existing
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(tmp_path, port: int) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.5)
    _stop(proc)
    raise AssertionError("the MLflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_tracker_outage_mid_study_is_caught_up(tmp_path, monkeypatch):
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")):
        monkeypatch.setenv(key, value)
    port = _free_port()
    path = fake_study(
        tmp_path,
        fake={"sleep_s": 0.5, "checkpoint_kb": 8},
        budget={"n_trials": 8},
        tracking={"uri": f"http://127.0.0.1:{port}", "artifacts": "all"},
    )
    spec = load_study_spec(path)
    server = _server(tmp_path, port)

    def kill_after_two():
        deadline = time.monotonic() + 240
        while not (tmp_path / "mlruns" / "optuna.db").exists():  # let the driver create the storage first
            time.sleep(0.2)
        time.sleep(2)
        while time.monotonic() < deadline:
            try:
                if sum(t.state.name == "COMPLETE" for t in load_existing(spec).get_trials(deepcopy=False)) >= 2:
                    _stop(server)
                    return
            except Exception:
                pass
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_two, daemon=True)
    killer.start()
    try:
        out = run_study(spec, live=False)
    finally:
        killer.join(timeout=60)
        _stop(server)
    assert out.complete == 8 and out.stopped == "done"
    assert out.tracker_pending > 0  # told in Optuna, not yet in MLflow
    assert [t.state.name for t in load_existing(spec).get_trials(deepcopy=False)] == ["COMPLETE"] * 8

    server = _server(tmp_path, port)  # the tracker is back: the same command catches up, runs nothing new
    try:
        again = run_study(spec, live=False)
        assert again.complete == 8 and again.tracker_pending == 0
        assert len(load_existing(spec).get_trials(deepcopy=False)) == 8
        runs = trial_runs(spec)  # one run per trial, none twice
        assert sorted(runs) == list(range(8)) and all(r.info.status == "FINISHED" for r in runs.values())
        from mlflow.tracking import MlflowClient

        c = MlflowClient(spec.tracking.uri)
        assert all(c.list_artifacts(r.info.run_id, "model") for r in runs.values())  # staged files were kept
    finally:
        _stop(server)
