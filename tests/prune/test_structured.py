"""Structured pruning on the real yolov5n: smaller dense model, same outputs format, couplings honoured."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from orchestrator.errors import PruningError
from orchestrator.prune import apply_ratios, conv_layers, prunable_groups, uniform_ratios
from orchestrator.prune.structured import channels_to_keep
from orchestrator.prune.unstructured import deployable
from orchestrator.yolo.checkpoint import load_model, save_checkpoint
from orchestrator.yolo.flops import count_gflops


@pytest.fixture(scope="module")
def structured30(yolov5n):
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(m, uniform_ratios(m, 0.3, method="structured"), method="structured")
    return m.eval(), report


def _consistent(model: nn.Module) -> None:
    """Every conv/BN's declared widths agree with its tensors (official fuse() rebuilds convs from them)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)
        if isinstance(m, nn.BatchNorm2d):
            assert m.weight.shape[0] == m.num_features == m.running_mean.shape[0]


def test_uniform_30_is_smaller_and_keeps_output_shapes(yolov5n, structured30):
    m, report = structured30
    assert report.params_after <= 0.55 * report.params_before
    assert report.params_after == sum(p.numel() for p in m.parameters())
    g0, g1 = count_gflops(deployable(yolov5n), 320), count_gflops(deployable(m), 320)
    assert g1 <= 0.6 * g0
    _consistent(m)
    x = torch.rand(2, 3, 320, 256)
    with torch.no_grad():
        y0, raw0 = yolov5n(x)
        y1, raw1 = m(x)
    assert y1.shape == y0.shape and [r.shape for r in raw1] == [r.shape for r in raw0]
    assert [c.out_channels for c in m.model[24].m] == [255, 255, 255]
    assert all(o < i for o, i in zip((c.in_channels for c in m.model[24].m), (64, 128, 256)))
    # channels ~70% kept everywhere, 0.7 * n rounded
    assert report.channels["model.6.cv1.conv"] == (64, 45) and report.channels["model.0.conv"] == (16, 11)
    assert report.sparsity < 0.01


def test_round_trip_identical(structured30, tmp_path):
    m, _ = structured30
    back = load_model(save_checkpoint(m, tmp_path / "s.pt"))
    x = torch.rand(1, 3, 192, 160)
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], m(x)[0], rtol=0, atol=0)
    assert [p.shape for p in back.parameters()] == [p.shape for p in m.parameters()]


def test_block_ratio_and_couplings(yolov5n):
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(m, {"model.4": 0.5, "model.9": 0.25}, method="structured", granularity="block")
    widths = {k: c.out_channels for k, c in conv_layers(m).items()}
    ref = {k: c.out_channels for k, c in conv_layers(yolov5n).items()}
    for name in prunable_groups(yolov5n, "block", method="structured")["model.4"]:
        assert widths[name] == ref[name] // 2
    assert widths["model.9.cv1.conv"] == 96 and widths["model.9.cv2.conv"] == 192
    # SPPF concatenates cv1 four times: cv2 now reads 4 * 96 channels
    assert m.model[9].cv2.conv.in_channels == 4 * 96
    # the residual adds of model.4 still line up, and consumers of model.4's output (model.5, neck row 17) shrank
    assert m.model[5].conv.in_channels == 32 and m.model[17].cv1.conv.in_channels == 64 + 32
    untouched = [k for k in ref if not k.startswith(("model.4.", "model.9.", "model.5.", "model.17.", "model.10"))]
    assert all(widths[k] == ref[k] for k in untouched)
    _consistent(m)
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 3, 128, 128))[0].shape == (1, 1008, 85)
    assert set(report.channels) >= {"model.4.cv1.conv", "model.9.cv1.conv"}


def test_coupled_set_takes_one_cut(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, {"model.2.cv1.conv": 0.5}, method="structured")
    assert m.model[2].cv1.conv.out_channels == m.model[2].m[0].cv2.conv.out_channels == 8
    assert m.model[2].m[0].cv1.conv.in_channels == 8 and m.model[2].cv3.conv.in_channels == 8 + 16


@pytest.mark.parametrize("how", ["frozen parameters", "under no_grad"])
def test_cut_happens_without_autograd(yolov5n, how):
    """Torch-Pruning traces through autograd; a frozen model (a teacher, an inference copy) or a caller's
    no_grad block once gave an untouched model reported as cut."""
    m = copy.deepcopy(yolov5n)
    if how == "frozen parameters":
        m.requires_grad_(False)
        apply_ratios(m, {"model.8": 0.5}, method="structured", granularity="block")
    else:
        with torch.no_grad():
            apply_ratios(m, {"model.8": 0.5}, method="structured", granularity="block")
    assert m.model[8].cv1.conv.out_channels == 64 and m.model[9].cv1.conv.in_channels == 128
    assert all(p.requires_grad == (how != "frozen parameters") for p in m.parameters())  # as the caller left them
    _consistent(m)
    assert m(torch.zeros(1, 3, 64, 64))[0].shape[-1] == 85


@pytest.mark.parametrize("importance", ["l2", "bn_scale"])
def test_importances_and_round_to(yolov5n, importance):
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(
        m, {"model.8": 0.3, "model.2": 0.3}, method="structured", granularity="block", importance=importance, round_to=8
    )
    assert report.channels["model.8.cv1.conv"] == (128, 88) and report.channels["model.2.cv1.conv"] == (16, 8)
    assert all(after % 8 == 0 for _, after in report.channels.values())
    _consistent(m)


def test_channels_to_keep():
    assert channels_to_keep(16, 0.3, None) == 11
    assert channels_to_keep(16, 0.3, 8) == 8 and channels_to_keep(128, 0.3, 8) == 88
    assert channels_to_keep(16, 0.9, 8) == 8  # rounding never empties a layer
    assert channels_to_keep(16, 0.97, None) == 0
    assert channels_to_keep(16, 0.0, 8) == 16


def test_map_that_empties_a_layer_is_an_error(yolov5n):
    m = copy.deepcopy(yolov5n)
    with pytest.raises(PruningError) as e:
        apply_ratios(m, {"backbone.P2": 0.2, "backbone.P1": 0.97}, method="structured", granularity="stage")
    msg = str(e.value)
    assert (
        msg.startswith("ratios: backbone.P1: ratio 0.97 would leave model.0.conv with no channels") and "\n" not in msg
    )
    assert m.model[0].conv.out_channels == 16  # checked before anything was cut


def test_refuses_fused_model(yolov5n):
    with pytest.raises(PruningError, match="unfused"):
        apply_ratios(deployable(yolov5n), {"model.0.conv": 0.3}, method="structured")


def _kept_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    return [int((before - r).flatten(1).abs().sum(1).argmin()) for r in after]


@pytest.mark.parametrize(
    "key, consumers", [("model.0.conv", ["model.1.conv"]), ("model.8.cv3.conv", ["model.9.cv1.conv"])]
)
def test_cut_equals_zeroing_the_removed_inputs(yolov5n, key, consumers):
    """The cut is exact: the pruned model computes what the unpruned one does with those inputs zeroed."""
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, {key: 0.5}, method="structured")
    before = yolov5n.get_submodule(key).weight
    kept = _kept_rows(before, m.get_submodule(key).weight)
    dropped = [i for i in range(before.shape[0]) if i not in kept]
    assert len(dropped) == before.shape[0] // 2
    ref = copy.deepcopy(yolov5n)
    with torch.no_grad():
        for c in consumers:
            ref.get_submodule(c).weight[:, dropped] = 0
        x = torch.rand(1, 3, 160, 128)
        torch.testing.assert_close(m.eval()(x)[0], ref(x)[0], rtol=0, atol=1e-3)
