"""Prunable layers of a YOLOv5 model, their stable names, and the groups a ratio map is keyed by.

Names are module paths (``model.6.m.0.cv1.conv``), so they are the same for every model built from the
same yaml, pruned or not. Three granularities group them:

* ``layer``: each ``nn.Conv2d`` on its own (for structured pruning: each set of convs whose output
  channels are tied together, e.g. a C3's ``cv1`` and its residual Bottlenecks' ``cv2``, named after
  its first member);
* ``block``: each row of the model yaml (``model.6``);
* ``stage``: ``backbone.P1`` ... ``backbone.P5`` (backbone rows by output stride), ``neck`` (the head
  rows before Detect) and ``head`` (Detect's output convs).

Detect's output convs (``model.24.m.*``) are never structurally pruned: their widths are the output format.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import PruningError
from ..vocabulary import GRANULARITIES
from ..vocabulary import METHODS as STUDY_METHODS
from .convs import conv_layers, output_convs

METHODS = (*STUDY_METHODS, "global")  # global: one L1 threshold over every conv (apply.py)


def _row_of(conv_name: str) -> int:
    return int(conv_name.split(".")[1])


def _row_strides(model: nn.Module) -> list[int]:
    """Output stride of every yaml row, from one small forward pass (eval mode, no grad, state restored)."""
    ch = model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3
    size = 64
    strides: list[int] = []
    hooks = [
        row.register_forward_hook(
            lambda _m, _i, out: strides.append(size // out.shape[-1] if isinstance(out, torch.Tensor) else 0)
        )
        for row in model.model
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, ch, size, size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return strides


def stage_of_rows(model: nn.Module) -> list[str]:
    """Stage name of each yaml row: ``backbone.P<k>`` (stride 2**k), ``neck``, or ``head`` (Detect)."""
    n_backbone = len(model.yaml["backbone"])
    strides = _row_strides(model)
    out = []
    for i, s in enumerate(strides):
        if i == len(strides) - 1:
            out.append("head")
        elif i < n_backbone:
            out.append(f"backbone.P{round(math.log2(s))}")
        else:
            out.append("neck")
    return out


def _layer_groups(model: nn.Module, method: str, convs: Sequence[str]) -> dict[str, list[str]]:
    if method != "structured":
        return {c: [c] for c in convs}
    from .structured import coupled_convs  # torch_pruning is needed only for this

    return {members[0]: members for members in coupled_convs(model)}


def _all_groups(model: nn.Module, granularity: str, method: str) -> dict[str, list[str]]:
    convs = list(conv_layers(model))
    if method == "structured":
        skip = set(output_convs(model))
        convs = [c for c in convs if c not in skip]
    if granularity == "layer":
        return _layer_groups(model, method, convs)
    if granularity == "block":
        keys = [f"model.{_row_of(c)}" for c in convs]
    else:
        stages = stage_of_rows(model)
        keys = [stages[_row_of(c)] for c in convs]
    groups: dict[str, list[str]] = {}
    for k, c in zip(keys, convs):
        groups.setdefault(k, []).append(c)
    return groups


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise PruningError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def prunable_groups(
    model: nn.Module, granularity: str = "layer", exclude: Sequence[str] = (), *, method: str = "unstructured"
) -> dict[str, list[str]]:
    """Group name -> the conv module names it holds, at ``granularity``, for ``method``.

    ``exclude`` takes conv, block or stage names (of any granularity); their convs are left out and
    groups left empty disappear. For ``method="structured"`` Detect's output convs are never listed.
    """
    _check_choice("granularity", granularity, GRANULARITIES)
    _check_choice("method", method, METHODS)
    groups = _all_groups(model, granularity, method)
    if exclude:
        dropped = _expand_names(model, exclude, "exclude")
        groups = {k: [c for c in v if c not in dropped] for k, v in groups.items()}
        groups = {k: v for k, v in groups.items() if v}
    return groups


def _expand_names(model: nn.Module, names: Sequence[str], what: str) -> set[str]:
    """Conv names covered by conv, block or stage names; unknown names are an error with close matches."""
    convs = list(conv_layers(model))
    blocks = _all_groups(model, "block", "unstructured")
    stages = _all_groups(model, "stage", "unstructured")
    out: set[str] = set()
    for n in names:
        if n in blocks:
            out.update(blocks[n])
        elif n in stages:
            out.update(stages[n])
        elif n in convs:
            out.add(n)
        else:
            raise PruningError(f"{what}: {n!r} names no layer{_suggest(n, [*convs, *blocks, *stages])}")
    return out


def _suggest(key: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)
    return f" (close matches: {', '.join(close)})" if close else ""


def check_ratio(key: str, value: object) -> float:
    """``value`` as a float in [0, 1), or a PruningError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise PruningError(f"ratios: {key}: expected a number in [0, 1), got {value!r}")
    r = float(value)
    if not 0.0 <= r < 1.0:
        raise PruningError(f"ratios: {key}: ratio must be in [0, 1) (1 would remove the whole layer), got {r:g}")
    return r


def validate_ratios(
    model: nn.Module, ratios: Mapping[str, object], granularity: str = "layer", *, method: str = "unstructured"
) -> dict[str, float]:
    """The ratio map checked against the model's groups: known keys only, each ratio in [0, 1)."""
    return _validate(model, ratios, granularity, method, prunable_groups(model, granularity, method=method))


def _validate(
    model: nn.Module, ratios: Mapping[str, object], granularity: str, method: str, groups: Mapping[str, list[str]]
) -> dict[str, float]:
    if not isinstance(ratios, Mapping):
        raise PruningError(f"ratios: expected a mapping of layer names to ratios, got {type(ratios).__name__}")
    out: dict[str, float] = {}
    for key, value in ratios.items():
        key = str(key)
        if key not in groups:
            raise PruningError(f"ratios: {key!r} names no {granularity} group{_hint(model, key, granularity, method)}")
        out[key] = check_ratio(key, value)
    return out


def _hint(model: nn.Module, key: str, granularity: str, method: str) -> str:
    """Close matches at this granularity, or the granularity at which ``key`` would be valid."""
    for other in GRANULARITIES:
        if other != granularity and key in _all_groups(model, other, method):
            return f" (it is a {other} name: use granularity {other!r})"
    if method == "structured" and key in output_convs(model):
        return " (Detect's output convs are never structurally pruned: their widths are the output format)"
    if method == "structured" and key in conv_layers(model):
        owner = next(k for k, v in _all_groups(model, "layer", method).items() if key in v)
        return f" (its output channels are tied to {owner}'s: use that key)"
    return _suggest(key, list(_all_groups(model, granularity, method)))


def conv_ratios(
    model: nn.Module, ratios: Mapping[str, object], granularity: str = "layer", *, method: str = "unstructured"
) -> dict[str, tuple[str, float]]:
    """Each conv named by a validated ratio map -> (the key that named it, its ratio)."""
    groups = prunable_groups(model, granularity, method=method)
    valid = _validate(model, ratios, granularity, method, groups)
    return {conv: (key, r) for key, r in valid.items() for conv in groups[key]}
