"""The README's quickstart study as a real user meets it: offline it fails in one line before anything is
created; with a local server standing in for the official URLs it downloads, verifies and runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_server import files_under

from orchestrator import cli

STUDY = Path(__file__).resolve().parents[2] / "studies" / "yolov5n-coco128.yaml"


def test_quickstart_offline_fails_fast_and_creates_nothing(cache, closed_port, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", f"http://127.0.0.1:{closed_port}")
    start = time.perf_counter()
    code = cli.main(["run", str(STUDY), "--no-live"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"error: cannot download http://127.0.0.1:{closed_port}/yolov5n.pt: ")
    assert "put it at" in err[-1] and "ORCHESTRATOR_ASSETS" in err[-1]
    assert elapsed < 15
    assert list(work.iterdir()) == []  # no mlruns/, no study, no run
    assert files_under(cache) == []


@pytest.mark.slow
def test_quickstart_downloads_verifies_and_runs(cache, server, yolov5n_pt, coco128_zip, tmp_path):
    server.serve("yolov5n.pt", yolov5n_pt.read_bytes())
    server.serve("coco128.zip", coco128_zip)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "ORCHESTRATOR_CACHE": str(cache), "ORCHESTRATOR_DOWNLOAD_BASE": server.base}
    env.pop("ORCHESTRATOR_ASSETS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(STUDY), "--trials", "1", "--no-live"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.hits["/yolov5n.pt"] == 1 and server.hits["/coco128.zip"] == 1
    cached = files_under(cache)
    assert "weights/yolov5n.pt" in cached and "datasets/coco128.yaml" in cached
    import optuna

    study = optuna.load_study(study_name="yolov5n-coco128", storage=f"sqlite:///{work}/mlruns/optuna.db")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 1 and 0 < done[0].values[0] < 1
