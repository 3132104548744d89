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
    p.add_argument("--open", action="store_true", help="open the study's trial runs in the browser once it answers")
    return p


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import subprocess
    import sys

    from ..errors import OrchestratorError
    from ..study.file import load_study_spec
    from ..urls import mask_url

    spec = load_study_spec(args.study)
    uri = spec.tracking.uri
    if uri.startswith(("http://", "https://")):
        print(f"{spec.name} is tracked by the MLflow server at {mask_url(uri)}: open it in a browser")
        for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(key, value)  # a look-up for two links is not worth MLflow's minutes of retries
        links = _study_links(spec, mask_url(uri).rstrip("/"))
        for line in links:
            print(line)
        if args.open and links:
            _open(links[0].split(": ", 1)[1])
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
    # its log goes to stderr: stdout carries only our lines, in order, however fast the server talks (a pipe)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=sys.stderr)
    try:
        # read while the server starts: the direct links need the experiment and the parent run's ids
        links = _study_links(spec, f"http://{_url_host(args.host)}:{args.port}")
        for line in links:
            print(line, flush=True)
        if args.open and links and _answers(args.host, args.port, proc):
            _open(links[0].split(": ", 1)[1])
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


def _study_links(spec, base: str) -> list[str]:
    """``label: url`` lines for the study's trial runs and its Pareto page (none before the study has run)."""
    from ..tracking.links import SHARED_VIEW_TAG, pareto_view, share_key, trial_runs_view
    from ..tracking.runs import find_study

    try:
        found = find_study(spec)
    except Exception as e:  # a busy or unreachable store: the links are a convenience, the UI still starts
        print(f"(no direct links: {type(e).__name__})", flush=True)
        return []
    if found is None:
        return []
    shared = SHARED_VIEW_TAG + share_key(spec.name) in found.experiment_tags  # the saved view, once a trial finished
    lines = [f"trial runs: {base}/{trial_runs_view(found.experiment_id, spec.name, shared=shared)}"]
    if found.parent_id:
        lines.append(f"Pareto page: {base}/{pareto_view(found.experiment_id, found.parent_id)}")
    return lines


def _answers(host: str, port: int, proc, timeout_s: float = 120) -> bool:
    """Wait until the server accepts connections (False if it exited or never did)."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((_url_host(host, connect=True), port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _open(url: str) -> None:
    import webbrowser

    if not webbrowser.open(url):
        print("no browser found here: open the link above by hand", flush=True)


def _url_host(host: str, connect: bool = False) -> str:
    """The host to put in a link (or to connect to): a wildcard bind is reached on loopback; IPv6 in brackets."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host and not connect else host


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
