"""Non-maximum suppression for YOLOv5 outputs, as validation needs it (multi-label, per class)."""

from __future__ import annotations

import torch
import torchvision


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """Centre-size boxes to corner boxes (same shape)."""
    xy, wh = b[..., :2], b[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def non_max_suppression(
    pred: torch.Tensor, conf: float = 0.001, iou: float = 0.6, max_det: int = 300, max_nms: int = 30000
) -> torch.Tensor:
    """Detections of a batch as one ``(M, 7)`` float tensor: image index, x1, y1, x2, y2, score, class.

    ``pred`` is the decoded model output ``(B, N, 5+nc)`` (xywh in input pixels, objectness, class
    probabilities). A candidate is every (box, class) with ``obj * cls > conf`` (and ``obj > conf``), so
    one box may be kept for several classes, as official validation does; at most ``max_nms``
    candidates per image (highest scores) enter :func:`torchvision.ops.batched_nms` with the class as
    group, and the ``max_det`` best survivors of each image are returned, best first within an image.
    """
    pred = pred.float()
    nc = pred.shape[2] - 5
    img, anchor = (pred[..., 4] > conf).nonzero(as_tuple=True)
    x = pred[img, anchor]  # (K, 5+nc): rows whose objectness could pass at all
    scores = x[:, 5:] * x[:, 4:5]
    row, cls = (scores > conf).nonzero(as_tuple=True)
    if nc == 0 or row.numel() == 0:
        return pred.new_zeros((0, 7))
    img, score = img[row], scores[row, cls]
    boxes = xywh_to_xyxy(x[row, :4])
    # Candidates come out grouped by image (row-major nonzero); one library NMS call per image.
    counts = torch.bincount(img, minlength=pred.shape[0]).tolist()
    out = []
    start = 0
    for b, n in enumerate(counts):
        if n:
            sl = slice(start, start + n)
            bx, sc, cl = boxes[sl], score[sl], cls[sl]
            if n > max_nms:
                top = sc.topk(max_nms).indices
                bx, sc, cl = bx[top], sc[top], cl[top]
            keep = torchvision.ops.batched_nms(bx, sc, cl, iou)[:max_det]
            rows = (bx.new_full((len(keep), 1), b), bx[keep], sc[keep, None], cl[keep, None].to(bx.dtype))
            out.append(torch.cat(rows, 1))
        start += n
    return torch.cat(out) if out else pred.new_zeros((0, 7))
