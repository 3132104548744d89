"""``orchestrator run STUDY``: run or resume a pruning sweep (Optuna search, Ray workers, MLflow tracking)."""

from __future__ import annotations

import argparse
import json
import sys
import threading


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="run or resume a pruning sweep described by a study file",
        description="Run the study until n_trials trials are complete. Running the same command again resumes "
        "the same study (same name and storage); Ctrl-C stops cleanly.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--trials", type=int, default=None, help="complete trials to reach (overrides budget.n_trials)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto, host:port or ray://host:port (overrides resources.address)",
    )
    p.add_argument("--no-live", action="store_true", help="print one line per event instead of the live view")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    p.add_argument("--yes", action="store_true", help="allow downloading a large dataset (COCO: ~20 GB)")
    p.add_argument(
        "--reset-tracking",
        action="store_true",
        help="archive the study's MLflow runs first: they belong to an Optuna study that was lost or replaced "
        "(run refuses to mix them and says so)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Run the study; Ctrl-C or SIGTERM at any stage exits 130 with the resume hint, before the first trial too."""
    import signal

    from ..sweep.resume import stop_on_signals

    try:
        with stop_on_signals() as stop:
            return _run(args, stop)
    except KeyboardInterrupt:
        pass
    except SystemExit as e:  # Ray's own SIGTERM handler, in place while ray.init runs, exits with the signal number
        if e.code != signal.SIGTERM:
            raise
    print(f"stopped (Ctrl-C or SIGTERM). Resume with: orchestrator run {args.study}", file=sys.stderr)
    return 130


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    from ..errors import OrchestratorError
    from ..study.file import load_study_spec
    from ..sweep.driver import run_study

    if args.trials is not None and args.trials < 1:
        raise OrchestratorError(f"--trials: expected >= 1, got {args.trials}")
    spec = load_study_spec(args.study)
    import logging
    import os

    import optuna

    # a tracking server that went away must not stall the loop for minutes per request (MLflow's defaults:
    # 7 retries, 120 s timeout); results are safe in the Optuna storage and logged when it answers again
    for key, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),  # the front's models fetched for the page's pictures
    ):
        os.environ.setdefault(key, value)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view reports trials; no per-trial INFO lines
    # MLflow logs a full traceback for each database error it then raises: the driver reports those in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    out = run_study(
        spec,
        n_trials=args.trials,
        address=args.address,
        live=False if args.no_live else None,
        reset_tracking=args.reset_tracking,
        allow_large=args.yes,  # the inputs are checked (and fetched) once, in run_study, before anything exists
        stop=stop,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "study": spec.name,
                    "complete": out.complete,
                    "failed": out.failed,
                    "target": out.target,
                    "stopped": out.stopped,
                    "front": list(out.front),
                    "hypervolume": out.hypervolume,
                    "tracker_pending": out.tracker_pending,
                    **({"screened": out.screened} if out.screened else {}),
                }
            )
        )
    msg = {
        "done": f"study {spec.name}: {out.complete} trials complete, {out.failed} failed; "
        + (f"{out.screened} screened or stopped early; " if out.screened else "")
        + f"Pareto front: trials {', '.join(map(str, out.front)) or '-'} (hypervolume {out.hypervolume:.4f})",
        "interrupted": f"stopped: {out.complete} of {out.target or '?'} trials complete. "
        f"Resume with: orchestrator run {args.study}",
        "timeout": f"timeout reached with {out.complete} trials complete. Continue with: orchestrator run {args.study}",
        "failures": f"stopped after too many failed trials ({out.failed} in the study): see "
        f"`orchestrator status {args.study}` for the reasons",
        "lost lease": "stopped: another driver took the study over",
        "screened": f"stopped: {out.screened} trials screened before fine-tuning, {out.complete} complete; the "
        f"space is mostly under the screen's floor: lower screen.min_map or the ratio bounds",
    }[out.stopped]
    print(msg, file=sys.stderr)
    if out.tracker_pending:
        print(
            f"{out.tracker_pending} finished trials are not in MLflow yet (tracker unreachable); the next "
            f"`orchestrator run {args.study}` logs them",
            file=sys.stderr,
        )
    return {"done": 0, "interrupted": 130, "timeout": 0}.get(out.stopped, 1)
