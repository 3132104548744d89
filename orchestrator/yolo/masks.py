"""Unstructured prune masks: read off a model, packed into a checkpoint, put back when training resumes.

A pruned weight is stored as an exact zero, but a zero alone does not say "keep me at zero": a file
without a record trains its zeros back (the official workflow's defect: 30% -> 0.05% after a fine-tune).
So every checkpoint we write carries, beside the weights, one bit per weight of each masked conv
(``numpy.packbits``: about 1/16 of the fp16 weights' bytes), under the top-level key :data:`MASKS_KEY`.
A top-level key of plain tensors, strings and lists is the one addition official code tolerates: it
reads ``ckpt['model']`` (or ``'ema'``) and ignores the rest, and unpickling it needs only torch.

Loading returns the masks beside a plain model (no hooks: val, measure and export see an ordinary
network); a trainer calls :func:`attach_masks` to put them back as ``torch.nn.utils.prune``
re-parametrisations, under which the optimiser and the EMA keep every pruned weight exactly zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from ..errors import CheckpointError

MASKS_KEY = "prune_masks"
RECORD_FORMAT = "packbits/1"  # row-major flattened weight, numpy.packbits big-endian bit order


def effective_weight(conv: nn.Module) -> torch.Tensor:
    """The weight a forward uses: ``weight_orig * weight_mask`` when masked (``weight`` can be stale until then)."""
    if hasattr(conv, "weight_orig") and hasattr(conv, "weight_mask"):
        return (conv.weight_orig * conv.weight_mask).detach()
    return conv.weight.detach()


def conv_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over every ``Conv2d`` of ``model``, masks applied."""
    zeros = total = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                w = effective_weight(m)
                zeros += int((w == 0).sum())
                total += w.numel()
    return zeros / total if total else 0.0


def model_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv name -> bool keep-mask, for every conv carrying a ``torch.nn.utils.prune`` weight mask."""
    return {
        name: (m.weight_mask != 0).detach().cpu()
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and hasattr(m, "weight_mask")
    }


def pack_masks(masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The checkpoint record of ``masks``: ``{format, convs: {name: {shape, bits}}}`` (bits: packed uint8 tensor)."""
    convs = {}
    for name, mask in masks.items():
        flat = mask.detach().cpu().reshape(-1).numpy().astype(bool)
        convs[name] = {"shape": list(mask.shape), "bits": torch.from_numpy(np.packbits(flat))}
    return {"format": RECORD_FORMAT, "convs": convs}


def unpack_masks(record: Any, where: str) -> dict[str, torch.Tensor]:
    """Conv name -> bool mask from a checkpoint record; :class:`CheckpointError` naming ``where`` if malformed."""
    bad = f"{where}: {MASKS_KEY}"
    convs = record.get("convs") if isinstance(record, dict) else None
    if record.get("format") != RECORD_FORMAT or not isinstance(convs, dict):
        raise CheckpointError(f"{bad}: expected {{'format': '{RECORD_FORMAT}', 'convs': {{...}}}}")
    out: dict[str, torch.Tensor] = {}
    for name, entry in convs.items():
        shape, bits = (entry.get("shape"), entry.get("bits")) if isinstance(entry, dict) else (None, None)
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise CheckpointError(f"{bad}: {name}: shape must be a list of sizes, got {shape!r}")
        numel = int(np.prod(shape)) if shape else 1
        if not (isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8 and bits.numel() == (numel + 7) // 8):
            raise CheckpointError(f"{bad}: {name}: bits must be {(numel + 7) // 8} packed bytes for shape {shape}")
        flat = np.unpackbits(bits.reshape(-1).numpy(), count=numel).astype(bool)
        out[str(name)] = torch.from_numpy(flat).reshape(shape)
    return out


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], where: str) -> None:
    """Every mask names a conv of ``model`` with the same weight shape; else :class:`CheckpointError`."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            raise CheckpointError(f"{where}: {MASKS_KEY}: {name} is not a conv of the model")
        if tuple(mask.shape) != tuple(conv.weight.shape):
            raise CheckpointError(
                f"{where}: {MASKS_KEY}: {name}: mask shape {list(mask.shape)} != weight {list(conv.weight.shape)}"
            )


def apply_zeros(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every masked-out weight in place (the file's weights already are; this makes it so)."""
    with torch.no_grad():
        for name, mask in masks.items():
            w = model.get_submodule(name).weight
            w.mul_(mask.to(w.device, w.dtype))


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Put masks back as ``torch.nn.utils.prune`` re-parametrisations (ANDed with any mask already there).

    From here an optimiser trains ``weight_orig`` and every forward multiplies by the mask, so the
    masked weights stay exactly zero through training, the EMA and saving. Returns ``model``.
    """
    check_masks(model, masks, "masks")
    with torch.no_grad():  # a masked weight computed with grad is a non-leaf, which deepcopy refuses
        for name, mask in masks.items():
            conv = model.get_submodule(name)
            tprune.custom_from_mask(conv, "weight", mask.to(conv.weight.device))
    return model


def carried_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Earlier masks fitted to ``model`` after a further cut: kept where shapes still match, else its zeros.

    A structured cut removes channels (the old mask no longer fits); its surviving weights keep their
    zeros, so the zero pattern of the cut conv is the old mask restricted to what is left.
    """
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            continue
        w = effective_weight(conv)
        out[name] = mask if tuple(mask.shape) == tuple(w.shape) else (w != 0).cpu()
    return out
