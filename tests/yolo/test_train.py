"""Fine-tuning on the real coco128 assets: errors, determinism, pruned weights kept at zero, any widths.

Most tests train one short epoch on a few images at 128 px with ``nbs`` equal to the batch (so every
batch is an optimiser step); the slow test is the acceptance run (yolov5n pruned 30%, 3 epochs, 320 px).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune

from orchestrator.errors import TrainingError
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.hyp import PRESETS, Hyp, get_hyp
from orchestrator.yolo.model import adapt_to_state_dict
from orchestrator.yolo.train import (
    ModelEMA,
    TrainImages,
    TrainSettings,
    conv_sparsity,
    finetune,
    parameter_groups,
    recompute_wanted,
)
from orchestrator.yolo.val import ValSet

SMALL = dict(imgsz=128, batch=4, workers=0)
HYP = get_hyp("finetune").with_overrides(nbs=4, lr0=0.01)  # a step per batch, big enough to move weights


@pytest.fixture(scope="module")
def small_data(coco128_yaml):
    d = load_data_config(coco128_yaml)
    return replace(d, train=d.train[:8], val=d.val[:4])


@pytest.fixture(scope="module")
def small_val(small_data):
    return ValSet(small_data, 128, 32)


@pytest.fixture(scope="module")
def small_train(small_data):
    return TrainImages(small_data, 128)


def _prune_all_convs(model: nn.Module, amount: float) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.l1_unstructured(m, "weight", amount)
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_presets():
    official = PRESETS["scratch-low"]
    assert (official.lr0, official.warmup_epochs, official.warmup_bias_lr, official.mosaic) == (0.01, 3.0, 0.1, 1.0)
    ft = get_hyp("finetune")
    assert ft.lr0 < official.lr0 and ft.warmup_epochs == 0 and ft.mosaic < 1
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Hyp().with_overrides(lr=0.1)
    with pytest.raises(ValueError, match="unknown hyperparameter preset"):
        get_hyp("nope")


def test_parameter_groups_decay_only_conv_weights(yolov5n):
    m = _prune_all_convs(copy.deepcopy(yolov5n), 0.1)
    g = parameter_groups(m)
    n_conv = sum(isinstance(x, nn.Conv2d) for x in m.modules())
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert len(g["decay"]) == n_conv  # weight_orig of every conv
    assert len(g["no_decay"]) == n_bn
    assert len(g["bias"]) == n_bn + 3  # BN biases + the three Detect conv biases
    assert sum(len(v) for v in g.values()) == len(list(m.parameters()))


def test_empty_training_set_is_an_error(yolov5n, small_data, small_val):
    with pytest.raises(TrainingError, match="no usable training images"):
        finetune(copy.deepcopy(yolov5n), replace(small_data, train=()), 1, val_set=small_val, **SMALL)


def test_nan_loss_names_epoch_and_iteration(yolov5n, small_data, small_val, small_train):
    m = copy.deepcopy(yolov5n)
    with torch.no_grad():
        m.model[24].m[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"epoch 1, iteration 1 of 2"):
        finetune(m, small_data, 1, hyp=HYP, val_set=small_val, train_images=small_train, **SMALL)


def test_zero_epochs_returns_the_model_validated(yolov5n, small_data, small_val):
    before = _state(yolov5n)
    r = finetune(yolov5n, small_data, 0, val_set=small_val, **SMALL)
    assert r.model is yolov5n and not r.model.training and r.history == () and r.best_epoch == 0
    assert r.metrics.images == 4 and 0 < r.metrics.map50_95 <= 1
    assert all(torch.equal(before[k], v) for k, v in r.model.state_dict().items())


def test_same_seed_same_weights(yolov5n, small_data, small_val, small_train):
    """Two runs with seed 0 (in-process loading, then 2 loader processes) give bit-identical weights.

    That a different seed gives different batches is checked in test_augment.py.
    """

    def run(workers: int):
        seen = []
        r = finetune(
            copy.deepcopy(yolov5n), small_data, 1, hyp=HYP, seed=0, val_set=small_val, train_images=small_train,
            progress=seen.append, **{**SMALL, "workers": workers},
        )  # fmt: skip
        assert [e.epoch for e in seen] == [1] and r.history == tuple(seen) and r.best_epoch == 1
        return _state(r.model), r.history[0]

    a, ha = run(0)
    b, hb = run(2)
    start = _state(yolov5n)
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed gave different weights"
    assert (ha.box, ha.obj, ha.cls, ha.map50_95) == (hb.box, hb.obj, hb.cls, hb.map50_95)
    assert any(not torch.equal(a[k], start[k]) for k in a if k.endswith("weight")), "nothing was trained"


def test_recomputed_bn_act_trains_the_same_weights(yolov5n, small_data, small_val, small_train, monkeypatch):
    """``recompute_bn`` keeps only each conv's output for backward and recomputes the frozen BN's (a third less
    activation memory): the weights, the BN statistics and the losses are those of plain autograd, to the bit,
    with the frozen-BN preset (the default) and with BN statistics training (where nothing is recomputed)."""
    from orchestrator.yolo.model import _FrozenBnAct

    calls: list[int] = []
    apply = _FrozenBnAct.apply

    def run(hyp: Hyp, recompute: bool):
        model = _prune_all_convs(copy.deepcopy(yolov5n), 0.3)
        with monkeypatch.context() as mp:
            mp.setattr(_FrozenBnAct, "apply", lambda *args: calls.append(1) or apply(*args))
            r = finetune(
                model, small_data, 1, hyp=hyp, seed=0, val_set=small_val, train_images=small_train,
                recompute_bn=recompute, **SMALL,
            )  # fmt: skip
        assert not any("recompute_bn_act" in vars(m) for m in model.modules()), "the flag outlived the fine-tune"
        return _state(r.model), r.history[0]

    for hyp, recomputes in ((HYP, True), (replace(HYP, freeze_bn_stats=False), False)):
        calls.clear()
        a, ha = run(hyp, recompute=True)
        assert bool(calls) == recomputes
        b, hb = run(hyp, recompute=False)
        assert all(torch.equal(a[k], b[k]) for k in a), "recomputing the BN output changed the weights"
        assert (ha.box, ha.obj, ha.cls, ha.map50_95) == (hb.box, hb.obj, hb.cls, hb.map50_95)


def test_recompute_by_default_on_a_cpu_from_640_x_8():
    """On by default where the activations are the worker's memory (a CPU) and large; the quickstart's 320 x 16
    and any GPU fine-tune run plain autograd."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert recompute_wanted(TrainSettings(), cpu) and recompute_wanted(TrainSettings(batch=8), cpu)
    assert not recompute_wanted(TrainSettings(imgsz=320), cpu) and not recompute_wanted(TrainSettings(), gpu)
    assert recompute_wanted(TrainSettings(imgsz=320, recompute_bn=True), cpu)
    assert not recompute_wanted(TrainSettings(recompute_bn=False), cpu)


def test_pruned_weights_stay_exactly_zero(yolov5n, small_data, small_val, small_train):
    model = _prune_all_convs(copy.deepcopy(yolov5n), 0.3)
    masks = {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    orig = {n: m.weight_orig.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight_orig")}
    sparsity0 = conv_sparsity(model)
    bn0 = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    r = finetune(model, small_data, 2, hyp=HYP, val_set=small_val, train_images=small_train, **SMALL)
    assert HYP.freeze_bn_stats and all(torch.equal(r.model.state_dict()[k], v) for k, v in bn0.items())
    for net in (model, r.model):  # the trained model and the returned EMA
        mods = dict(net.named_modules())
        assert set(masks) == {n for n, m in mods.items() if hasattr(m, "weight_mask")}, "masks were dropped"
        for name, mask in masks.items():
            m = mods[name]
            assert torch.equal(m.weight_mask, mask)
            w = m.weight_orig.detach() * m.weight_mask
            assert (w[mask == 0] == 0).all()
            with torch.no_grad():  # the forward pre-hook's weight is the masked one too
                m._forward_pre_hooks[next(iter(m._forward_pre_hooks))](m, None)
            assert (m.weight.detach()[mask == 0] == 0).all()
    assert conv_sparsity(r.model) == pytest.approx(sparsity0, abs=1e-6)
    changed = sum(not torch.equal(orig[n], dict(r.model.named_modules())[n].weight_orig) for n in orig)
    assert changed > len(orig) // 2, "the unpruned weights did not train"


def test_ema_keeps_prune_reparametrisation(yolov5n):
    model = _prune_all_convs(copy.deepcopy(yolov5n), 0.5)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "weight_orig"):
                m.weight_orig.add_(1.0)  # moves the pruned entries of weight_orig too
    ema.update(model)
    ema.module(torch.zeros(1, 3, 64, 64))  # the pre-hook recomputes weight = weight_orig * mask
    for m in ema.module.modules():
        if hasattr(m, "weight_mask"):
            assert (m.weight[m.weight_mask == 0] == 0).all()
            assert (m.weight[m.weight_mask == 1] != 0).any()
    assert conv_sparsity(ema.module) >= 0.5 - 1e-3


def _channel_pruned(model: nn.Module) -> nn.Module:
    """Cut layer 0 to 13 output channels and one bottleneck's hidden conv to 11: odd widths, no yaml change."""
    state = _state(model)
    cuts = (("model.0", 13, "model.1.conv.weight"), ("model.2.m.0.cv1", 11, "model.2.m.0.cv2.conv.weight"))
    for prefix, keep, consumer in cuts:
        for k in [k for k in state if k.startswith(prefix + ".") and state[k].ndim >= 1]:
            state[k] = state[k][:keep]
        state[consumer] = state[consumer][:, :keep]
    m = adapt_to_state_dict(copy.deepcopy(model), state)
    m.load_state_dict(state)
    return m


def test_channel_pruned_model_trains(yolov5n, small_data, small_val, small_train):
    """Odd channel widths train as they are; with the official preset (warm-up, BN statistics updating)."""
    m = _channel_pruned(yolov5n)
    assert m.model[0].conv.out_channels == 13
    bn0 = m.model[0].bn.running_mean.clone()
    official = get_hyp("scratch-low").with_overrides(nbs=4)
    r = finetune(m, small_data, 1, hyp=official, val_set=small_val, train_images=small_train, **SMALL)
    assert not torch.equal(r.model.model[0].bn.running_mean, bn0)
    assert r.model.model[0].conv.out_channels == 13 and r.model.model[2].m[0].cv1.conv.out_channels == 11
    assert r.history[0].box > 0 and 0 <= r.metrics.map50_95 <= 1


@pytest.mark.slow
def test_acceptance_pruned_30_percent_three_epochs(yolov5n, coco128_yaml):
    """yolov5n, L1 30% on every Conv2d before BN fusion, 3 epochs at 320: val mAP50-95 >= 0.26, sparsity kept.

    Official train.py ends this at 0.2323 with sparsity 0.0005; the pruned start is 0.2397.
    """
    data = load_data_config(coco128_yaml)
    model = _prune_all_convs(copy.deepcopy(yolov5n), 0.3)
    r = finetune(model, data, 3, imgsz=320, batch=16)
    assert len(r.history) == 3
    assert r.metrics.map50_95 >= 0.26
    assert conv_sparsity(r.model) >= 0.299


def test_stop_ends_the_fine_tune_after_the_epoch_it_names(yolov5n, small_data, small_val, small_train):
    seen = []
    r = finetune(
        copy.deepcopy(yolov5n), small_data, 3, hyp=HYP, val_set=small_val, train_images=small_train,
        progress=seen.append, stop=lambda rec: "behind" if rec.epoch == 1 else "", **SMALL,
    )  # fmt: skip
    assert r.stopped == "behind" and len(r.history) == 1 == len(seen) and r.best_epoch == 1
