"""``orchestrator prune --depth`` through the CLI: the shallower file is listed by ``layers --depth``, validated
and exported by the other commands; bad ``--depth`` input is one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from data_subsets import subset_yaml
from flat_model import flat_checkpoint

from orchestrator.cli import main


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESTRATOR_CACHE=str(cwd / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )


def _ok(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.slow
def test_prune_depth_then_layers_val_and_export(tmp_path, yolov5n_pt, coco128_yaml):
    data = subset_yaml(coco128_yaml, tmp_path, train=slice(0, 6), val=slice(100, 104))
    out = tmp_path / "shallow.pt"
    rep = _ok(_cli("prune", "--weights", str(yolov5n_pt), "--depth", "model.6=1,model.8=0",
                   "--imgsz", "64", "--out", str(out), "--json", cwd=tmp_path))  # fmt: skip
    assert rep["depth"]["dropped"] == 3 and rep["depth"]["blocks"] == {"model.6": [3, 1], "model.8": [1, 0]}
    assert 0.8 < rep["depth"]["gflops_fraction"] < 1 and rep["recovery"]["refit"] == 0  # no --data: no refit
    blocks = _ok(_cli("layers", "--weights", str(out), "--depth", "--json", cwd=tmp_path))
    assert blocks["model.6"] == {"bottlenecks": 1, "original": 3, "residual": True}
    assert blocks["model.8"]["bottlenecks"] == 0 and blocks["model.13"]["residual"] is False
    text = _cli("layers", "--weights", str(out), "--depth", cwd=tmp_path)
    assert text.returncode == 0 and re.search(r"model\.6\W+1/3\W+yes", text.stdout), text.stdout
    assert re.search(r"model\.8\W+0/1\W+yes", text.stdout) and "8/11" in text.stdout

    # the total form ranks on --data's train images and refits, here in the official layout
    official = tmp_path / "ranked.pt"
    rep = _ok(_cli("prune", "--weights", str(yolov5n_pt), "--depth", "2", "--data", str(data), "--calib-images", "4",
                   "--imgsz", "64", "--official", "--out", str(official), "--json", cwd=tmp_path))  # fmt: skip
    assert rep["layout"] == "official" and rep["depth"]["dropped"] == 2 and rep["recovery"]["refit"] > 0
    assert rep["recovery"]["steps"] == ["reconstruct"]
    blocks = _ok(_cli("layers", "--weights", str(official), "--depth", "--json", cwd=tmp_path))
    assert sum(b["bottlenecks"] for b in blocks.values()) == 9
    assert all(b["bottlenecks"] == 1 for b in blocks.values() if not b["residual"])  # residual ones went first

    val = _ok(_cli("val", "--weights", str(official), "--data", str(data), "--imgsz", "64", "--json", cwd=tmp_path))
    assert val["images"] == 4 and 0 <= val["map50_95"] <= 1
    pytest.importorskip("onnxruntime")
    e = _ok(_cli("export", "--weights", str(official), "--format", "onnx", "--imgsz", "64", "--json", cwd=tmp_path))
    assert e["max_abs_diff"] < 1e-2 and Path(e["out"]).is_file()


@pytest.mark.parametrize(
    ("depth", "extra", "message"),
    [
        ("model.5=1", (), "--depth: model.5 is not a C3 block (C3 blocks: model.2, model.4"),
        ("model.4=3", (), "--depth: model.4 has 2 bottlenecks, cannot keep 3"),
        ("model.4:1", (), "--depth: expected a number of bottlenecks to drop"),
        ("3", (), "--depth 3 drops the least missed bottlenecks: give --data"),
        ("model.4=2", (), "drops no bottleneck"),
        ("1", ("--method", "structured"), "--depth drops whole bottlenecks: it takes no --method"),
    ],
)
def test_bad_depth_is_one_line(capsys, tmp_path, yolov5n_pt, depth, extra, message):
    rc = main(["prune", "--weights", str(yolov5n_pt), "--depth", depth, *extra, "--out", str(tmp_path / "o.pt")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.pt").exists()


def test_depth_on_a_model_without_c3_blocks(tmp_path):
    weights = flat_checkpoint(tmp_path)
    p = _cli("prune", "--weights", str(weights), "--depth", "model.1=0", "--out", str(tmp_path / "o.pt"), cwd=tmp_path)
    assert (
        p.returncode == 2 and p.stderr.strip() == "error: --depth: the model has no C3 blocks, so no bottleneck to drop"
    )
