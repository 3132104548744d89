"""Prune masks in checkpoints: packed exactly, refused when malformed, carried through a further cut."""

from __future__ import annotations

import copy

import pytest
import torch

from orchestrator.errors import CheckpointError
from orchestrator.prune import apply_ratios, uniform_ratios
from orchestrator.yolo.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.yolo.masks import (
    MASKS_KEY,
    attach_masks,
    carried_masks,
    conv_sparsity,
    model_masks,
    pack_masks,
    unpack_masks,
)


@pytest.fixture(scope="module")
def pruned(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, uniform_ratios(m, 0.3))
    return m


def test_pack_round_trip_any_size():
    g = torch.Generator().manual_seed(0)
    masks = {f"c{n}": torch.rand(n, 3, 1, 1, generator=g) > 0.4 for n in (1, 3, 7, 64)}  # 3..192 bits
    back = unpack_masks(pack_masks(masks), "x")
    assert back.keys() == masks.keys() and all(torch.equal(back[k], masks[k]) for k in masks)
    assert pack_masks(masks)["convs"]["c7"]["bits"].numel() == 3  # 21 bits in 3 bytes


def test_saved_record_is_what_training_needs(pruned, tmp_path):
    path = save_checkpoint(pruned, tmp_path / "u.pt")
    assert torch.load(path, weights_only=True)[MASKS_KEY]["format"] == "packbits/1"  # plain data, no code
    ck = load_checkpoint(path)
    assert ck.masks.keys() == model_masks(pruned).keys() and len(ck.masks) == 60
    assert all(torch.equal(ck.masks[k], v) for k, v in model_masks(pruned).items())
    model = attach_masks(ck.model, ck.masks).train()
    conv = model.model[6].m[0].cv1.conv
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = sum(o.square().mean() for o in model(torch.rand(1, 3, 64, 64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert conv.weight_orig.grad.abs().sum() > 0
    assert conv_sparsity(model) == pytest.approx(conv_sparsity(pruned), abs=1e-9)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["convs"]["model.0.conv"].update(bits=r["convs"]["model.0.conv"]["bits"][:-1]), "packed bytes"),
        (lambda r: r["convs"]["model.0.conv"].update(shape=[16, 3, 36, 1]), "mask shape [16, 3, 36, 1] != weight"),
        (lambda r: r["convs"].update({"model.0.bn": r["convs"]["model.0.conv"]}), "model.0.bn is not a conv"),
        (lambda r: r.update(format="v0"), "expected {'format': 'packbits/1'"),
    ],
)
def test_malformed_record_is_refused(pruned, tmp_path, edit, message):
    path = save_checkpoint(pruned, tmp_path / "u.pt")
    obj = torch.load(path, weights_only=True)
    edit(obj[MASKS_KEY])
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=f"{path}: {MASKS_KEY}: .*{message}".replace("[", r"\[")):
        load_checkpoint(path)


def test_masks_follow_a_structured_cut(pruned):
    m = copy.deepcopy(pruned)
    before = model_masks(m)
    apply_ratios(m, uniform_ratios(m, 0.25, method="structured"), method="structured")  # bakes the masks in
    assert model_masks(m) == {}
    attach_masks(m, carried_masks(m, before))
    after = model_masks(m)
    assert after.keys() == before.keys()
    cut = m.model[6].m[0].cv1.conv
    assert after["model.6.m.0.cv1.conv"].shape == cut.weight.shape != before["model.6.m.0.cv1.conv"].shape
    assert torch.equal(after["model.6.m.0.cv1.conv"], cut.weight != 0)  # the surviving weights keep their zeros
    assert 0.2 < conv_sparsity(m) < 0.3  # fewer than before: cut channels were the ones with the smallest weights
