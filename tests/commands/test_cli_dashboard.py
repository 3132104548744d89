"""``orchestrator dashboard``: a real optuna-dashboard on a study's storage, bound to 127.0.0.1, read back over
its HTTP API; only the process this test started is stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from servers import free_port, listening, stop
from study_files import fake_study

from orchestrator.cli import main
from orchestrator.search import create_or_load
from orchestrator.study.file import load_study_spec

VALUES = [[0.3, 1.0], [0.2, 0.8], [0.1, 0.6]]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study file and its storage holding three told trials (as `orchestrator run` leaves them)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp_path_factory.mktemp("dashboard")
    path = fake_study(folder)
    spec = load_study_spec(path)
    (folder / "mlruns").mkdir()
    s = create_or_load(spec, spec.storage)  # as `orchestrator run` creates it
    for values in VALUES:
        s.tell(s.ask({"epochs": optuna.distributions.IntDistribution(0, 2)}), values)
    return path


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_study_on_loopback(study: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "orchestrator", "dashboard", str(study), "--port", str(port)]
    dash = subprocess.Popen(cmd, cwd=study.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = dash.stdout.readline()
        assert first.startswith(f"optuna-dashboard for fake: http://127.0.0.1:{port}/dashboard/studies/1 "), first
        assert "(this machine only; " in first
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            assert dash.poll() is None, dash.stdout.read()
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert [(s["study_name"], s["directions"]) for s in studies] == [("fake", ["maximize", "minimize"])]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        assert detail["objective_names"] == ["map50_95", "gflops"]  # not "Objective 0/1"
        assert [(t["number"], t["state"], t["values"]) for t in detail["trials"]] == [
            (i, "Complete", v) for i, v in enumerate(VALUES)
        ]
        if Path("/proc/net/tcp").exists():
            assert listening(port) == {"127.0.0.1"}  # not 0.0.0.0
    finally:
        stop(dash)


def test_a_study_never_run_is_one_line(tmp_path, capsys):
    path = fake_study(tmp_path)
    (tmp_path / "mlruns").mkdir()
    assert main(["dashboard", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no ") and "orchestrator run" in err and len(err.strip().splitlines()) == 1
