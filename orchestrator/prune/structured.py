"""Structured (output-channel) pruning with Torch-Pruning's dependency graph: a smaller dense model.

Removing output channels of one conv forces matching cuts downstream (the next conv's inputs, the BN,
every input slice of a Concat that carries them) and, through residual adds, in every conv tied to it
(a C3's ``cv1`` and its Bottlenecks' ``cv2``). Torch-Pruning traces the model once and groups those
couplings, including SPPF's four-way concat, the neck's cross-level Concats and Detect's input convs, so
the cut stays consistent. Detect's output convs are left alone: the output shapes do not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import PruningError
from ..vocabulary import STRUCTURED_IMPORTANCES as IMPORTANCES
from .convs import conv_layers, output_convs


def _tp():
    try:
        import torch_pruning as tp
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise PruningError("structured pruning needs torch-pruning: pip install torch-pruning") from e
    return tp


@contextmanager
def _tracing_mode(model: nn.Module):
    """Eval BNs (tracing must not touch running stats), Detect in train mode (raw maps, no decode)."""
    was = {m: m.training for m in model.modules()}
    model.eval()
    model.model[-1].train()
    try:
        yield
    finally:
        for m, t in was.items():
            m.training = t


def _dependency_graph(model: nn.Module, imgsz: int):
    tp = _tp()
    p = next(model.parameters())
    ch = model.yaml.get("ch", 3)
    example = torch.randn(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)
    # Torch-Pruning follows autograd's graph: with frozen parameters or under no_grad it finds no
    # dependency at all and every cut silently becomes a no-op. Trace with grad on, then restore.
    frozen = [q for q in model.parameters() if not q.requires_grad]
    for q in frozen:
        q.requires_grad_(True)
    try:
        with _tracing_mode(model), torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        for q in frozen:
            q.requires_grad_(False)


def _groups(model: nn.Module, dg) -> list[tuple[nn.Conv2d, list[str]]]:
    """(root conv, names of the convs whose output channels it ties together), in module order."""
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(conv_layers(model))}
    ignored = [model.get_submodule(n) for n in output_convs(model)]
    out = []
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]):
        members = {
            names[dep.target.module]
            for dep, _ in group
            if isinstance(dep.target.module, nn.Conv2d) and dg.is_out_channel_pruning_fn(dep.handler)
        }
        if members:
            ordered = sorted(members, key=order.__getitem__)
            out.append((model.get_submodule(ordered[0]), ordered))
    out.sort(key=lambda g: order[g[1][0]])
    return out


def coupled_convs(model: nn.Module, imgsz: int = 64) -> list[list[str]]:
    """Sets of conv names whose output channels must be pruned together (first member first)."""
    return [members for _, members in _groups(model, _dependency_graph(model, imgsz))]


def _importance(kind: str | Callable):
    tp = _tp()
    if callable(kind):
        return kind
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise PruningError(f"importance must be one of {', '.join(IMPORTANCES)} for structured pruning, got {kind!r}")


def channels_to_keep(n: int, ratio: float, round_to: int | None) -> int:
    """How many of ``n`` channels survive ``ratio``; with ``round_to`` a multiple of it (never 0 by rounding)."""
    keep = int(math.floor(n * (1.0 - ratio) + 0.5))
    if keep and round_to and round_to > 1:
        keep = min(n, max(round_to, round_to * int(math.floor(keep / round_to + 0.5))))
    return keep


@dataclass
class KeptChannels:
    """Which of a conv's original output / input channels are still there, in their current order.

    Recovery needs it to line a pruned conv up with its unpruned self (weights, statistics, targets).
    """

    out: list[int]
    inp: list[int] = field(default_factory=list)


def all_kept(model: nn.Module) -> dict[str, KeptChannels]:
    """Every conv keeping all its channels: the record of a model no channel cut has touched yet."""
    return {
        n: KeptChannels(list(range(c.out_channels)), list(range(c.in_channels))) for n, c in conv_layers(model).items()
    }


def _record_cut(group, dg, names: Mapping[nn.Module, str], kept: dict[str, KeptChannels]) -> None:
    """Drop from ``kept`` the positions this pruning group is about to remove (current indexing)."""
    removed: dict[tuple[str, str], set[int]] = {}
    for dep, idxs in group.items:
        mod = dep.target.module
        if not isinstance(mod, nn.Conv2d) or mod not in names:
            continue
        side = (
            "out"
            if dg.is_out_channel_pruning_fn(dep.handler)
            else "inp"
            if dg.is_in_channel_pruning_fn(dep.handler)
            else ""
        )
        if side:
            removed.setdefault((names[mod], side), set()).update(int(i) for i in idxs)
    for (name, side), gone in removed.items():
        k = kept[name]
        setattr(k, side, [c for pos, c in enumerate(getattr(k, side)) if pos not in gone])


@dataclass(frozen=True)
class ChannelCut:
    """One coupled channel set: its convs, the key that set its ratio, and widths before/after."""

    convs: tuple[str, ...]
    key: str
    ratio: float
    before: int
    after: int


def prune_structured(
    model: nn.Module,
    ratios: Mapping[str, tuple[str, float]],
    *,
    importance: str | Callable = "l1",
    round_to: int | None = None,
    example_imgsz: int = 64,
    kept: dict[str, KeptChannels] | None = None,
) -> list[ChannelCut]:
    """Remove the least important output channels of each coupled set, in place.

    ``ratios`` maps conv names to (ratio-map key, ratio). A set whose members were given different
    ratios takes the largest, so a ratio asked of a layer is never silently ignored. ``importance`` is
    a name or a callable scoring a Torch-Pruning group's channels. ``kept``, when given (empty), is
    filled with every conv's surviving original channels (what recovery needs).
    """
    tp = _tp()
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise PruningError(f"round_to must be a positive integer, got {round_to!r}")
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise PruningError("structured pruning needs the unfused model (BatchNorm layers present); prune before fuse()")
    imp = _importance(importance)
    frozen = {n for n, q in model.named_parameters() if not q.requires_grad}  # cut tensors come back trainable
    dg = _dependency_graph(model, example_imgsz)
    plan = []
    for root, members in _groups(model, dg):
        asked = [ratios[c] for c in members if c in ratios]
        if not asked:
            continue
        key, ratio = max(asked, key=lambda kr: kr[1])
        n = root.out_channels
        keep = channels_to_keep(n, ratio, round_to)
        if keep == 0:
            most = (n - 0.5) / n
            raise PruningError(
                f"ratios: {key}: ratio {ratio:g} would leave {members[0]} with no channels "
                f"(it has {n}; the ratio must stay below {most:.4g})"
            )
        plan.append((root, tuple(members), key, ratio, n, keep))
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if kept is not None:
        kept.update(all_kept(model))
    cuts = []
    with torch.no_grad():
        for root, members, key, ratio, n, keep in plan:
            if keep < n:
                group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(n)))
                scores = imp(group)
                if scores is None:
                    raise PruningError(f"ratios: {key}: importance {importance!r} cannot rank {members[0]}'s channels")
                drop = torch.argsort(scores)[: n - keep].tolist()
                cut = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=sorted(drop))
                if kept is not None:
                    _record_cut(cut, dg, names, kept)
                cut.prune()
            cuts.append(ChannelCut(members, key, ratio, n, root.out_channels))
    for n, q in model.named_parameters():
        if n in frozen:
            q.requires_grad_(False)
    return cuts
