"""Unstructured magnitude pruning with ``torch.nn.utils.prune`` masks.

Each pruned conv keeps ``weight_orig`` and a ``weight_mask`` buffer; a forward pre-hook recomputes
``weight = weight_orig * mask``, so a fine-tuner that trains ``weight_orig`` keeps the pruned weights
at exactly zero (the gradient through the mask is zero there). :func:`make_permanent` bakes the masks in.

Prune before BatchNorm fusion. Fusion scales each output channel's weights by ``gamma / sqrt(var + eps)``,
which differs by up to orders of magnitude between channels, so a magnitude threshold taken after
fusion removes whole low-scale channels and keeps noise in high-scale ones. On yolov5n the official
guide's ``prune(model, 0.3)`` (applied after fusion by ``val.py``) drops A-val mAP50-95 from 0.314 to
0.134; the same L1 cut before fusion keeps 0.240 (``../shared/assets/REFERENCE.md``).

Zeros do not make a dense conv faster: latency is unchanged; only the zip-deflated file shrinks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from ..errors import PruningError
from ..vocabulary import UNSTRUCTURED_IMPORTANCES as IMPORTANCES
from ..yolo.model import copy_model


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    return model.get_submodule(name)


def prune_unstructured(model: nn.Module, ratios: Mapping[str, tuple[str, float]], *, importance: str = "l1") -> None:
    """Per-conv L1 magnitude pruning: zero the ``ratio`` smallest |w| of each named conv (masks kept)."""
    _check_importance(importance)
    with torch.no_grad():  # a masked weight computed with grad is a non-leaf, which deepcopy refuses
        for name, (_, ratio) in ratios.items():
            if ratio > 0:
                tprune.l1_unstructured(_conv(model, name), name="weight", amount=ratio)


def prune_global(model: nn.Module, ratios: Mapping[str, tuple[str, float]], *, importance: str = "l1") -> None:
    """One magnitude threshold across the named convs: ``ratio`` of all their weights together are zeroed.

    All chosen layers (ratio > 0) must carry the same ratio: a global cut has one amount.
    """
    _check_importance(importance)
    chosen = {name: kr for name, kr in ratios.items() if kr[1] > 0}
    amounts = {kr[1] for kr in chosen.values()}
    if len(amounts) > 1:
        (ka, ra), (kb, rb) = min(chosen.values(), key=lambda kr: kr[1]), max(chosen.values(), key=lambda kr: kr[1])
        raise PruningError(
            f"ratios: global pruning takes one ratio for all chosen layers, got {ra:g} for {ka} and {rb:g} for {kb}"
        )
    if not chosen:
        return
    params = [(_conv(model, name), "weight") for name in chosen]
    with torch.no_grad():
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amounts.pop())


def _check_importance(kind: str) -> None:
    if kind not in IMPORTANCES:
        raise PruningError(
            f"importance must be one of {', '.join(IMPORTANCES)} for unstructured pruning, got {kind!r} "
            "(bn_scale ranks channels: use method structured)"
        )


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every ``torch.nn.utils.prune`` mask into its weight and drop the re-parametrisation; returns ``model``."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    return model


def has_masks(model: nn.Module) -> bool:
    """Whether any module still carries a pruning re-parametrisation."""
    return any(isinstance(h, tprune.BasePruningMethod) for m in model.modules() for h in m._forward_pre_hooks.values())


copy_pruned = copy_model  # one implementation, in yolo/model.py (yolo/ cannot import prune/)


def without_masks(model: nn.Module) -> nn.Module:
    """A copy with ``torch.nn.utils.prune`` masks baked into the weights."""
    net = copy_pruned(model)
    for m in net.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    return net


def deployable(model: nn.Module) -> nn.Module:
    """A float32 eval copy with masks baked in and BatchNorms fused, as inference runs it."""
    net = without_masks(model).float().eval()
    if hasattr(net, "fuse"):
        net.fuse()
    return net
