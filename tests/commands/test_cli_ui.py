"""``orchestrator ui`` binds 127.0.0.1 unless ``--host`` says otherwise, and says which (a real, light server)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, listening, stop
from study_files import fake_study

from orchestrator.cli import build_parser


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("ui")
    path = fake_study(folder)
    (folder / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db").search_experiments()  # the store `run` would leave
    return path


def test_default_host_is_loopback():
    args = build_parser().parse_args(["ui", "s.yaml"])
    assert (args.host, args.port) == ("127.0.0.1", 5000)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net/tcp")
def test_ui_binds_loopback_only_by_default(study: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "orchestrator", "ui", str(study), "--port", str(port)]
    ui = subprocess.Popen(cmd, cwd=study.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        bound = "127.0.0.1"
        assert ui.stdout.readline().startswith(f"MLflow UI for fake: http://{bound}:{port} (this machine only; ")
        deadline = time.monotonic() + 90
        while not listening(port) and time.monotonic() < deadline:
            assert ui.poll() is None, ui.stdout.read()
            time.sleep(0.3)
        assert listening(port) == {bound}  # not 0.0.0.0: nothing outside this machine can reach it
    finally:
        stop(ui)
    time.sleep(0.5)
    assert listening(port) == set()  # the server went with it


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the server's command line from /proc")
@pytest.mark.parametrize("host, says", [("0.0.0.0", "reachable from the network"), ("127.0.0.2", "this machine only")])
def test_host_goes_to_the_server_and_is_said(study: Path, host: str, says: str):
    """--host reaches the MLflow server's command line; the first line says who can reach it (stopped before
    the server has bound anything: MLflow takes seconds to start)."""
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(study), "--host", host, "--port", str(port)],
        cwd=study.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert ui.stdout.readline().startswith(f"MLflow UI for fake: http://{host}:{port} ({says}; ")
        deadline = time.monotonic() + 10
        server: list[str] = []
        while not server and time.monotonic() < deadline:
            children = Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()
            lines = [Path(f"/proc/{c}/cmdline").read_text().split("\0") for c in children]
            server = [a for a in lines if "server" in a][:1]  # after its exec (a fresh fork still reads as us)
            time.sleep(0.05)
        assert server, "the MLflow server was not started"
        args = server[0]
        assert args[args.index("--host") + 1] == host and args[args.index("--port") + 1] == str(port)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def test_remote_tracker_is_pointed_at_and_a_dead_one_costs_no_wait(tmp_path):
    """A study tracked by an MLflow server: ui starts nothing, says where, and an unreachable server only costs
    the links (no retries for minutes). A subprocess: the command sets MLflow's retry variables for itself."""
    path = fake_study(tmp_path, tracking={"uri": "http://user:hunter2@127.0.0.1:9/"})
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "orchestrator", "ui", str(path)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("fake is tracked by the MLflow server at http://user:***@127.0.0.1:9/: open it")
    assert "(no direct links: " in out.stdout and "hunter2" not in out.stdout + out.stderr
    assert time.monotonic() - t0 < 60
