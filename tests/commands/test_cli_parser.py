"""The command line lists every command module, and a module that cannot import is an error, not a missing verb."""

from __future__ import annotations

import pytest

from orchestrator import cli


def test_every_command_module_is_a_verb():
    from pathlib import Path

    modules = {p.stem for p in (Path(cli.__file__).parent / "commands").glob("*.py")}
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(cli.COMMANDS) == set(sub.choices) <= modules


def test_a_broken_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()


def test_a_reader_that_leaves_the_pipe_early_gets_no_traceback(yolov5n_pt):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "layers", "--weights", str(yolov5n_pt), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # `| head -c 0`: gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
