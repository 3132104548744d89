"""``orchestrator dashboard STUDY``: optuna-dashboard on the study's Optuna storage, bound to 127.0.0.1.

The Optuna view of the same study the MLflow UI shows (history, Pareto front, parameter importances), for users
who know Optuna's tools. It reads the storage the driver writes, so it can watch a study while it runs.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard",
        help="open optuna-dashboard on a study's Optuna storage",
        description="Serve optuna-dashboard (one process, Python's wsgiref server) for the study's Optuna storage. "
        "Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import OrchestratorError
    from ..search import open_storage
    from ..study.file import load_study_spec
    from ..urls import mask_url
    from .ui import _loopback, _url_host

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise OrchestratorError("optuna-dashboard is not installed: pip install optuna-dashboard") from None
    spec = load_study_spec(args.study)
    storage = open_storage(spec.storage, create=False)
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        raise OrchestratorError(
            f"no study named {spec.name!r} in {mask_url(spec.storage)}: start it with `orchestrator run {spec.path}`"
        ) from None
    where = "this machine only" if _loopback(args.host) else "reachable from the network"
    print(
        f"optuna-dashboard for {spec.name}: http://{_url_host(args.host)}:{args.port}/dashboard/studies/{study_id} "
        f"({where}; storage {mask_url(spec.storage)}). Ctrl-C stops it.",
        flush=True,
    )
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise OrchestratorError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        pass
    return 0
