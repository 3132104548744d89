"""``orchestrator finetune`` end to end on a few coco128 images: JSON output, a checkpoint our loader reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.yolo.checkpoint import load_checkpoint
from orchestrator.yolo.data import load_data_config


@pytest.fixture(scope="module")
def tiny_yaml(coco128_yaml, tmp_path_factory):
    """A data yaml listing 4 train and 4 val images of coco128 (list files, absolute paths)."""
    d = load_data_config(coco128_yaml)
    tmp = tmp_path_factory.mktemp("tiny")
    (tmp / "train.txt").write_text("\n".join(str(p) for p in d.train[:4]) + "\n")
    (tmp / "val.txt").write_text("\n".join(str(p) for p in d.val[:4]) + "\n")
    doc = {"path": str(tmp), "train": "train.txt", "val": "val.txt", "names": dict(enumerate(d.names))}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(doc))
    return tmp / "tiny.yaml"


def test_finetune_json_and_checkpoint(yolov5n_pt, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "ft.pt"
    argv = ["finetune", "--weights", str(yolov5n_pt), "--data", str(tiny_yaml), "--epochs", "1", "--imgsz", "128"]
    argv += ["--batch", "4", "--workers", "0", "--lr0", "0.001", "--out", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)  # stdout is exactly one JSON object; the progress bar went to stderr
    assert r["epochs"] == 1 and r["best_epoch"] == 1 and r["lr0"] == 0.001 and r["preset"] == "finetune"
    assert len(r["history"]) == 1 and r["history"][0]["images_per_s"] > 0
    assert 0 <= r["map50_95"] <= r["map50"] <= 1
    ck = load_checkpoint(out)
    assert ck.layout == "orchestrator" and ck.epoch == 1
    assert ck.meta["finetune"]["map50_95"] == r["map50_95"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "-1"], "--epochs: expected >= 0"),
        (["--epochs", "1", "--imgsz", "100"], "--imgsz: expected a positive multiple of 32"),
        (["--epochs", "1", "--lr0", "0"], "--lr0: expected > 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(yolov5n_pt, tiny_yaml, tmp_path, capsys, extra, message):
    argv = ["finetune", "--weights", str(yolov5n_pt), "--data", str(tiny_yaml), "--out", str(tmp_path / "x.pt")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_command_module_does_not_import_torch():
    code = "import sys, orchestrator.commands.finetune; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
