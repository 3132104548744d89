"""Every command that loads weights refuses every crafted checkpoint with one line, exit 2, and runs nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from crafted import CRAFTED, EXPECTED, trap_jit_load

from orchestrator.cli import main

KINDS = ["pickle-then-zip", "tar-then-zip", "torchscript", "zip-evil-pickle"]


def _commands(evil: Path, good: Path, data: Path, study: Path, out: Path) -> dict[str, list[str]]:
    return {
        "check": ["check", str(study)],
        "run": ["run", str(study), "--no-live"],
        "val": ["val", "--weights", str(evil), "--data", str(data), "--imgsz", "64"],
        "finetune": ["finetune", "--weights", str(evil), "--data", str(data), "--epochs", "1", "--out", str(out)],
        "prune": ["prune", "--weights", str(evil), "--ratio", "0.3", "--out", str(out)],
        "measure": ["measure", "--weights", str(evil), "--imgsz", "64"],
        "measure --baseline": ["measure", "--weights", str(good), "--baseline", str(evil), "--imgsz", "64"],
        "layers": ["layers", "--weights", str(evil)],
        "export": ["export", "--weights", str(evil), "--out", str(out)],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_command_refuses_crafted_weights(
    kind: str, tmp_path: Path, monkeypatch, capsys, yolov5n_pt, coco128_yaml
):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    jit_marker = trap_jit_load(monkeypatch, tmp_path / "jit-load-called")
    evil = CRAFTED[kind](tmp_path / "evil.pt", marker)
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "crafted",
                "model": str(evil),
                "data": str(coco128_yaml),
                "imgsz": 64,
                "pruning": {"granularity": "stage", "ratio": {"max": 0.5}},
                "objectives": [{"metric": "map50_95"}, {"metric": "gflops"}],
                "budget": {"n_trials": 1},
            }
        )
    )
    out = tmp_path / "out.pt"
    for name, argv in _commands(evil, yolov5n_pt, coco128_yaml, study, out).items():
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, f"{name}: exit {code}: {err}"
        assert len(err.splitlines()) == 1, f"{name}: {err}"
        assert err.startswith("error: ") and "evil.pt" in err, f"{name}: {err}"
        assert re.search(EXPECTED[kind], err), f"{name}: {err}"
        assert not marker.exists(), f"{name} ran the payload"
        assert not jit_marker.exists(), f"{name} opened TorchScript"
        assert not out.exists() and not (tmp_path / "mlruns").exists(), f"{name} wrote output"
