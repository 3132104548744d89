"""One-shot recovery of a channel-pruned model, before any fine-tuning: compensate, reconstruct, recalibrate.

A structured cut of yolov5n collapses accuracy (uniform 0.05 -> mAP50-95 0.04) because every removed
channel's contribution vanishes from the convs that read it, and the error compounds over ~57 convs.
Three steps bring the pruned model back towards the unpruned one on a few train images (never val):

* ``compensate``: a removed input channel's mean (after its activation, measured on the unpruned model)
  times the consumer's weights is folded into the consumer's BN ``running_mean`` (or its bias, for
  Detect), so the next layer sees the same mean input;
* ``reconstruct``: in forward order, each affected conv's remaining input weights (and a bias) are refit
  by ridge least squares so that, on the *pruned* model's own activations, its output matches the
  unpruned conv's output (ThiNet / channel-pruning style); this also undoes drift from earlier layers.
  A refit is kept only where it lowers the error on held-out calibration images;
* ``recalibrate``: BatchNorm running statistics re-estimated on the calibration images (cumulative mean).

Each step is switchable and timed (:class:`RecoveryReport`); which help is measured in docs/pruning.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PruningError
from ..vocabulary import RECOVERY_STEPS as STEPS
from .calibration import CalibrationSet
from .convs import conv_layers
from .structured import KeptChannels


@dataclass(frozen=True)
class ChannelStats:
    """Per input channel of one conv, on the unpruned model: mean and variance over images and pixels."""

    mean: torch.Tensor
    var: torch.Tensor


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover` did: seconds per step, and how many convs each step changed."""

    steps: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    convs_changed: dict[str, int] = field(default_factory=dict)


class _Stop(Exception):
    """Ends a forward pass once the conv of interest has been reached."""


def input_stats(model: nn.Module, calib: CalibrationSet, batch: int = 16) -> dict[str, ChannelStats]:
    """Mean and variance of every conv's input channels on ``calib`` (eval mode, no grad)."""
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def make(name: str):
        def hook(_m, inp):
            x = inp[0].detach().double()
            s = sums.setdefault(name, [0, 0, 0])
            s[0] = s[0] + x.sum((0, 2, 3))
            s[1] = s[1] + (x * x).sum((0, 2, 3))
            s[2] += x.numel() // x.shape[1]

        return hook

    for name, conv in conv_layers(model).items():
        hooks.append(conv.register_forward_pre_hook(make(name)))
    try:
        with _eval(model), torch.no_grad():
            for x in calib.batches(batch):
                model(x.to(_device(model)))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, (s, sq, n) in sums.items():
        mean = s / n
        out[name] = ChannelStats(mean.float(), (sq / n - mean * mean).clamp_min(0).float())
    return out


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _eval:
    """Eval mode for the duration, every module's flag restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, t in self.was:
            m.training = t


def _bn_after(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm a YOLOv5 ``Conv`` applies after its ``.conv`` (None for Detect's output convs)."""
    parent, _, leaf = conv_name.rpartition(".")
    if leaf != "conv":
        return None
    bn = getattr(model.get_submodule(parent), "bn", None)
    return bn if isinstance(bn, nn.BatchNorm2d) else None


def _removed(kept: KeptChannels, n_in: int) -> list[int]:
    keep = set(kept.inp)
    return [i for i in range(n_in) if i not in keep]


def original_names(pruned: nn.Module, renamed: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each conv of ``pruned`` -> its name in the unpruned model: the same, unless depth pruning renumbered it
    (``renamed``, from :func:`.depth.drop_bottlenecks`)."""
    return {n: (renamed or {}).get(n, n) for n in conv_layers(pruned)}


def compensate(
    pruned: nn.Module,
    original: nn.Module,
    kept: Mapping[str, KeptChannels],
    stats: Mapping[str, ChannelStats],
    renamed: Mapping[str, str] | None = None,
) -> int:
    """Fold each removed input channel's mean contribution into the consumer's BN mean or bias; convs changed.

    Exact when a removed channel is constant (and the conv is 1x1 or the constant is seen through
    zero padding nowhere); with no channel removed nothing changes. ``stats`` are keyed by the unpruned
    model's names, ``renamed`` as in :func:`original_names`.
    """
    before = conv_layers(original)
    to_orig = original_names(pruned, renamed)
    changed = 0
    with torch.no_grad():
        for name, conv in conv_layers(pruned).items():
            k, orig = kept[name], to_orig[name]
            gone = _removed(k, before[orig].in_channels)
            if not gone:
                continue
            w = before[orig].weight[k.out][:, gone].sum((2, 3))  # (out kept, removed)
            delta = (w.double() @ stats[orig].mean[gone].double()).to(w.dtype)  # what the cut took away, on average
            bn = _bn_after(pruned, name)
            if bn is not None:
                bn.running_mean -= delta
            elif conv.bias is not None:
                conv.bias += delta
            else:
                continue
            changed += 1
    return changed


def recalibrate_bn(model: nn.Module, calib: CalibrationSet, batch: int = 16) -> int:
    """Re-estimate every BatchNorm's running statistics on ``calib`` (cumulative average); BNs changed."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(bn, bn.momentum) for bn in bns]
    with _eval(model), torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch weighs the same
            bn.train()
        try:
            for x in calib.batches(batch):
                model(x.to(_device(model)))
        finally:
            for bn, mom in saved:
                bn.momentum = mom
    return len(bns)


def call_order(model: nn.Module, imgsz: int = 64) -> list[str]:
    """Conv names in the order a forward pass calls them (what sequential reconstruction must follow)."""
    names = {m: n for n, m in conv_layers(model).items()}
    seen: list[str] = []
    hooks = [c.register_forward_pre_hook(lambda m, _i: seen.append(names[m])) for c in names]
    ch = model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3
    try:
        with _eval(model), torch.no_grad():
            model(torch.zeros(1, ch, imgsz, imgsz, device=_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(seen))


def _conv_input(model: nn.Module, conv: nn.Conv2d, x) -> torch.Tensor:
    got: list[torch.Tensor] = []

    def hook(_m, inp):
        got.append(inp[0])
        raise _Stop

    h = conv.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0]


def _out_size(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of ``conv``'s output on ``x``."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, p, d, k, s in zip(x.shape[-2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)
    )


def _patches(conv: nn.Conv2d, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(B * len(pos), C * kh * kw): the input patches of output positions ``pos`` (flat), one row each, in
    ``F.unfold``'s column order; only those positions are gathered (an unfold of the whole map is mostly
    thrown away: 1,024 of 6,400-25,600 positions)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    _, w_out = _out_size(conv, x)
    oy, ox = (pos // w_out) * sh, (pos % w_out) * sw
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    if kh == kw == 1:
        cols = xp[:, :, oy, ox]  # (B, C, P)
    else:
        iy = (oy[None, :] + torch.arange(kh, device=x.device)[:, None] * dh)[:, None, :]  # (kh, 1, P)
        ix = (ox[None, :] + torch.arange(kw, device=x.device)[:, None] * dw)[None, :, :]  # (1, kw, P)
        cols = xp[:, :, iy, ix].flatten(1, 3)  # (B, C, kh, kw, P) -> (B, C * kh * kw, P)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@dataclass
class _Normal:
    """Normal equations of a least-squares fit with a bias column, accumulated batch by batch."""

    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    yy: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # products in float32 (the hot spot: twice as fast as float64 on CPU), sums kept in float64
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)
        a, b, yy = (x.T @ x).double(), (x.T @ y).double(), (y.double() * y.double()).sum(0)
        self.a = a if self.a is None else self.a + a
        self.b = b if self.b is None else self.b + b
        self.yy = yy if self.yy is None else self.yy + yy

    def error(self, w: torch.Tensor) -> float:
        """Summed squared error of ``x @ w.T`` (w: (out, d + 1)) against y."""
        return float(((w @ self.a) * w).sum() - 2 * (w * self.b.T).sum() + self.yy.sum())


def _row_input(outs: list, f, images: torch.Tensor):
    """What a yaml row reads (as DetectionModel.forward feeds it), from the rows' cached outputs."""
    prev = outs[-1] if outs else images
    if f == -1:
        return prev
    return outs[f] if isinstance(f, int) else [prev if j == -1 else outs[j] for j in f]


def _conv_inputs(row: nn.Module, convs: Mapping[str, nn.Conv2d], x) -> dict[str, torch.Tensor]:
    """Every conv's input during one forward pass of ``row`` (a yaml row of the unpruned model)."""
    got: dict[str, torch.Tensor] = {}
    hooks = [c.register_forward_pre_hook(lambda _m, i, n=n: got.setdefault(n, i[0])) for n, c in convs.items()]
    try:
        row(x)
    finally:
        for h in hooks:
            h.remove()
    return got


# Ridge strength of the reconstruction, pulling each refit towards the conv's current weights: 0.1 beat 1e-3
# (the first choice) at every cut measured (yolov5n 320, coco128 val: uniform 0.1 0.1859 -> 0.1955, uniform 0.2
# 0.0505 -> 0.0762, the 0.7x budget map 0.1478 -> 0.1658; 1.0 falls back to 0.1372; bench/bench_structured.py
# --ridge), and the refit it leaves holds under a fine-tune instead of sliding (docs/pruning.md).
RIDGE = 0.1


def reconstruct(
    pruned: nn.Module,
    original: nn.Module,
    kept: Mapping[str, KeptChannels],
    calib: CalibrationSet,
    *,
    images: int | None = None,
    positions: int = 1024,
    alpha: float = RIDGE,
    seed: int = 0,
    renamed: Mapping[str, str] | None = None,
) -> int:
    """Refit affected convs, in forward order, to the unpruned model's outputs; returns how many were kept.

    Row by row (each row's inputs cached for both models, so the cost is a few forward passes), each
    conv whose input differs from the unpruned model's (cut channels, or drift from upstream) gets a
    ridge regression on ``positions`` output positions per image (``alpha`` times the mean input energy,
    pulling towards the current weights). ``images``: the first so many calibration images (default all of
    them: 128 instead of 32 lifts the 0.7x budget map from 0.166 to 0.183, docs/pruning.md). A quarter
    is held out; a refit that does not lower the error there is discarded. ``kept`` is keyed by the pruned
    model's conv names; ``renamed`` maps those a depth cut renumbered to their unpruned names
    (:func:`original_names`).
    """
    images = len(calib) if images is None else min(images, len(calib))
    if images < 2:
        raise PruningError(f"reconstruction needs at least 2 calibration images, got {images}")
    dev = _device(pruned)
    xs = calib.images[:images].to(dev).float() / 255
    n_fit = max(1, (len(xs) * 3) // 4)
    parts = [xs[:n_fit], xs[n_fit:]] if n_fit < len(xs) else [xs]
    before, after = conv_layers(original), conv_layers(pruned)
    to_pruned = {o: p for p, o in original_names(pruned, renamed).items()}
    order = call_order(original)
    gen = torch.Generator().manual_seed(seed)
    refit = 0
    outs_o: list[list] = [[] for _ in parts]
    outs_p: list[list] = [[] for _ in parts]
    rows = list(zip(original.model, pruned.model, original.froms))
    with _eval(pruned), _eval(original), torch.no_grad():
        for i, (row_o, row_p, f) in enumerate(rows):
            # a conv of a dropped bottleneck (prune/depth.py) is gone from the pruned model: the convs after it
            # (its C3's cv3 first) are refit to what the unpruned model computed with it
            names = [n for n in order if n.startswith(f"model.{i}.") and n in to_pruned]
            ins_o = [_row_input(o, f, x) for o, x in zip(outs_o, parts)]
            ins_p = [_row_input(o, f, x) for o, x in zip(outs_p, parts)]
            xo = [_conv_inputs(row_o, {n: before[n] for n in names}, x) for x in ins_o]
            for name in names:
                p = to_pruned[name]
                c_o, c_p, k = before[name], after[p], kept[p]
                xp = [_conv_input(row_p, c_p, x) for x in ins_p]
                if all(a[name].shape == b.shape and torch.equal(a[name], b) for a, b in zip(xo, xp)):
                    continue  # nothing upstream of this conv changed: leave it alone
                fit, held = _Normal(), _Normal()
                w_o = c_o.weight[k.out].flatten(1)
                for j, (a, b) in enumerate(zip(xo, xp)):
                    h_out, w_out = _out_size(c_o, a[name])
                    length = h_out * w_out
                    pos = torch.randperm(length, generator=gen)[: min(positions, length)].to(dev)
                    y = _patches(c_o, a[name], pos) @ w_o.T
                    if c_o.bias is not None:
                        y = y + c_o.bias[k.out]
                    (fit if j == 0 else held).add(_patches(c_p, b, pos), y)
                if _refit(c_p, _bn_after(pruned, p), _bn_after(original, name), k, fit, held, alpha):
                    refit += 1
            if i < len(rows) - 1:
                for outs, ins, row in ((outs_o, ins_o, row_o), (outs_p, ins_p, row_p)):
                    for o, x in zip(outs, ins):
                        if o and i - 1 not in original.save:
                            o[-1] = None  # only saved rows are read again: free the rest
                        o.append(row(x))
    return refit


def _refit(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d | None,
    bn_o: nn.BatchNorm2d | None,
    k: KeptChannels,
    fit: _Normal,
    held: _Normal,
    alpha: float,
) -> bool:
    """Solve the ridge fit and install it if it beats the current weights on the held-out rows."""
    w0 = conv.weight.flatten(1).double()
    if bn is not None:
        b0 = (bn_o.running_mean[k.out] - bn.running_mean).double()  # the bias compensation already folded in
    elif conv.bias is not None:
        b0 = conv.bias.double()
    else:
        return False
    cur = torch.cat([w0, b0[:, None]], 1)
    d = w0.shape[1]
    lam = alpha * float(torch.diagonal(fit.a)[:d].mean())
    reg = torch.full((d + 1,), lam, dtype=torch.float64)
    reg[-1] = 0.0
    prior = torch.cat([w0, torch.zeros_like(b0)[:, None]], 1)
    try:
        new = torch.linalg.solve(fit.a + torch.diag(reg), fit.b + lam * prior.T).T
    except RuntimeError:  # singular even with the ridge (e.g. a dead input): keep what we have
        return False
    if held.a is not None and held.error(new) >= held.error(cur):
        return False
    conv.weight.copy_(new[:, :d].reshape_as(conv.weight).to(conv.weight.dtype))
    b = new[:, d].to(conv.weight.dtype)
    if bn is not None:
        bn.running_mean.copy_(bn_o.running_mean[k.out] - b)
        bn.running_var.copy_(bn_o.running_var[k.out])
    else:
        conv.bias.copy_(b)
    return True


def recover(
    pruned: nn.Module,
    original: nn.Module,
    kept: Mapping[str, KeptChannels],
    calib: CalibrationSet,
    steps: Iterable[str] = STEPS,
    *,
    stats: Mapping[str, ChannelStats] | None = None,
    ridge: float = RIDGE,
    renamed: Mapping[str, str] | None = None,
) -> RecoveryReport:
    """Run the chosen recovery ``steps`` on ``pruned`` (in place), in the order of :data:`STEPS`.

    ``original`` is the unpruned model (not modified); ``kept`` what :func:`apply_ratios` filled in;
    ``stats`` the unpruned model's :func:`input_stats` (measured here when compensation needs them);
    ``ridge`` the reconstruction's :data:`RIDGE`; ``renamed`` the convs a depth cut renumbered
    (:func:`original_names`).
    """
    steps = _check_steps(steps)
    seconds: dict[str, float] = {}
    changed: dict[str, int] = {}
    for step in steps:
        t0 = time.perf_counter()
        if step == "compensate":
            if stats is None:
                stats = input_stats(original, calib)
            changed[step] = compensate(pruned, original, kept, stats, renamed)
        elif step == "reconstruct":
            changed[step] = reconstruct(pruned, original, kept, calib, alpha=ridge, renamed=renamed)
        else:
            changed[step] = recalibrate_bn(pruned, calib)
        seconds[step] = time.perf_counter() - t0
    return RecoveryReport(steps, seconds, changed)


def _check_steps(steps: Iterable[str]) -> tuple[str, ...]:
    asked = tuple(steps)
    bad = [s for s in asked if s not in STEPS]
    if bad:
        raise PruningError(f"recovery steps must be among {', '.join(STEPS)}, got {', '.join(map(repr, bad))}")
    return tuple(s for s in STEPS if s in asked)


def parse_steps(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"compensate,recalibrate"`` / ``"none"`` / a list -> checked steps."""
    if isinstance(text, str):
        text = [] if text.strip() in ("", "none") else [s.strip() for s in text.split(",")]
    return _check_steps(text)
