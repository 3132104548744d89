"""Bound a checkpoint's layer table, and check it against its stored tensors, before any real module exists.

A checkpoint carries its yaml layer table next to its weights, and :class:`~.model.DetectionModel` builds
whatever the table says and runs a 256x256 forward before ``load_state_dict`` can compare shapes. A 7 MB file
whose ``width_multiple`` says 12 (or whose ``nc`` says 10**9, or whose kernel says 10000) therefore allocated
gigabytes, up to hundreds of them, before its refusal. Here the table is checked in two cheap passes:

1. :func:`check_layer_table` reads only numbers: types, and sane limits on classes, multiples, repeats,
   widths and the small integers (kernels, strides) every official table keeps in single digits. This bounds
   the work of the second pass.
2. :func:`check_against_state` builds the table on PyTorch's ``meta`` device (shapes only, no storage),
   compares every conv with the stored tensors (same convs, same kernels, widths no larger than the table's:
   pruning only removes channels; the Detect outputs exactly, since they carry ``nc``), and bounds the
   parameters and the activations of the stride-probing forward, followed by arithmetic on shapes.

Both raise :class:`LayerTableError` (a ``ValueError``) with the problem; the loader names the file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from .model import C3, SPP, SPPF, Bottleneck, Concat, Conv, Detect, Focus, parse_layers, stored_bottlenecks

MAX_NC = 100_000  # LVIS has 1203 classes, Objects365 365, Open Images 601
MAX_MULTIPLE = 4.0  # official multiples stop at 1.33 (depth) and 1.25 (width)
MAX_ROWS = 512  # official tables have 25 (P5) or 34 (P6) rows
MAX_REPEATS = 64  # one row, after depth_multiple: yolov5x has 12
MAX_TOTAL_REPEATS = 512  # all rows together: yolov5x has about 45
MAX_CHANNELS = 8192  # a row's width after width_multiple: yolov5x stops at 1280
MAX_SMALL_INT = 64  # kernels, strides, paddings, groups, anchors per level: official values are single digits
MAX_ARGS = 16
MAX_INPUT_CHANNELS = 16
# yolov5x6 has 141 M parameters; four bytes each. The meta forward at 256x256 of yolov5x produces about 30 M
# activation elements over all modules.
MAX_PARAMS = 250_000_000
MAX_ACTIVATIONS = 256_000_000
PROBE = 256  # the input side DetectionModel probes strides with


class LayerTableError(ValueError):
    """The layer table is out of bounds or does not match the stored tensors."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_layer_table(cfg: Any) -> None:
    """Types and limits of the numbers in ``cfg``, so that building it (even on ``meta``) is bounded."""
    if not isinstance(cfg, dict):
        raise LayerTableError(f"the layer table is a {type(cfg).__name__}, not a mapping")
    nc = cfg.get("nc")
    if not _is_int(nc) or not 1 <= nc <= MAX_NC:
        raise LayerTableError(f"nc={nc!r}: expected a whole number of classes from 1 to {MAX_NC}")
    ch = cfg.get("ch", 3)
    if not _is_int(ch) or not 1 <= ch <= MAX_INPUT_CHANNELS:
        raise LayerTableError(f"ch={ch!r}: expected 1 to {MAX_INPUT_CHANNELS} input channels")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if not _is_real(v) or not 0 < v <= MAX_MULTIPLE:
            raise LayerTableError(f"{key}={v!r}: expected a number above 0 and at most {MAX_MULTIPLE}")
    _check_anchors(cfg.get("anchors"))
    rows = cfg.get("backbone"), cfg.get("head")
    if not all(isinstance(r, list) for r in rows):
        raise LayerTableError("expected 'backbone' and 'head' lists of [from, number, module, args] rows")
    rows = rows[0] + rows[1]
    if not 1 <= len(rows) <= MAX_ROWS:
        raise LayerTableError(f"{len(rows)} layers: expected 1 to {MAX_ROWS}")
    gd, gw, total = cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0), 0
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4:
            raise LayerTableError(f"layer {i}: expected [from, number, module, args], got {_short(row)}")
        f, n, name, args = row
        froms = f if isinstance(f, list) else [f]
        if not froms or not all(_is_int(x) and (x == -1 or 0 <= x < i) for x in froms) or (i == 0 and f != -1):
            raise LayerTableError(f"layer {i}: from={_short(f)}: expected -1 or earlier layer numbers")
        if not _is_int(n) or not 1 <= n <= MAX_REPEATS:
            raise LayerTableError(f"layer {i}: number={_short(n)}: expected 1 to {MAX_REPEATS}")
        repeats = max(round(n * gd), 1) if n > 1 else n
        if repeats > MAX_REPEATS:
            raise LayerTableError(
                f"layer {i}: {n} x depth_multiple {gd} = {repeats} repeats, above the limit of {MAX_REPEATS}"
            )
        total += repeats
        if not isinstance(name, str) or not isinstance(args, list) or len(args) > MAX_ARGS:
            raise LayerTableError(f"layer {i}: expected a module name and at most {MAX_ARGS} arguments")
        for j, a in enumerate(args):
            _check_arg(i, j, a, gw, name)
    if total > MAX_TOTAL_REPEATS:
        raise LayerTableError(f"{total} repeated modules in all: above the limit of {MAX_TOTAL_REPEATS}")


def _check_anchors(anchors: Any) -> None:
    if _is_int(anchors) and 1 <= anchors <= MAX_SMALL_INT:
        return
    ok = isinstance(anchors, list) and 1 <= len(anchors) <= 8
    ok = ok and all(isinstance(a, list) and 2 <= len(a) <= 2 * MAX_SMALL_INT and len(a) % 2 == 0 for a in anchors)
    ok = ok and all(_is_real(x) and 0 < x <= 1e5 for a in anchors for x in a)
    if not ok:
        raise LayerTableError(f"anchors={_short(anchors)}: expected up to 8 lists of positive (w, h) pairs")


def _check_arg(i: int, j: int, a: Any, gw: float, module: str) -> None:
    """The first argument of a channel module is its width; every other number is small (kernel, stride...)."""
    if a is None or isinstance(a, (bool, str)):
        return
    if module == "Detect" and j <= 1:  # nc and anchors, written out by some exporters instead of named
        if j == 0 and not (_is_int(a) and 1 <= a <= MAX_NC):
            raise LayerTableError(f"layer {i}: Detect classes {_short(a)}: expected 1 to {MAX_NC}")
        if j == 1:
            _check_anchors(a)
        return
    if j == 0 and _is_int(a) and module not in ("Concat", "nn.Upsample", "Upsample", "nn.BatchNorm2d"):
        if not 1 <= a <= MAX_CHANNELS or math.ceil(a * gw / 8) * 8 > MAX_CHANNELS:
            raise LayerTableError(
                f"layer {i}: width {a} x width_multiple {gw} is above the limit of {MAX_CHANNELS} channels"
            )
        return
    values = a if isinstance(a, list) else [a]
    if not all(_is_real(v) and abs(v) <= MAX_SMALL_INT for v in values):
        raise LayerTableError(f"layer {i}: argument {_short(a)} of {module}: expected numbers up to {MAX_SMALL_INT}")


def _short(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


def check_against_state(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Build ``cfg`` on ``meta`` and compare it with ``state``; bound its parameters and probe activations.

    Call :func:`check_layer_table` first: it bounds what the ``meta`` build costs in Python objects. C3 rows
    whose stored bottlenecks are fewer than the table's (depth pruning) are built with the stored count.
    """
    try:
        with torch.device("meta"):
            layers, froms, save = parse_layers(cfg, ch=cfg.get("ch", 3), bottlenecks=stored_bottlenecks(cfg, state))
    except (ValueError, TypeError, IndexError, KeyError, RuntimeError, ZeroDivisionError) as e:
        raise LayerTableError(f"the layer table does not build ({_first(e)})") from None
    params = sum(p.numel() for p in layers.parameters())
    if params > MAX_PARAMS:
        raise LayerTableError(f"the layer table describes {params:,} parameters, above the limit of {MAX_PARAMS:,}")
    convs = {f"model.{n}": m for n, m in layers.named_modules() if isinstance(m, nn.Conv2d)}
    stored = {k[: -len(".weight")] for k, v in state.items() if k.endswith(".weight") and v.dim() == 4}
    missing, extra = sorted(set(convs) - stored), sorted(stored - set(convs))
    if missing or extra:
        what = f"no stored weights for {missing[0]}" if missing else f"stored weights {extra[0]} fit no layer"
        raise LayerTableError(
            f"the layer table does not match the stored tensors ({what}; {len(missing)} missing, {len(extra)} extra)"
        )
    detect = layers[-1]
    if not isinstance(detect, Detect):
        raise LayerTableError("the last layer is not Detect")
    outputs = {f"model.{len(layers) - 1}.m.{j}" for j in range(len(detect.m))}
    for name, m in convs.items():
        w = state[f"{name}.weight"].shape
        want = (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
        # The Detect convs' outputs carry nc and anchors: exact. Everything else (their inputs included, which a
        # structured cut of the neck narrows) may be narrower than the table, never wider.
        exact = name in outputs
        if tuple(w[2:]) != want[2:] or (w[0] != want[0] if exact else w[0] > want[0]) or w[1] > want[1]:
            raise LayerTableError(
                f"the layer table does not match the stored tensors ({name}.weight is {tuple(w)}, "
                f"the table makes {want} or {'fewer inputs' if exact else 'narrower'})"
            )
    _probe_activations(layers, froms, save, cfg.get("ch", 3))


def _probe_activations(layers: nn.Sequential, froms: list, save: list[int], ch: int) -> None:
    """Follow DetectionModel's stride probe by arithmetic on shapes; bound the elements its modules produce.

    A forward on the ``meta`` device would do the same, but its first call imports PyTorch's meta kernels
    (about a second, three on a busy machine) in every process that opens a checkpoint.
    """
    count = [0]
    outputs: list[tuple[int, int, int] | None] = []
    x: Any = (ch, PROBE, PROBE)
    for i, (m, f) in enumerate(zip(layers, froms)):
        if f != -1:
            x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
        x = _shape(m, x, count, i)
        outputs.append(x if len(outputs) in save else None)
        if count[0] > MAX_ACTIVATIONS:
            raise LayerTableError(
                f"the layer table produces over {MAX_ACTIVATIONS:,} activations on a {PROBE}x{PROBE} image"
            )
    if any(h < 1 or w < 1 for _, h, w in x):
        raise LayerTableError(f"a detection level is empty on a {PROBE}x{PROBE} image (too many stride-2 layers)")


def _conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _shape(m: nn.Module, x: Any, count: list[int], i: int) -> Any:
    """The (C, H, W) ``m`` returns for input shape(s) ``x``; ``count[0]`` grows by what it produces."""
    if isinstance(m, Detect):
        return [_shape(conv, xi, count, i) for conv, xi in zip(m.m, x)]
    if isinstance(m, nn.Conv2d):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        out = (m.out_channels, _conv_out(x[1], kh, sh, ph, dh), _conv_out(x[2], kw, sw, pw, dw))
    elif isinstance(m, nn.MaxPool2d):
        (k, s, p) = (_pair(m.kernel_size)[0], _pair(m.stride)[0], _pair(m.padding)[0])
        out = (x[0], _conv_out(x[1], k, s, p), _conv_out(x[2], k, s, p))
    elif isinstance(m, nn.Upsample):
        if m.size is not None:
            h, w = _pair(m.size)
        else:
            sh, sw = (m.scale_factor, m.scale_factor) if _is_real(m.scale_factor) else m.scale_factor
            h, w = int(x[1] * sh), int(x[2] * sw)
        out = (x[0], h, w)
    elif isinstance(m, Concat):
        if len({(h, w) for _, h, w in x}) != 1:
            raise LayerTableError(f"layer {i}: Concat of maps of different sizes {[s[1:] for s in x]}")
        out = (sum(c for c, _, _ in x), x[0][1], x[0][2])
    elif isinstance(m, (nn.BatchNorm2d, nn.Identity, nn.SiLU)):
        return x
    elif isinstance(m, Conv):
        return _shape(m.conv, x, count, i)
    elif isinstance(m, Focus):
        return _shape(m.conv, (4 * x[0], (x[1] + 1) // 2, (x[2] + 1) // 2), count, i)
    elif isinstance(m, Bottleneck):
        return _shape(m.cv2, _shape(m.cv1, x, count, i), count, i)
    elif isinstance(m, C3):
        a, b = _shape(m.m, _shape(m.cv1, x, count, i), count, i), _shape(m.cv2, x, count, i)
        return _shape(m.cv3, _shape(Concat(), [a, b], count, i), count, i)
    elif isinstance(m, SPPF):
        y = _shape(m.cv1, x, count, i)
        pools = [y]
        for _ in range(3):
            pools.append(_shape(m.m, pools[-1], count, i))
        return _shape(m.cv2, _shape(Concat(), pools, count, i), count, i)
    elif isinstance(m, SPP):
        y = _shape(m.cv1, x, count, i)
        cat = _shape(Concat(), [y] + [_shape(p, y, count, i) for p in m.m], count, i)
        return _shape(m.cv2, cat, count, i)
    elif isinstance(m, nn.Sequential):
        for sub in m:
            x = _shape(sub, x, count, i)
        return x
    else:
        raise LayerTableError(f"layer {i}: {type(m).__name__} is not a YOLOv5 module")
    if min(out) < 1:
        raise LayerTableError(f"layer {i}: {type(m).__name__} leaves nothing of a {PROBE}x{PROBE} image")
    count[0] += 3 * out[0] * out[1] * out[2]  # its output, a norm and an activation of the same size
    return out


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
