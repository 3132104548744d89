"""Faults met while a study runs, for real: a stop while Ray starts, a storage that cannot grow any more.

Each driver is a subprocess (``python -m orchestrator run``) on a fake-trial study with its own local Ray;
nothing is mocked. The fault ends the run with one line and a documented exit code (130 for a stop, 1 for a
store that failed mid-study), and the same command afterwards resumes.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_files import fake_study

pytestmark = pytest.mark.slow


def _driver(study: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(study), "--no-live"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _group(pgid: int) -> list[str]:
    """Names of the live processes of a process group other than its leader (what the driver started)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(rest[2]) == pgid and int(stat.parent.name) != pgid:
            names.append(comm)
    return names


def _end_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_sigterm_while_ray_starts_exits_130_with_the_resume_hint(tmp_path: Path):
    study = fake_study(tmp_path, budget={"n_trials": 2})
    proc = _driver(study, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not _group(proc.pid):  # Ray's first processes (gcs_server, raylet) exist: ray.init is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, err
    finally:
        _end_group(proc)
    assert err.splitlines()[-1].endswith(f"Resume with: orchestrator run {study}"), err
    assert "Traceback" not in err, err


def test_a_storage_that_cannot_grow_mid_study_is_one_line_and_the_study_resumes(tmp_path: Path):
    """The driver may not write past the Optuna storage's current size once a few trials are done (as on a disk
    that filled up: SQLite gets EFBIG): exit 1 with one line, then the same command finishes the study."""
    study = fake_study(
        tmp_path, budget={"n_trials": 400}, fake={"sleep_s": 0.0, "checkpoint_kb": 1}, tracking={"artifacts": "none"}
    )
    db = tmp_path / "mlruns" / "optuna.db"
    proc = _driver(study, tmp_path)
    try:
        for line in proc.stderr:
            if "trial 2 done" in line:
                size = db.stat().st_size
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, size))  # the driver alone, not Ray
                break
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 1, err
    finally:
        _end_group(proc)
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("error: a database write or read failed: (sqlite3.OperationalError) "), err
    assert last.endswith("then run the same command again (finished trials are kept in the Optuna storage)")

    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(study), "--no-live", "--trials", "6", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert '"complete": 6' in again.stdout
