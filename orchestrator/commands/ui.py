"""``orchestrator ui STUDY``: the MLflow UI on the study's tracking store, light and bound to 127.0.0.1."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ui",
        help="open the MLflow UI on a study's tracking store",
        description="Serve the MLflow UI for the study's tracking store with one worker and no job runners "
        "(MLflow's defaults take about 3 GB). Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    return p


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import subprocess
    import sys

    from ..errors import OrchestratorError
    from ..spec import load_study_spec
    from ..urls import mask_url

    spec = load_study_spec(args.study)
    uri = spec.tracking.uri
    if uri.startswith(("http://", "https://")):
        print(f"{spec.name} is tracked by the MLflow server at {mask_url(uri)}: open it in a browser")
        return 0
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :]):
        raise OrchestratorError(
            f"no MLflow store at {uri[len('sqlite:///') :]} yet: run `orchestrator run {args.study}`"
        )
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS="false")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    where = "this machine only" if _loopback(args.host) else "reachable from the network"
    signal.signal(signal.SIGTERM, _interrupt)  # before the server exists: a SIGTERM never leaves it orphaned
    print(
        f"MLflow UI for {spec.name}: http://{args.host}:{args.port} ({where}; experiment {spec.experiment!r}). "
        "Ctrl-C stops it.",
        flush=True,
    )
    # the server (and the uvicorn it starts) live in their own process group, ended with us on Ctrl-C or SIGTERM
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface
