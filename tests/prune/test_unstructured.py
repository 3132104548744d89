"""Unstructured pruning: the official prune() reproduced, masks kept through training, global threshold."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from orchestrator.errors import PruningError
from orchestrator.prune import (
    apply_ratios,
    conv_sparsity,
    copy_pruned,
    has_masks,
    make_permanent,
    prunable_groups,
    uniform_ratios,
)
from orchestrator.yolo.checkpoint import load_model, save_checkpoint


def _official_prune(model: nn.Module, amount: float) -> nn.Module:
    """What the official guide's prune(model, amount) does: L1 on every Conv2d, then prune.remove."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            tprune.l1_unstructured(m, name="weight", amount=amount)
            tprune.remove(m, "weight")
    return model


@pytest.fixture(scope="module")
def pruned30(yolov5n):
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(m, uniform_ratios(m, 0.3))
    return m, report


def test_uniform_reproduces_official_prune(yolov5n, pruned30):
    m, report = pruned30
    ref = _official_prune(copy.deepcopy(yolov5n), 0.3)
    ours = make_permanent(copy_pruned(m))
    for (k, a), (k2, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b), k
    assert report.sparsity == pytest.approx(0.300, abs=0.005)
    assert report.params_after == report.params_before and report.method == "unstructured"


def test_masks_keep_zeros_through_training(pruned30):
    m = copy_pruned(pruned30[0]).train()
    assert has_masks(m)
    conv = m.model[6].m[0].cv1.conv
    zero = conv.weight_mask == 0
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):  # the second step moves weight_orig by momentum even where the gradient is zero
        out = m(torch.rand(2, 3, 32, 32))
        loss = sum(o.square().mean() for o in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    copy_pruned(m)  # a masked model after a forward with grad still copies (EMA, checkpoints)
    assert conv.weight[zero].abs().max() == 0  # what the forward uses stays zero
    assert conv.weight[~zero].abs().min() > 0
    assert conv_sparsity(m) == pytest.approx(pruned30[1].sparsity, abs=1e-6)


def test_save_bakes_masks_and_reloads_identically(pruned30, tmp_path):
    m = pruned30[0].eval()
    path = save_checkpoint(m, tmp_path / "u.pt")
    back = load_model(path)
    assert not has_masks(back) and has_masks(m)
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], m(x)[0], rtol=0, atol=0)
    assert conv_sparsity(back) == pytest.approx(pruned30[1].sparsity, abs=1e-9)


def test_per_layer_ratios_and_untouched_layers(yolov5n):
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(m, {"model.6": 0.5, "model.24": 0.1}, granularity="block")
    for name in prunable_groups(yolov5n, "block")["model.6"]:
        w = m.get_submodule(name).weight
        assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    assert (m.model[24].m[0].weight == 0).float().mean().item() == pytest.approx(0.1, abs=1e-3)
    assert not tprune.is_pruned(m.model[8]) and report.ratios == {"model.6": 0.5, "model.24": 0.1}


def test_global_threshold(yolov5n):
    m = copy.deepcopy(yolov5n)
    ratios = {k: 0.4 for k in prunable_groups(m, "stage", ["head"])}
    apply_ratios(m, ratios, method="global", granularity="stage")
    convs = [c for v in prunable_groups(m, "stage", ["head"]).values() for c in v]
    ws = [m.get_submodule(c).weight for c in convs]
    zeros = sum(int((w == 0).sum()) for w in ws)
    assert zeros / sum(w.numel() for w in ws) == pytest.approx(0.4, abs=1e-4)
    fractions = [(w == 0).float().mean().item() for w in ws]
    assert max(fractions) - min(fractions) > 0.2  # one threshold: layers end up with different sparsity
    assert not tprune.is_pruned(m.model[24])
    with pytest.raises(PruningError, match="one ratio for all chosen layers, got 0.2 for model.1 and 0.4 for model.0"):
        apply_ratios(copy.deepcopy(yolov5n), {"model.0": 0.4, "model.1": 0.2}, method="global", granularity="block")


def test_bn_scale_is_for_structured(yolov5n):
    with pytest.raises(PruningError, match="bn_scale ranks channels"):
        apply_ratios(copy.deepcopy(yolov5n), {"model.0.conv": 0.3}, importance="bn_scale")
