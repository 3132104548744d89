"""The YOLOv5 loss against values worked out independently of orchestrator/yolo/loss.py.

Two independent checks:
1. A hand-worked case (one level, one 2x2 anchor, a 4x4 grid, 2 classes) whose every number is
   written out in the test's docstring.
2. A slow, explicit per-target loop (plain Python floats and ``math``) on the real yolov5n Detect
   layer (3 levels x 3 anchors, 80 classes) with random raw maps and random targets: matching by
   w/h ratio, neighbour cells, CIoU, max-IoU objectness targets and class BCE are re-derived from
   their definitions, one target and one cell at a time.
"""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.yolo.hyp import Hyp
from orchestrator.yolo.loss import LossGains, YoloLoss
from orchestrator.yolo.model import Detect


def _tiny_detect() -> Detect:
    det = Detect(nc=2, anchors=[[2.0, 2.0]], ch=[4])  # anchors buffer taken as grid units
    det.stride = torch.tensor([8.0])
    return det


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_hand_worked_single_target():
    """One target at the centre of cell (1, 1), its size equal to the anchor (2 x 2 grid units).

    Raw map (1 image, 1 anchor, 4x4 cells, 7 channels): xy logits 0 -> xy = 2*0.5-0.5 = 0.5 (the cell
    centre); wh logits logit(0.25) -> wh = (2*0.25)^2 * 2 = 0.5; objectness logits -2; class logits 0.
    Target (cls 1, cx = cy = 1.5/4, w = h = 2/4): gx = 1.5 has fraction 0.5, not < 0.5, so no neighbours.
    - box: concentric squares 0.5 and 2: IoU = 0.25/4 = 1/16, centre distance 0, equal aspect -> CIoU = 1/16,
      loss 15/16; gain 0.05 * 3/1 -> 0.140625.
    - obj: BCE(-2, t) = ln(1 + e^-2) + 2t; 16 cells, one with t = 1/16 -> mean ln(1 + e^-2) + 1/128;
      level weight 4.0 (one level), gain 1.0 * (32/640)^2 * 3 = 0.0075.
    - cls: BCE(0, t) = ln 2 for t = 0 or 1 -> ln 2; gain 0.5 * 2/80 * 3 = 0.0375.
    """
    det = _tiny_detect()
    p = torch.zeros(1, 1, 4, 4, 7, dtype=torch.float64)
    p[..., 2:4] = _logit(0.25)
    p[..., 4] = -2.0
    targets = torch.tensor([[0, 1, 1.5 / 4, 1.5 / 4, 0.5, 0.5]], dtype=torch.float64)
    out = YoloLoss(det, Hyp(), imgsz=32)([p], targets)

    box = 15 / 16 * 0.15
    obj = 4.0 * (math.log(1 + math.exp(-2)) + 1 / 128) * 0.0075
    cls = math.log(2) * 0.0375
    assert out.box == pytest.approx(box, rel=1e-6)
    assert out.obj == pytest.approx(obj, rel=1e-6)
    assert out.cls == pytest.approx(cls, rel=1e-6)
    assert float(out.total) == pytest.approx(box + obj + cls, rel=1e-6)  # batch of 1


def test_neighbour_cells_and_ratio_threshold():
    """Cells a target is given to, worked by hand on a 4x4 grid with one 2x2 anchor.

    (gx, gy) = (1.3, 2.8): own cell (1, 2); x fraction 0.3 < 0.5 and gx > 1 -> left (0, 2);
    y fraction 0.8 -> the far side: 4 - 2.8 = 1.2 has fraction 0.2 < 0.5 and is > 1 -> down (1, 3).
    (0.3, 0.3): fractions < 0.5 but not > 1 (border) and 3.7 has fraction 0.7 -> own cell only.
    w = 0.4 grid units is 5x smaller than the anchor (>= anchor_t 4) -> no match; 0.6 (3.3x) matches.
    """
    loss = YoloLoss(_tiny_detect(), Hyp(), imgsz=32)
    p = torch.zeros(1, 1, 4, 4, 7)
    t = torch.tensor([[0, 0, 1.3 / 4, 2.8 / 4, 0.5, 0.5], [0, 1, 0.3 / 4, 0.3 / 4, 0.5, 0.5]])
    m = loss.build_targets([p], t)[0]
    cells = sorted(zip(m.gi.tolist(), m.gj.tolist(), m.cls.tolist()))
    assert cells == [(0, 0, 1), (0, 2, 0), (1, 2, 0), (1, 3, 0)]
    # box targets are relative to the assigned cell: left neighbour sees x = 1.3 - 0 = 1.3
    left = (m.gi == 0) & (m.gj == 2)
    assert m.tbox[left, 0].item() == pytest.approx(1.3, abs=1e-6)
    small = torch.tensor([[0, 0, 0.5, 0.5, 0.4 / 4, 2 / 4], [0, 0, 0.5, 0.5, 0.6 / 4, 2 / 4]])
    m = loss.build_targets([p], small)[0]
    assert m.b.numel() > 0 and torch.allclose(m.tbox[:, 2], torch.full_like(m.tbox[:, 2], 0.6))


def _bce(x: float, t: float) -> float:
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _ciou(p: tuple[float, ...], t: tuple[float, ...]) -> float:
    """CIoU of two (cx, cy, w, h) boxes from the paper's definition (alpha = v / (1 - IoU + v))."""
    (px, py, pw, ph), (tx, ty, tw, th) = p, t
    iw = max(0.0, min(px + pw / 2, tx + tw / 2) - max(px - pw / 2, tx - tw / 2))
    ih = max(0.0, min(py + ph / 2, ty + th / 2) - max(py - ph / 2, ty - th / 2))
    inter = iw * ih
    iou = inter / (pw * ph + tw * th - inter)
    cw = max(px + pw / 2, tx + tw / 2) - min(px - pw / 2, tx - tw / 2)
    ch = max(py + ph / 2, ty + th / 2) - min(py - ph / 2, ty - th / 2)
    rho2 = (px - tx) ** 2 + (py - ty) ** 2
    v = 4 / math.pi**2 * (math.atan(tw / th) - math.atan(pw / ph)) ** 2
    alpha = v / (1 - iou + v) if v > 0 else 0.0
    return iou - rho2 / (cw**2 + ch**2) - alpha * v


def _reference_loss(det: Detect, preds: list[torch.Tensor], targets: torch.Tensor, hyp: Hyp, imgsz: int):
    """Slow loop: every target x level x anchor x candidate cell, in plain Python."""
    balance = (4.0, 1.0, 0.4)
    lbox = lobj = lcls = 0.0
    for i, p in enumerate(preds):
        bs, na, ny, nx, no = p.shape
        pl = p.tolist()
        tobj: dict[tuple[int, int, int, int], float] = {}
        box_terms, cls_terms = [], []
        for b, c, cx, cy, w, h in targets.tolist():
            b, c = int(b), int(c)
            gx, gy, gw, gh = cx * nx, cy * ny, w * nx, h * ny
            for a in range(na):
                aw, ah = det.anchors[i, a].tolist()
                if max(gw / aw, aw / gw, gh / ah, ah / gh) >= hyp.anchor_t:
                    continue
                fx, fy = math.floor(gx), math.floor(gy)
                cells = [(fx, fy)]
                if gx % 1 < 0.5 and gx > 1:
                    cells.append((fx - 1, fy))
                if gy % 1 < 0.5 and gy > 1:
                    cells.append((fx, fy - 1))
                if (nx - gx) % 1 < 0.5 and nx - gx > 1:
                    cells.append((fx + 1, fy))
                if (ny - gy) % 1 < 0.5 and ny - gy > 1:
                    cells.append((fx, fy + 1))
                for ci, cj in cells:
                    v = pl[b][a][cj][ci]
                    pred = (
                        2 * _sig(v[0]) - 0.5,
                        2 * _sig(v[1]) - 0.5,
                        (2 * _sig(v[2])) ** 2 * aw,
                        (2 * _sig(v[3])) ** 2 * ah,
                    )
                    ciou = _ciou(pred, (gx - ci, gy - cj, gw, gh))
                    box_terms.append(1 - ciou)
                    key = (b, a, cj, ci)
                    tobj[key] = max(tobj.get(key, 0.0), max(ciou, 0.0))
                    cls_terms.append(sum(_bce(v[5 + k], 1.0 if k == c else 0.0) for k in range(no - 5)) / (no - 5))
        if box_terms:
            lbox += sum(box_terms) / len(box_terms)
            lcls += sum(cls_terms) / len(cls_terms)
        total = 0.0
        for b in range(bs):
            for a in range(na):
                for j in range(ny):
                    for k in range(nx):
                        total += _bce(pl[b][a][j][k][4], tobj.get((b, a, j, k), 0.0))
        lobj += total / (bs * na * ny * nx) * balance[i]
    g = LossGains.from_hyp(hyp, len(preds), preds[0].shape[-1] - 5, imgsz)
    return lbox * g.box, lobj * g.obj, lcls * g.cls


def test_matches_explicit_loop_on_yolov5n(yolov5n):
    det = yolov5n.detect
    imgsz, bs = 96, 2
    gen = torch.Generator().manual_seed(3)
    preds = [
        torch.randn(bs, det.na, imgsz // int(s), imgsz // int(s), det.no, generator=gen, dtype=torch.float64)
        for s in det.stride
    ]
    n = 12
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5 + 0.03
    cls = torch.randint(0, det.nc, (n, 1), generator=gen).double()
    img = torch.randint(0, bs, (n, 1), generator=gen).double()
    targets = torch.cat((img, cls, xy, wh), 1)
    targets = torch.cat(
        (targets, targets[:2] + torch.tensor([0, 0, 0.004, 0.004, 0.01, 0.0], dtype=torch.float64))
    )  # share cells

    hyp = Hyp()
    out = YoloLoss(det, hyp, imgsz)(preds, targets)
    box, obj, cls_ = _reference_loss(det, preds, targets, hyp, imgsz)
    assert box > 0 and obj > 0 and cls_ > 0
    assert out.box == pytest.approx(box, rel=1e-6)
    assert out.obj == pytest.approx(obj, rel=1e-6)
    assert out.cls == pytest.approx(cls_, rel=1e-6)
    assert float(out.total) == pytest.approx((box + obj + cls_) * bs, rel=1e-6)


def test_no_targets_and_gradients(yolov5n):
    det = yolov5n.detect
    preds = [torch.randn(2, 3, n, n, 85, requires_grad=True) for n in (8, 4, 2)]
    out = YoloLoss(det, Hyp(), 64)(preds, torch.zeros(0, 6))
    assert out.box == 0 and out.cls == 0 and out.obj > 0
    out.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in preds)
