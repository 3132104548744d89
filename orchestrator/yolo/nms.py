"""Non-maximum suppression for YOLOv5 outputs, as validation needs it (multi-label, per class)."""

from __future__ import annotations

import torch


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

    Memory stays bounded whatever the row count: images are taken one at a time and, past ``max_nms``
    rows, only the ``max_nms`` rows with the best scores are expanded into (box, class) candidates (an
    output of two million rows once made every row x class pair a candidate, 23 GB).
    """
    from torchvision.ops import batched_nms  # here: torchvision.ops imports torch._dynamo, seconds a refusal skips

    pred = pred.float()
    nc = pred.shape[2] - 5
    if nc <= 0:
        return pred.new_zeros((0, 7))
    out = []
    for b in range(pred.shape[0]):
        passing = pred[b, :, 4] > conf  # rows whose objectness could pass at all
        if int(passing.sum()) > max_nms:
            x = pred[b][_best_rows(pred[b], passing, max_nms)]
        else:
            x = pred[b][passing]  # (K, 5+nc)
        scores = x[:, 5:] * x[:, 4:5]
        row, cls = (scores > conf).nonzero(as_tuple=True)
        if row.numel() == 0:
            continue
        sc = scores[row, cls]
        if len(sc) > max_nms:
            top = sc.topk(max_nms).indices
            row, cls, sc = row[top], cls[top], sc[top]
        bx = xywh_to_xyxy(x[row, :4])
        keep = batched_nms(bx, sc, cls, iou)[:max_det]
        rows = (bx.new_full((len(keep), 1), b), bx[keep], sc[keep, None], cls[keep, None].to(bx.dtype))
        out.append(torch.cat(rows, 1))
    return torch.cat(out) if out else pred.new_zeros((0, 7))


def _best_rows(p: torch.Tensor, passing: torch.Tensor, k: int) -> torch.Tensor:
    """Indices, in their original order, of the ``k`` passing rows of ``p`` with the highest best class score.

    A (box, class) candidate among the ``k`` best comes from a row whose best score is among the ``k`` best
    rows, so cutting rows first keeps the same top candidates while the box x class expansion stays within
    ``k * nc``. The best scores are taken in chunks, so no copy of ``p`` nor a rows x classes product is held.
    """
    best = torch.cat([c[:, 5:].amax(1) * c[:, 4] for c in p.split(65536)])
    best[~passing] = -1.0
    return best.topk(k).indices.sort().values
