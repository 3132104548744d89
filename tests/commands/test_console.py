"""Tables printed into a pipe keep their rows on one line (rich alone would fold them at 80 columns)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from rich.table import Table
from orchestrator.commands.console import stdout_console
t = Table("trial", "origin", "map50_95", "nonzero_params", "epochs", "lr0", "mean ratio", "failure reason")
t.add_row("31", "sampler", "0.2480", "978,543", "1", "0.0003", "0.35", "worker died twice: out of memory")
stdout_console().print(t)
"""


def _table_in_a_pipe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={**clean, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_piped_table_keeps_each_row_on_one_line():
    rows = [line for line in _table_in_a_pipe() if "sampler" in line]
    assert len(rows) == 1 and "978,543" in rows[0] and "worker died twice: out of memory" in rows[0], rows


def test_columns_still_wins():
    lines = _table_in_a_pipe(COLUMNS="60")
    assert max(len(line) for line in lines) <= 60
