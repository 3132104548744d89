"""Depth pruning: which C3 blocks and bottlenecks yolov5n has, dropping them, the shallower model read back in
both layouts and exported to ONNX, and recovery bringing its outputs back towards the unpruned model's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from flat_model import flat_model
from pickle_globals import pickle_globals

from orchestrator.errors import PruningError
from orchestrator.prune.calibration import CalibrationSet, calibration_set
from orchestrator.prune.depth import (
    c3_blocks,
    drop_bottlenecks,
    drop_depth,
    parse_depth,
    plan_keep,
    plan_total,
    rank_bottlenecks,
    recover_depth,
)
from orchestrator.yolo.checkpoint import _read, load_checkpoint, save_checkpoint
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.official_layout import save_official

IMGSZ = 96


@pytest.fixture(scope="module")
def calib(coco128_yaml):
    return calibration_set(load_data_config(coco128_yaml), IMGSZ, n=8)


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)[0]


def test_yolov5n_c3_blocks(yolov5n):
    got = [(b.name, b.bottlenecks, b.original, b.residual) for b in c3_blocks(yolov5n)]
    backbone = [("model.2", 1, 1, True), ("model.4", 2, 2, True), ("model.6", 3, 3, True), ("model.8", 1, 1, True)]
    neck = [(f"model.{i}", 1, 1, False) for i in (13, 17, 20, 23)]
    assert got == backbone + neck


def test_parse_depth():
    assert parse_depth("3") == 3
    assert parse_depth("model.4=1, model.6=0") == {"model.4": 1, "model.6": 0}
    with pytest.raises(PruningError, match="--depth: expected"):
        parse_depth("model.4:1")


def test_ranking_puts_residual_bottlenecks_first(yolov5n, calib):
    ranking = rank_bottlenecks(yolov5n, calib)
    assert len(ranking) == 11
    assert [r.residual for r in ranking] == [True] * 7 + [False] * 4
    residual = [r.change for r in ranking[:7]]
    assert residual == sorted(residual) and all(c > 0 for c in residual)
    plan = plan_total(ranking, 3)
    assert sum(len(v) for v in plan.values()) == 3
    assert all(yolov5n.get_submodule(f"{b}.m.{j}").add for b, js in plan.items() for j in js)
    with pytest.raises(PruningError, match="cannot drop 12 bottlenecks, the model has 11"):
        plan_total(ranking, 12)


def test_keep_plan_drops_the_lowest_ranked_in_each_block(yolov5n, calib):
    ranking = rank_bottlenecks(yolov5n, calib)
    plan = plan_keep(yolov5n, {"model.6": 1, "model.4": 2}, ranking)
    in6 = [r.index for r in ranking if r.block == "model.6"]
    assert plan == {"model.6": sorted(in6[:2])}
    assert plan_keep(yolov5n, {"model.6": 1}) == {"model.6": [1, 2]}  # no ranking: the chain's tail goes


@pytest.mark.parametrize(
    "keep, message",
    [
        ({"model.5": 1}, "--depth: model.5 is not a C3 block"),
        ({"model.4": 3}, "--depth: model.4 has 2 bottlenecks, cannot keep 3"),
    ],
)
def test_bad_keep_plans(yolov5n, keep, message):
    with pytest.raises(PruningError, match=message):
        plan_keep(yolov5n, keep)


def test_a_model_without_c3_blocks_is_refused():
    with pytest.raises(PruningError, match="pruning.depth: the model has no C3 blocks"):
        drop_depth(flat_model(nc=2), 1, what="pruning.depth")


def test_dropped_blocks_load_back_in_both_layouts_and_export(yolov5n, tmp_path):
    from orchestrator.deploy.export import export_onnx

    m = copy.deepcopy(yolov5n)
    cut = drop_bottlenecks(m, {"model.6": [0], "model.8": [0], "model.13": [0]})
    assert cut.blocks == {"model.6": (3, 2), "model.8": (1, 0), "model.13": (1, 0)} and cut.dropped == 3
    # model.6's bottlenecks 1 and 2 moved up to 0 and 1
    assert cut.renamed["model.6.m.0.cv1.conv"] == "model.6.m.1.cv1.conv" and len(cut.renamed) == 4
    assert isinstance(m.model[8].m, nn.Sequential) and len(m.model[8].m) == 0
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    y, y_full = _out(m, x), _out(yolov5n, x)
    assert not torch.allclose(y, y_full, atol=1e-3)
    depths = [(b.name, b.bottlenecks, b.original) for b in c3_blocks(m)]
    for path, save in ((tmp_path / "ours.pt", save_checkpoint), (tmp_path / "official.pt", save_official)):
        save(m, path)
        ck = load_checkpoint(path)
        assert [(b.name, b.bottlenecks, b.original) for b in c3_blocks(ck.model)] == depths
        torch.testing.assert_close(_out(ck.model, x), y, rtol=0, atol=0)  # yolov5n's weights are fp16 already
    net = _read(tmp_path / "official.pt")["model"]  # the official file pickles the emptied chain as it is
    assert len(net.model[8].m) == 0 and len(net.model[6].m) == 2 and net.model[6].type == "models.common.C3"
    assert not any("orchestrator" in g for g in pickle_globals(tmp_path / "official.pt"))
    done = export_onnx(m, tmp_path / "shallow.onnx", imgsz=IMGSZ)
    assert done.max_abs_diff is not None and done.max_abs_diff < 1e-2


def test_a_checkpoint_with_more_bottlenecks_than_its_table_is_refused(yolov5n, tmp_path):
    m = copy.deepcopy(yolov5n)
    m.model[8].m.append(copy.deepcopy(m.model[8].m[0]))
    save_checkpoint(m, tmp_path / "deeper.pt")
    with pytest.raises(Exception, match="refused to load.*model.8.m.1"):
        load_checkpoint(tmp_path / "deeper.pt")


def test_recovery_brings_outputs_back_towards_the_unpruned(yolov5n, calib):
    fit = CalibrationSet(calib.files[:6], calib.images[:6])
    x = calib.images[6:].float() / 255  # images the fit never saw
    target = _out(yolov5n, x)
    m = copy.deepcopy(yolov5n)
    cut = drop_bottlenecks(m, {"model.6": [0, 1], "model.4": [0]})  # renumbered survivors included
    err_cut = (_out(m, x) - target).pow(2).mean()
    assert recover_depth(m, yolov5n, cut, fit) > 0
    err = (_out(m, x) - target).pow(2).mean()
    assert err < 0.8 * err_cut, (float(err), float(err_cut))


def test_oneshot_cut_drops_depth_before_the_channel_cut(yolov5n, calib):
    from orchestrator.prune.oneshot import OneShot

    shot = OneShot(yolov5n, calib)
    done = shot.cut({"model.6": 0.25}, granularity="block", importance="output_error", steps=("compensate",), depth=2)
    assert done.depth.dropped == 2 and sum(b.bottlenecks for b in c3_blocks(done.model)) == 9
    assert done.recovery.steps == ("compensate", "reconstruct")  # a dropped block is always refit
    assert done.recovery.convs_changed["reconstruct"] > 0
    assert done.model.model[6].cv3.conv.out_channels == 96  # the channel cut ran on the shallower model
    assert sum(b.bottlenecks for b in c3_blocks(yolov5n)) == 11  # the unpruned model is untouched
