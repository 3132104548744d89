"""Joining an existing Ray cluster (``--address``): a real second instance started by the test on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from study_files import fake_study, trial_runs

from orchestrator.study.file import load_study_spec

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """``ray start --head --block`` in its own process group; the group is ended after the test."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay under 107 bytes
    # Ray's token authentication: one throwaway token for this cluster and the drivers that join it
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    log = open(tmp_path / "ray_head.log", "w")
    proc = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "ray_head.log").read_text()[-2000:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield address, env
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            break
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
    shutil.rmtree(temp, ignore_errors=True)


def test_run_joins_the_cluster_given_by_address(tmp_path, ray_head):
    address, env = ray_head
    path = fake_study(tmp_path, budget={"n_trials": 4})
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--address", address, "--no-live", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["complete"] == 4 and result["stopped"] == "done"
    assert f"2 slot(s) on {address}" in out.stderr  # the cluster's 2 CPUs, not a local instance
    assert sorted(trial_runs(load_study_spec(path))) == [0, 1, 2, 3]


def test_unreachable_address_is_one_line(tmp_path):
    path = fake_study(tmp_path)
    port = _free_port()
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--address", f"127.0.0.1:{port}", "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert f"error: cannot join the Ray cluster at 127.0.0.1:{port}" in out.stderr


def _tree(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet, agents and workers descend from the driver)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) if d.name.isdigit() else None
        except (OSError, IndexError, ValueError):
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def _listening(pids: set[int]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket listening in ``pids`` (from /proc, as ``ss -ltnp``)."""
    import ipaddress

    owner: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:  # the process ended meanwhile
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in owner:  # 0A = LISTEN
                continue
            hexaddr, port = f[1].split(":")
            raw = b"".join(bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8))
            try:
                name = Path(f"/proc/{owner[f[9]]}/comm").read_text().strip()
            except OSError:
                name = "?"
            out.add((name, str(ipaddress.ip_address(raw)), int(port, 16)))
    return out


def _loopback(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_a_local_study_listens_on_loopback_only(tmp_path):
    """A real run with its own Ray: every socket its processes listen on, sampled while trials run, is loopback."""
    path = fake_study(tmp_path, fake={"sleep_s": 1.5, "checkpoint_kb": 8}, budget={"n_trials": 4})
    log = open(tmp_path / "driver.log", "w")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the driver must set it itself
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--no-live"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    seen: set[tuple[str, str, int]] = set()
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            seen |= _listening(_tree(driver.pid))
            time.sleep(0.3)
        assert driver.wait(timeout=60) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen
    assert any(n.startswith("ray::") for n in names), seen  # a worker actor was sampled listening
    assert [s for s in seen if not _loopback(s[1])] == []
