"""The YOLOv5 training loss: anchor matching by shape, CIoU box loss, IoU-valued objectness, class BCE.

Behaviour follows the public YOLOv5 definition (hyp.scratch-low gains):
- a target matches every anchor of a level whose width and height ratios (either way) stay under
  ``anchor_t``; it is also given to the two neighbouring cells nearest its centre (offset 0.5),
  never across the grid border;
- predicted box: ``xy = 2 * sigmoid - 0.5`` (cell units), ``wh = (2 * sigmoid) ** 2 * anchor``;
- box loss ``1 - CIoU`` (mean over matches); objectness BCE against the detached, clamped IoU of
  the match (``gr = 1``), weighted [4.0, 1.0, 0.4] by level; class BCE against one-hot targets;
- gains box, obj, cls scaled by ``3 / levels``, obj also by ``(imgsz / 640) ** 2``, cls by ``nc / 80``.
When several matches land in the same cell and anchor, the objectness target is their largest IoU
(the official code keeps whichever write lands last, which is not defined for duplicate indices).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torchvision.ops import complete_box_iou_loss

from .hyp import Hyp
from .model import Detect, DetectionModel

# Neighbour cells: self, left, up, right, down (subtracted from the centre, times 0.5).
_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))
_NEIGHBOUR_G = 0.5
_LEVEL_BALANCE = {3: (4.0, 1.0, 0.4)}


@dataclass(frozen=True)
class LossGains:
    """Per-part gains after the level/image-size/class-count scaling."""

    box: float
    obj: float
    cls: float

    @classmethod
    def from_hyp(cls, hyp: Hyp, nl: int, nc: int, imgsz: int) -> LossGains:
        s = 3.0 / nl
        return cls(box=hyp.box * s, obj=hyp.obj * (imgsz / 640) ** 2 * s, cls=hyp.cls * nc / 80 * s)


@dataclass(frozen=True)
class LossOutput:
    """``total`` (differentiable, summed over the batch: mean loss x batch size) and the detached per-image parts."""

    total: torch.Tensor
    parts: torch.Tensor  # (3,) box, obj, cls (already gained, per image)

    @property
    def box(self) -> float:
        return float(self.parts[0])

    @property
    def obj(self) -> float:
        return float(self.parts[1])

    @property
    def cls(self) -> float:
        return float(self.parts[2])


@dataclass(frozen=True)
class Matches:
    """Targets assigned to one level: image, anchor and cell indices, box in cell units, class."""

    b: torch.Tensor
    a: torch.Tensor
    gj: torch.Tensor
    gi: torch.Tensor
    tbox: torch.Tensor  # (n, 4) x, y relative to the cell corner; w, h in grid units
    anchors: torch.Tensor  # (n, 2) matched anchor sizes, grid units
    cls: torch.Tensor  # (n,) long


class YoloLoss:
    """Callable ``loss(raw_maps, targets) -> LossOutput`` for a model's Detect layer.

    ``targets`` is ``(n, 6)``: image index in the batch, class, cx, cy, w, h (normalised 0-1).
    Anchors and strides are read from the Detect layer at each call, so the loss follows the model.
    """

    def __init__(self, model: DetectionModel | Detect, hyp: Hyp, imgsz: int):
        self.detect = model.detect if isinstance(model, DetectionModel) else model
        det = self.detect
        self.hyp = hyp
        self.nl, self.na, self.nc = det.nl, det.na, det.nc
        self.gains = LossGains.from_hyp(hyp, self.nl, self.nc, imgsz)
        self.balance = _LEVEL_BALANCE.get(self.nl, (4.0, 1.0, 0.25, 0.06, 0.02)[: self.nl])

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> LossOutput:
        dev = preds[0].device
        pos, neg = 1.0 - 0.5 * self.hyp.label_smoothing, 0.5 * self.hyp.label_smoothing
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.hyp.cls_pw], device=dev))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.hyp.obj_pw], device=dev))
        lbox = torch.zeros((), device=dev)
        lobj = torch.zeros((), device=dev)
        lcls = torch.zeros((), device=dev)
        for i, (p, m) in enumerate(zip(preds, self.build_targets(preds, targets))):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=dev)
            if m.b.numel():
                ps = p[m.b, m.a, m.gj, m.gi]  # (n, 5 + nc)
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * m.anchors
                ciou_loss = complete_box_iou_loss(_xyxy(pxy, pwh), _xyxy(m.tbox[:, :2], m.tbox[:, 2:]))
                lbox = lbox + ciou_loss.mean()
                iou = (1.0 - ciou_loss).detach().clamp(0).to(tobj.dtype)
                flat = ((m.b * self.na + m.a) * p.shape[2] + m.gj) * p.shape[3] + m.gi
                tobj = tobj.view(-1).scatter_reduce(0, flat, iou, reduce="amax").view_as(tobj)
                if self.nc > 1:  # one class: the objectness says it all
                    t = torch.full_like(ps[:, 5:], neg)
                    t[torch.arange(len(m.cls), device=dev), m.cls] = pos
                    lcls = lcls + bce_cls(ps[:, 5:], t)
            lobj = lobj + bce_obj(p[..., 4], tobj) * self.balance[i]
        g = self.gains
        parts = torch.stack((lbox * g.box, lobj * g.obj, lcls * g.cls))
        bs = preds[0].shape[0]
        return LossOutput(total=parts.sum() * bs, parts=parts.detach())

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[Matches]:
        """Assign targets to (level, anchor, cell): shape-ratio match plus the two nearest neighbour cells."""
        det, dev = self.detect, targets.device
        na, nt = self.na, targets.shape[0]
        ai = torch.arange(na, device=dev, dtype=targets.dtype).view(na, 1).expand(na, nt)
        t_all = torch.cat((targets[None].expand(na, nt, 6), ai[..., None]), 2)  # (na, nt, 7)
        off = torch.tensor(_OFFSETS, device=dev, dtype=targets.dtype) * _NEIGHBOUR_G
        out = []
        for i, p in enumerate(preds):
            anchors = det.anchors[i].to(dev, targets.dtype)
            ny, nx = p.shape[2], p.shape[3]
            gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], device=dev, dtype=targets.dtype)
            t = t_all * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(r, 1 / r).max(2).values < self.hyp.anchor_t]  # (m, 7)
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                left, up = ((gxy % 1 < _NEIGHBOUR_G) & (gxy > 1)).T
                right, down = ((gxi % 1 < _NEIGHBOUR_G) & (gxi > 1)).T
                sel = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, m)
                t = t[None].expand(5, *t.shape)[sel]
                offsets = off[:, None].expand(5, sel.shape[1], 2)[sel]
            else:
                t = t_all[0]
                offsets = torch.zeros((0, 2), device=dev, dtype=targets.dtype)
            b, c = t[:, 0].long(), t[:, 1].long()
            gxy, gwh, a = t[:, 2:4], t[:, 4:6], t[:, 6].long()
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, nx - 1)
            gj = gij[:, 1].clamp(0, ny - 1)
            cell = torch.stack((gi, gj), 1).to(gxy.dtype)
            tbox = torch.cat((gxy - cell, gwh), 1)
            out.append(Matches(b=b, a=a, gj=gj, gi=gi, tbox=tbox, anchors=anchors[a], cls=c))
        return out


def _xyxy(xy: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    return torch.cat((xy - wh / 2, xy + wh / 2), 1)
