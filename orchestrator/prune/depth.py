"""Depth pruning: whole bottlenecks dropped from C3 blocks, the model getting shallower instead of narrower.

A C3 block runs its ``cv1`` branch through a chain of bottlenecks (``C3.m``); each bottleneck maps its
input to an output of the same shape, so any of them can go and the block still computes. A residual
bottleneck (``x + f(x)``) dropped leaves ``x``: what it removes is only ``f(x)``, which is why residual ones
go first. A C3 with every bottleneck dropped keeps ``m`` as an empty ``nn.Sequential`` (the identity), so
the official layout still pickles and runs it. Which bottlenecks to drop is ranked on calibration images
by how much the block's output changes without it, ``||out - in|| / ||in||``; the C3's ``cv3`` (and
everything after) is then refit to the unpruned features by :func:`recover_depth`.

The kept depth is data: a checkpoint stores the unpruned yaml and fewer ``model.{i}.m.{j}`` tensors, which
the loader reads back (``yolo.model.stored_bottlenecks``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import PruningError
from ..yolo.model import C3, copy_model, table_repeats
from .calibration import CalibrationSet
from .recovery import RecoveryReport, reconstruct
from .structured import all_kept


@dataclass(frozen=True)
class C3Depth:
    """One C3 block: its name (``model.4``), bottlenecks now and in the unpruned table, and whether they are
    residual (``x + f(x)``; the neck's C3s are not)."""

    name: str
    bottlenecks: int
    original: int
    residual: bool


@dataclass(frozen=True)
class BottleneckRank:
    """One droppable bottleneck (``block``'s ``index``-th) and what dropping it changes on calibration images."""

    block: str
    index: int
    residual: bool
    change: float  # ||block output without it - with it|| / ||its input||, over the calibration images


def c3_blocks(model: nn.Module) -> list[C3Depth]:
    """Every C3 row of ``model`` in order, with its depth now and in the unpruned yaml table."""
    table = table_repeats(model.yaml)
    rows = model.yaml["backbone"] + model.yaml["head"]
    out = []
    for i, row in enumerate(model.model):
        if isinstance(row, C3):
            args = rows[i][3]
            flag = args[1] if len(args) > 1 and isinstance(args[1], bool) else True
            residual = all(b.add for b in row.m) if len(row.m) else bool(flag)
            out.append(C3Depth(f"model.{i}", len(row.m), table[i], residual))
    return out


def _blocks_or_refuse(model: nn.Module, what: str) -> dict[str, C3Depth]:
    blocks = {b.name: b for b in c3_blocks(model)}
    if not blocks:
        raise PruningError(f"{what}: the model has no C3 blocks, so no bottleneck to drop")
    return blocks


def droppable(model: nn.Module) -> int:
    """How many bottlenecks the model still has in its C3 blocks (each of them can be dropped)."""
    return sum(b.bottlenecks for b in c3_blocks(model))


def parse_depth(text: str, what: str = "--depth") -> int | dict[str, int]:
    """``"3"`` (a total to drop, in rank order) or ``"model.4=1,model.6=2"`` (bottlenecks each C3 keeps)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    keep: dict[str, int] = {}
    for part in text.split(","):
        hit = re.fullmatch(r"\s*(model\.\d+)\s*=\s*(\d+)\s*", part)
        if not hit:
            raise PruningError(
                f"{what}: expected a number of bottlenecks to drop (e.g. 3) or C3 blocks and how many "
                f"bottlenecks each keeps (e.g. model.4=1,model.6=2), got {text!r}"
            )
        keep[hit[1]] = int(hit[2])
    return keep


def rank_bottlenecks(model: nn.Module, calib: CalibrationSet, batch: int = 16) -> list[BottleneckRank]:
    """Every bottleneck, least missed first: residual ones before the others, then by the output change."""
    blocks = [(b, model.get_submodule(b.name)) for b in c3_blocks(model)]
    sums: dict[tuple[str, int], list[float]] = {}
    hooks = []

    def make(key: tuple[str, int]):
        def hook(_m, inp, out):
            x = inp[0].double()
            s = sums.setdefault(key, [0.0, 0.0])
            s[0] += float(((out.double() - x) ** 2).sum())
            s[1] += float((x**2).sum())

        return hook

    for b, c3 in blocks:
        for j, bott in enumerate(c3.m):
            hooks.append(bott.register_forward_hook(make((b.name, j))))
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            for x in calib.batches(batch):
                model(x.to(dev))
    finally:
        for h in hooks:
            h.remove()
        for m, t in was:
            m.training = t
    ranks = [
        BottleneckRank(b.name, j, b.residual, (sums[(b.name, j)][0] / max(sums[(b.name, j)][1], 1e-12)) ** 0.5)
        for b, c3 in blocks
        for j in range(len(c3.m))
    ]
    return sorted(ranks, key=lambda r: (not r.residual, r.change))


def plan_total(ranking: Sequence[BottleneckRank], total: int, what: str = "--depth") -> dict[str, list[int]]:
    """The ``total`` lowest-ranked bottlenecks, as block -> indices to drop."""
    if total > len(ranking):
        raise PruningError(f"{what}: cannot drop {total} bottlenecks, the model has {len(ranking)} in its C3 blocks")
    drop: dict[str, list[int]] = {}
    for r in ranking[:total]:
        drop.setdefault(r.block, []).append(r.index)
    return drop


def plan_keep(
    model: nn.Module, keep: Mapping[str, int], ranking: Sequence[BottleneckRank] | None = None, what: str = "--depth"
) -> dict[str, list[int]]:
    """Block -> indices to drop so each named C3 keeps ``keep[name]`` bottlenecks: the lowest-ranked go when a
    ranking is given, else the last ones of the chain."""
    blocks = _blocks_or_refuse(model, what)
    drop: dict[str, list[int]] = {}
    for name, k in keep.items():
        if name not in blocks:
            raise PruningError(f"{what}: {name} is not a C3 block (C3 blocks: {', '.join(blocks)})")
        n = blocks[name].bottlenecks
        if not 0 <= k <= n:
            raise PruningError(f"{what}: {name} has {n} bottleneck{'s' * (n != 1)}, cannot keep {k}")
        if ranking is not None:
            order = [r.index for r in ranking if r.block == name]
        else:
            order = list(range(n - 1, -1, -1))
        if n - k:
            drop[name] = sorted(order[: n - k])
    return drop


@dataclass(frozen=True)
class DepthCut:
    """What :func:`drop_bottlenecks` did: C3 block -> (bottlenecks before, after), for the blocks it cut, and the
    convs of surviving bottlenecks that moved up the chain (name now -> name before), which recovery needs to
    line the shallower model up with the unpruned one."""

    blocks: dict[str, tuple[int, int]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(b - a for b, a in self.blocks.values())


def drop_bottlenecks(model: nn.Module, drop: Mapping[str, Sequence[int]]) -> DepthCut:
    """Remove the named bottlenecks in place (block -> indices); the survivors are renumbered (``m.0``, ``m.1``
    ...), as a checkpoint of the shallower model stores them."""
    blocks = _blocks_or_refuse(model, "depth")
    cut = DepthCut()
    for name, idxs in drop.items():
        if name not in blocks:
            raise PruningError(f"depth: {name} is not a C3 block (C3 blocks: {', '.join(blocks)})")
        c3 = model.get_submodule(name)
        gone = set(idxs)
        if not gone <= set(range(len(c3.m))):
            raise PruningError(f"depth: {name} has no bottleneck {sorted(gone - set(range(len(c3.m))))[0]}")
        survivors = [j for j in range(len(c3.m)) if j not in gone]
        for new, old in enumerate(survivors):
            if new != old:
                for sub, m in c3.m[old].named_modules():
                    if isinstance(m, nn.Conv2d):
                        cut.renamed[f"{name}.m.{new}.{sub}"] = f"{name}.m.{old}.{sub}"
        cut.blocks[name] = (len(c3.m), len(survivors))
        c3.m = nn.Sequential(*(c3.m[j] for j in survivors))
    return cut


def drop_depth(
    model: nn.Module,
    depth: int | Mapping[str, int],
    ranking: Sequence[BottleneckRank] | None = None,
    what: str = "--depth",
) -> DepthCut:
    """``depth`` as :func:`parse_depth` reads it, applied in place; a total needs the ``ranking`` (of this model,
    or of the unpruned model it is a copy of) to choose by."""
    _blocks_or_refuse(model, what)
    if isinstance(depth, int) and depth == 0:
        return DepthCut()
    if isinstance(depth, int):
        if ranking is None:
            raise PruningError(f"{what}: dropping a number of bottlenecks needs calibration images to rank them")
        plan = plan_total(ranking, depth, what)
    else:
        plan = plan_keep(model, depth, ranking, what)
    return drop_bottlenecks(model, plan)


def recover_depth(pruned: nn.Module, original: nn.Module, cut: DepthCut, calib: CalibrationSet) -> int:
    """Refit the convs after each dropped bottleneck (its C3's ``cv3`` first, then downstream drift) to the
    unpruned model's outputs on ``calib`` (train images); returns how many convs were refit."""
    return reconstruct(pruned, original, all_kept(pruned), calib, renamed=cut.renamed)


@dataclass(frozen=True)
class Shallower:
    """A depth-pruned copy: the model, what was dropped, the convs its recovery refit, and the seconds each step
    took (``rank``, ``reconstruct``, ``recalibrate``)."""

    model: nn.Module
    cut: DepthCut
    refit: int
    seconds: dict[str, float]

    @property
    def recovery(self) -> RecoveryReport:
        """The refit as a channel cut's recovery reports it (a trial logs its seconds as ``recovery_s``)."""
        steps = {k: v for k, v in self.seconds.items() if k != "rank"}
        return RecoveryReport(tuple(steps), steps, {"reconstruct": self.refit} if self.refit else {})


def shallower(
    model: nn.Module,
    depth: int | Mapping[str, int],
    calib: CalibrationSet | None = None,
    steps: Sequence[str] = ("reconstruct",),
    what: str = "--depth",
    ranking: Sequence[BottleneckRank] | None = None,
) -> Shallower:
    """A copy of ``model`` with ``depth`` dropped (ranked on ``calib`` unless ``ranking`` is given) and recovered by
    ``steps`` on ``calib``; ``model`` is untouched. ``compensate`` has nothing to do after a depth cut (no channel
    is gone)."""
    from .recovery import recover

    t0 = time.perf_counter()
    if ranking is None and calib is not None and depth:
        ranking = rank_bottlenecks(model, calib)
    seconds = {"rank": time.perf_counter() - t0}
    m = copy_model(model)
    cut = drop_depth(m, depth, ranking, what)
    steps = tuple(s for s in steps if s != "compensate")
    if steps and cut.dropped:
        if calib is None:
            raise PruningError(f"{what}: recovery needs calibration images: give --data (or --recover none)")
        rep = recover(m, model, all_kept(m), calib, steps, renamed=cut.renamed)
        seconds.update(rep.seconds)
        refit = rep.convs_changed.get("reconstruct", 0)
    else:
        refit = 0
    return Shallower(m, cut, refit, seconds)


def without_dropped(model: nn.Module, ratios: Mapping[str, float], granularity: str, method: str) -> dict[str, float]:
    """``ratios`` less the groups a depth cut removed (at layer granularity a dropped bottleneck's convs): the
    ratio map of a study is keyed by the unpruned model's groups."""
    from .layers import prunable_groups

    groups = prunable_groups(model, granularity, method=method)
    return {k: v for k, v in ratios.items() if k in groups}
