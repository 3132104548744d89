"""YOLOv5 (v6+) built from the official yaml layer tables.

Module classes and attribute names follow the official implementation (``Conv.conv``, ``C3.cv1``,
``Detect.m``...), so an official state dict loads one-to-one (``model.24.m.0.weight``) and a model of
ours can be pickled under the official global names. Pruned variants are data, not classes: a
model is its yaml plus its state dict, whose tensor shapes carry any pruned channel widths
(see :func:`adapt_to_state_dict`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.nn.utils.fusion import fuse_conv_bn_eval

CFG_DIR = Path(__file__).parent / "cfg"
# Official initialize_weights() sets these on every BatchNorm2d; checkpoints carry them.
BN_EPS, BN_MOMENTUM = 1e-3, 0.03


def autopad(k: int | Sequence[int], p: int | None = None, d: int = 1) -> int | list[int]:
    """'same' padding for stride 1."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d -> BatchNorm2d -> SiLU; after :meth:`fuse` the BN is folded into the conv.

    With ``recompute_bn_act`` (set by :func:`recompute_bn_act`, which a large CPU fine-tune uses) and a frozen BN,
    backward recomputes the BN's output from the conv's instead of keeping it: autograd would keep both, about
    0.76 GB each for yolov5n at 640 x 16. The recomputation runs the same kernel on the same inputs (a frozen BN
    has no statistics to update) and backward the same kernels, so the gradients are the same to the bit.
    """

    recompute_bn_act = False

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g=1, d=1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        bn = self.bn
        if self.recompute_bn_act and not bn.training and torch.is_grad_enabled() and isinstance(bn, nn.BatchNorm2d):
            return _FrozenBnAct.apply(y, bn.weight, bn.bias, self)
        return self.act(bn(y))

    def fuse(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
            self.bn = nn.Identity()


class _FrozenBnAct(torch.autograd.Function):
    """``conv.act(conv.bn(y))`` with the BN frozen (eval), keeping only ``y`` for backward.

    Backward recomputes the BN output (one elementwise pass; the SiLU's is not needed) and calls the backward
    kernels plain autograd calls on the same tensors: ``silu_backward(grad, bn_out)`` and the BN's own node.
    """

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, conv: Conv) -> torch.Tensor:
        ctx.conv = conv
        ctx.save_for_backward(y, weight, bias)
        return conv.act(conv.bn(y))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, weight, bias = ctx.saved_tensors
        bn, act, need = ctx.conv.bn, ctx.conv.act, ctx.needs_input_grad[:3]
        with torch.enable_grad():
            y = y.detach().requires_grad_(need[0])
            out = F.batch_norm(y, bn.running_mean, bn.running_var, weight, bias, False, 0.0, bn.eps)
            if isinstance(act, nn.SiLU):
                grad = torch.ops.aten.silu_backward(grad, out.detach())
            elif not isinstance(act, nn.Identity):
                free = out.detach().requires_grad_()
                (grad,) = torch.autograd.grad(act(free), free, grad)
            wanted = [t for t, n in zip((y, weight, bias), need) if n]
            grads = iter(torch.autograd.grad(out, wanted, grad))
        return *(next(grads) if n else None for n in need), None


class DWConv(Conv):
    """Depth-wise convolution (groups = gcd(c1, c2))."""

    def __init__(self, c1: int, c2: int, k=1, s=1, d=1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    """CSP bottleneck with 3 convolutions."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: three chained 5x5 max-pools equal SPP(5, 9, 13)."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth then Conv (YOLOv5 before v6)."""

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """Per-level 1x1 output convs; in eval mode also decodes boxes to input pixels.

    ``anchors`` is a buffer in grid units (pixels / stride), as in official checkpoints.
    """

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = (), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace
        self.stride = torch.ones(self.nl)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x: list[torch.Tensor]):
        raw = []
        for i in range(self.nl):
            b, _, ny, nx = x[i].shape
            raw.append(self.m[i](x[i]).view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        z = []
        for i, r in enumerate(raw):
            b, _, ny, nx, _ = r.shape
            grid, anchor_grid = self._grid(i, nx, ny, r)
            xy, wh, conf = r.sigmoid().split((2, 2, self.no - 4), 4)
            xy = (xy * 2 + grid) * self.stride[i]
            wh = (wh * 2) ** 2 * anchor_grid
            z.append(torch.cat((xy, wh, conf), 4).view(b, -1, self.no))
        return torch.cat(z, 1), raw

    def _grid(self, i: int, nx: int, ny: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (minus 0.5) and anchor sizes in pixels, cached per level and shape."""
        key = (i, nx, ny, like.device, like.dtype)
        if key not in self._grids:
            d, t = like.device, like.dtype
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t), indexing="ij"
            )
            grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).to(d, t).view(1, self.na, 1, 1, 2)
            self._grids[key] = (grid, anchor_grid.expand(1, self.na, ny, nx, 2))
        return self._grids[key]

    def _load_from_state_dict(self, *args, **kwargs):
        self._grids = {}  # anchors may change
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        # .to()/.half() must move stride too and drop cached grids.
        self = super()._apply(fn, recurse)
        self.stride = fn(self.stride)
        self._grids = {}
        return self

    def initialize_biases(self) -> None:
        """Prior objectness (8 objects per 640 image) and class (0.6/nc) biases for fresh heads."""
        for mi, s in zip(self.m, self.stride):
            b = mi.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            b.data[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)


MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "DWConv": DWConv, "Bottleneck": Bottleneck, "C3": C3, "SPP": SPP, "SPPF": SPPF,
    "Focus": Focus, "Concat": Concat, "Detect": Detect, "nn.Upsample": nn.Upsample, "Upsample": nn.Upsample,
    "nn.BatchNorm2d": nn.BatchNorm2d, "nn.Identity": nn.Identity,
}  # fmt: skip
# Names the official yamls use as literals (the official parser eval()s them; we never eval).
_YAML_NAMES = {"None": None, "True": True, "False": False}
_CHANNEL_MODULES = (Conv, DWConv, Bottleneck, C3, SPP, SPPF, Focus)


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def table_repeats(cfg: dict[str, Any]) -> list[int]:
    """Each yaml row's module count after ``depth_multiple`` (a C3's bottlenecks), as the official parser rounds."""
    gd = cfg.get("depth_multiple", 1.0)
    return [max(round(n * gd), 1) if n > 1 else n for _, n, _, _ in cfg["backbone"] + cfg["head"]]


_BOTTLENECK_KEY = re.compile(r"model\.(\d+)\.m\.(\d+)\.")


def stored_bottlenecks(cfg: dict[str, Any], state: Mapping[str, Any]) -> dict[int, int]:
    """C3 rows whose state dict holds fewer bottlenecks than the table makes: row -> bottlenecks stored.

    Depth pruning drops whole bottlenecks (see prune/depth.py); like pruned widths, the kept depth is data,
    read from the tensors (``model.{i}.m.{j}.*``) rather than written into the yaml, whose ``number`` cannot
    say 0 and is scaled by ``depth_multiple``. A row with more stored than the table makes is left to the
    shape checks, which report the extra weights.
    """
    rows = cfg["backbone"] + cfg["head"]
    top: dict[int, int] = {}
    for k in state:
        hit = _BOTTLENECK_KEY.match(k)
        if hit:
            i, j = int(hit[1]), int(hit[2])
            top[i] = max(top.get(i, 0), j + 1)
    out = {}
    for i, (n, row) in enumerate(zip(table_repeats(cfg), rows)):
        if row[2] == "C3" and top.get(i, 0) < n:
            out[i] = top.get(i, 0)
    return out


def parse_layers(
    cfg: dict[str, Any], ch: int = 3, bottlenecks: Mapping[int, int] | None = None
) -> tuple[nn.Sequential, list[int | list[int]], list[int]]:
    """Build the layer stack of a yaml table: (layers, each layer's inputs, outputs to keep).

    ``bottlenecks``: C3 rows built with that many bottlenecks instead of the table's (a depth-pruned model).
    """
    nc, anchors = cfg["nc"], cfg["anchors"]
    gw = cfg.get("width_multiple", 1.0)
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, froms, save, chs = [], [], [], [ch]
    for i, (row, n) in enumerate(zip(cfg["backbone"] + cfg["head"], table_repeats(cfg))):
        f, _, name, args = row
        if name not in MODULES:
            raise ValueError(f"layer {i}: unknown module {name!r} (known: {', '.join(sorted(MODULES))})")
        m = MODULES[name]
        args = [_YAML_NAMES.get(a, a) if isinstance(a, str) else a for a in args]
        args = [nc if a == "nc" else anchors if a == "anchors" else a for a in args]
        if m in _CHANNEL_MODULES:
            c1, c2 = chs[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, (bottlenecks or {}).get(i, n))
                n = 1
        elif m is nn.BatchNorm2d:
            args, c2 = [chs[f]], chs[f]
        elif m is Concat:
            c2 = sum(chs[x] for x in f)
        elif m is Detect:
            args.append([chs[x] for x in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
            c2 = chs[f[-1]]
        else:
            c2 = chs[f]
        layer = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        layers.append(layer)
        froms.append(f)
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        if i == 0:
            chs = []
        chs.append(c2)
    return nn.Sequential(*layers), froms, sorted(set(save))


class DetectionModel(nn.Module):
    """A YOLOv5 detector: ``model`` holds the yaml rows in order, the last one a :class:`Detect`.

    Train mode returns the raw per-level maps ``(B, na, H, W, 5+nc)``; eval mode returns
    ``(decoded (B, N, 5+nc) in input pixels, raw maps)`` like the official model. ``bottlenecks``: C3 rows
    with fewer bottlenecks than the table (:func:`stored_bottlenecks`).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        ch: int = 3,
        names: Sequence[str] | None = None,
        bottlenecks: Mapping[int, int] | None = None,
    ):
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        self.model, self.froms, self.save = parse_layers(self.yaml, ch=self.yaml.get("ch", ch), bottlenecks=bottlenecks)
        nc = self.yaml["nc"]
        self.names = list(names) if names is not None else [str(i) for i in range(nc)]
        det = self.detect
        s = 256
        with torch.no_grad():
            det.stride = torch.tensor([s / x.shape[-3] for x in self.train().forward(torch.zeros(1, ch, s, s))])
        det.anchors /= det.stride.view(-1, 1, 1)
        _check_anchor_order(det)

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        return self.detect.stride

    @property
    def nc(self) -> int:
        return self.detect.nc

    def forward(self, x: torch.Tensor):
        outputs: list[torch.Tensor | None] = []
        for m, f in zip(self.model, self.froms):
            if f != -1:
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = m(x)
            outputs.append(x if len(outputs) in self.save else None)
        return x

    def fuse(self) -> DetectionModel:
        """Fold every BatchNorm into its conv (inference only); returns self."""
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self


def _check_anchor_order(det: Detect) -> None:
    """Anchors must grow with stride; flip them if a yaml lists them the other way round."""
    a = det.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], det.stride[-1] - det.stride[0]
    if da and (da.sign() != ds.sign()):
        det.anchors[:] = det.anchors.flip(0)


def load_cfg(cfg: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A model yaml as a dict: a dict, a path, or a shipped name such as ``yolov5s`` / ``yolov5s.yaml``."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    p = Path(cfg)
    if not p.exists():
        shipped = CFG_DIR / (p.stem + ".yaml")
        if not shipped.exists():
            known = ", ".join(sorted(x.stem for x in CFG_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"{cfg}: no such model yaml (shipped: {known})")
        p = shipped
    return yaml.safe_load(p.read_text())


def build_model(
    cfg: str | Path | dict[str, Any],
    nc: int | None = None,
    anchors: list[list[float]] | int | None = None,
    names: Sequence[str] | None = None,
    init_biases: bool = True,
) -> DetectionModel:
    """A fresh (randomly initialised) model from a yaml; ``nc``/``anchors`` override the yaml's."""
    d = load_cfg(cfg)
    if nc is not None:
        d["nc"] = nc
    if anchors is not None:
        d["anchors"] = anchors
    model = DetectionModel(d, names=names)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = BN_EPS, BN_MOMENTUM
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True
    if init_biases:
        model.detect.initialize_biases()
    return model


def adapt_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize convs and BNs in place so their shapes match ``state`` (channel-pruned models).

    Widths are data: a structurally pruned checkpoint is the unpruned yaml plus smaller tensors.
    """
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d) and f"{name}.weight" in state:
            w = state[f"{name}.weight"]
            c2, cin_g = w.shape[0], w.shape[1]
            if (c2, cin_g) != (m.out_channels, m.in_channels // m.groups):
                groups = m.groups if m.groups == 1 else c2  # depth-wise stays depth-wise
                new = nn.Conv2d(
                    cin_g * groups,
                    c2,
                    m.kernel_size,
                    m.stride,
                    m.padding,
                    m.dilation,
                    groups,
                    bias=f"{name}.bias" in state,
                )
                _set_module(model, name, new)
        elif isinstance(m, nn.BatchNorm2d) and f"{name}.weight" in state:
            c = state[f"{name}.weight"].shape[0]
            if c != m.num_features:
                _set_module(model, name, nn.BatchNorm2d(c, eps=m.eps, momentum=m.momentum))
    for m in model.modules():
        if isinstance(m, Bottleneck):
            # A residual add survives pruning only while both ends keep equal widths.
            m.add = m.add and m.cv1.conv.in_channels == m.cv2.conv.out_channels
    return model


@contextmanager
def recompute_bn_act(model: nn.Module) -> Iterator[None]:
    """Inside: every :class:`Conv` of ``model`` whose BN is frozen keeps only its conv's output for backward
    (see :class:`Conv`): a third less activation memory for a CPU fine-tune, the same gradients."""
    convs = [m for m in model.modules() if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d)]
    for m in convs:
        m.recompute_bn_act = True
    try:
        yield
    finally:
        for m in convs:
            m.__dict__.pop("recompute_bn_act", None)


def copy_model(model: nn.Module) -> nn.Module:
    """A deepcopy that also works on a model with ``torch.nn.utils.prune`` masks after a forward with grad.

    The masked ``weight`` is then a non-leaf tensor, which ``deepcopy`` refuses; it is recomputed from
    ``weight_orig * weight_mask`` at the next forward anyway, so a detached copy is exact.
    """
    memo: dict[int, Any] = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            t = getattr(m, getattr(hook, "_tensor_name", ""), None)
            if isinstance(t, torch.Tensor) and not t.is_leaf:
                memo[id(t)] = t.detach().clone()
    with torch.no_grad():
        return copy.deepcopy(model, memo)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
