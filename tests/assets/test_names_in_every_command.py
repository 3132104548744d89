"""Every command that takes weights or data resolves bare names through $ORCHESTRATOR_ASSETS, the study file too.

The cache is private and empty and the working folder holds nothing, so ``yolov5n.pt`` and ``coco128.yaml``
can only come from the assets folder; every run is tiny (imgsz 64, one timed run, 0 epochs).
"""

from __future__ import annotations

import json

import pytest
from study_files import fake_study

from orchestrator import cli

W, D = ["--weights", "yolov5n.pt"], ["--data", "coco128.yaml"]
COMMANDS = {
    "val": ["val", *W, *D, "--imgsz", "64", "--json"],
    "finetune": ["finetune", *W, *D, "--epochs", "0", "--imgsz", "64", "--out", "ft.pt", "--json"],
    "prune": ["prune", *W, "--ratio", "0.1", "--out", "p.pt", "--json"],
    "prune --data": [
        "prune",
        *W,
        "--method",
        "structured",
        "--ratio",
        "0.1",
        *D,
        "--calib-images",
        "4",
        "--recover",
        "none",
        "--out",
        "s.pt",
        "--json",
    ],
    "layers": ["layers", *W, "--granularity", "stage", "--json"],
    "measure": ["measure", *W, "--baseline", "yolov5n.pt", "--imgsz", "64", "--runs", "1", "--warmup", "0", "--json"],
    "export": ["export", *W, "--imgsz", "64", "--json"],
}


@pytest.fixture
def named(assets, cache, tmp_path, monkeypatch):
    """Only the assets folder knows the names: an empty cache, an empty working folder."""
    monkeypatch.setenv("ORCHESTRATOR_ASSETS", str(assets))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_resolves_names_in_assets(command, named, assets, capsys):
    before = sorted(p.name for p in assets.iterdir())
    code = cli.main(COMMANDS[command])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    if command in ("val", "finetune"):
        assert r["data"] == str(assets / "coco128.yaml")
    if "weights" in r:
        assert r["weights"] == str(assets / "yolov5n.pt")
    if command == "export":  # a named checkpoint's ONNX goes to the working folder, never into the assets
        assert r["out"] == str(named / f"yolov5n-{r['input'][-1]}.onnx")  # its input size in its name
    assert sorted(p.name for p in assets.iterdir()) == before


def test_study_file_names_resolve_in_assets(named, assets, capsys):
    study = fake_study(named, trial="real", model="yolov5n.pt", data="coco128.yaml")
    assert cli.main(["check", str(study), "--json"]) == 0, capsys.readouterr().err
    found = json.loads(capsys.readouterr().out)
    assert found["model"] == str(assets / "yolov5n.pt") and found["data"] == str(assets / "coco128.yaml")
