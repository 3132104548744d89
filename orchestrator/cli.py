"""``orchestrator`` command line: one subcommand per module under ``orchestrator/commands``.

Each command module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Errors a user can
cause (:class:`OrchestratorError`) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import OrchestratorError

# modules under orchestrator.commands, each named for its verb, in the order ``--help`` lists them
COMMANDS = (
    "run",
    "check",
    "status",
    "pareto",
    "ui",
    "dashboard",
    "val",
    "predict",
    "finetune",
    "prune",
    "measure",
    "layers",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; a command module that fails to import is an error, never a missing verb."""
    parser = argparse.ArgumentParser(
        prog="orchestrator", description="YOLOv5 pruning sweeps: Optuna search, Ray dispatch, MLflow tracking."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"orchestrator.commands.{name}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except OrchestratorError as e:
        from .urls import mask_url

        print(f"error: {mask_url(str(e))}", file=sys.stderr)  # the last guard: no password in any error
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `orchestrator status --json | head`: the reader left, which is not an error of ours
        return _reader_gone()
    except Exception as e:  # a disk that filled up, a database that broke mid-work: one line, not a traceback
        from .faults import EXIT_CODE, fault_line

        line = fault_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_CODE


def _reader_gone() -> int:
    """Exit as a pipeline expects when stdout's reader is gone: quietly, with 128 + SIGPIPE."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush of stdout must not fail again
    return 141


if __name__ == "__main__":
    sys.exit(main())
