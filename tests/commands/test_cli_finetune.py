"""``orchestrator finetune`` end to end on a few coco128 images: JSON output, a checkpoint our loader reads,
and prune -> finetune -> measure keeping every pruned weight at zero in both layouts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from data_subsets import subset_yaml
from pickle_globals import pickle_globals

from orchestrator.cli import main
from orchestrator.yolo.checkpoint import load_checkpoint
from orchestrator.yolo.masks import MASKS_KEY, conv_sparsity


@pytest.fixture(scope="module")
def tiny_yaml(coco128_yaml, tmp_path_factory):
    """4 train and 4 val images of coco128."""
    return subset_yaml(coco128_yaml, tmp_path_factory.mktemp("tiny"), train=slice(0, 4), val=slice(4, 8))


@pytest.fixture(scope="module")
def step_yaml(coco128_yaml, tmp_path_factory):
    """8 train and 4 val images. With --batch 64 (the nominal batch) the one batch is one optimiser step;
    smaller batches accumulate gradients up to 64 images before the first step."""
    return subset_yaml(coco128_yaml, tmp_path_factory.mktemp("step"), train=slice(0, 8), val=slice(8, 12))


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _finetune(capsys, weights, data, out, *extra: str) -> dict:
    argv = ["finetune", "--weights", str(weights), "--data", str(data), "--epochs", "1", "--imgsz", "64"]
    argv += ["--batch", "64", "--workers", "0", "--lr0", "0.01", "--out", str(out), "--json"]
    return _json(capsys, argv + list(extra))


@pytest.mark.parametrize("layout", ["orchestrator", "official"])
def test_prune_finetune_measure_keeps_the_zeros(layout, yolov5n_pt, step_yaml, tmp_path, capsys):
    flag = ["--official"] if layout == "official" else []
    pruned, tuned = tmp_path / "p.pt", tmp_path / "f.pt"
    _json(capsys, ["prune", "--weights", str(yolov5n_pt), "--ratio", "0.3", "--out", str(pruned), "--json", *flag])
    r = _finetune(capsys, pruned, step_yaml, tuned, *flag)
    assert r["layout"] == layout and r["masked_convs"] == 60
    assert r["conv_sparsity"] == pytest.approx(0.300, abs=0.005)

    before, after = load_checkpoint(pruned), load_checkpoint(tuned)  # read back with our loader
    assert after.layout == layout and after.masks.keys() == before.masks.keys()
    moved = kept = 0
    for name, mask in before.masks.items():
        w0, w1 = before.model.get_submodule(name).weight, after.model.get_submodule(name).weight
        assert torch.equal(after.masks[name], mask)
        assert torch.count_nonzero(w1[~mask]) == 0, name  # every pruned weight exactly zero
        moved, kept = moved + int((w1[mask] != w0[mask]).sum()), kept + int(mask.sum())
    assert moved > 0.5 * kept  # it did train: the kept weights moved (fp16 hides the smallest steps)
    assert conv_sparsity(after.model) == pytest.approx(0.300, abs=0.005)

    m = _json(capsys, ["measure", "--weights", str(tuned), "--imgsz", "64", "--runs", "1", "--warmup", "0", "--json"])
    conv_weights = sum(c.weight.numel() for c in after.model.modules() if isinstance(c, torch.nn.Conv2d))
    assert (m["params"] - m["nonzero_params"]) / conv_weights == pytest.approx(0.300, abs=0.005)
    if layout == "official":  # official code can unpickle it: nothing beyond what yolov5n.pt needs but uint8 bits
        assert pickle_globals(tuned) - pickle_globals(yolov5n_pt) == {"torch.ByteStorage"}
    else:  # plain data: opens without running any pickled code
        assert torch.load(tuned, weights_only=True)["format"] == "orchestrator-yolov5/1"


def test_without_the_mask_record_the_zeros_grow_back(yolov5n_pt, step_yaml, tmp_path, capsys):
    """The control: the same file minus its record trains its zeros away (the official workflow's defect)."""
    pruned = tmp_path / "p.pt"
    _json(capsys, ["prune", "--weights", str(yolov5n_pt), "--ratio", "0.3", "--out", str(pruned), "--json"])
    obj = torch.load(pruned, weights_only=True)
    del obj[MASKS_KEY]
    torch.save(obj, pruned)
    r = _finetune(capsys, pruned, step_yaml, tmp_path / "f.pt")
    assert r["masked_convs"] == 0 and r["conv_sparsity"] < 0.05


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
        (["--epochs", "1", "--cache-budget-gb", "-1"], "--cache-budget-gb: expected >= 0"),
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
