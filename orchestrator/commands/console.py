"""The console commands print their tables to."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Rich lays a table out for 80 columns when stdout is not a terminal, which folds every cell of a wide
# table in a pipe or a log file (`| cat`, `> out.txt`); there, give tables the room they need.
_PIPE_WIDTH = 200


def stdout_console() -> Console:
    """A rich console on stdout: the terminal's width, or wide enough for our tables in a pipe."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=_PIPE_WIDTH)
