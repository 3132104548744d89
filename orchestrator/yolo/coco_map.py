"""COCO mAP with pycocotools on YOLO labels: an in-memory ground truth, COCOeval, and P/R at max F1.

pycocotools prints progress on stdout; everything here runs it with stdout captured, so callers
(a CLI emitting JSON, a Ray worker) see no output.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class CocoScores:
    """COCO box AP (100 detections per image, all areas) plus precision/recall at the best mean F1."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: np.ndarray  # (nc,) AP@[.5:.95] per class index; nan where the class has no ground truth


def _quiet_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_ground_truth(labels: Sequence[np.ndarray], shapes: np.ndarray, image_ids: Sequence[int], nc: int) -> COCO:
    """A COCO ground truth from YOLO labels: pixel xywh from the real image sizes, category = class index.

    ``labels[i]`` rows are ``cls, cx, cy, w, h`` normalised; ``shapes[i]`` is the original (h, w).
    Annotation ids start at 1 (pycocotools uses 0 for "unmatched").
    """
    counts = np.array([len(lb) for lb in labels], dtype=np.int64)
    rows = np.concatenate(labels) if len(labels) else np.zeros((0, 5), np.float32)
    rows = rows.astype(np.float64)
    hw = np.repeat(np.asarray(shapes, dtype=np.float64).reshape(-1, 2), counts, axis=0)
    w, h = rows[:, 3] * hw[:, 1], rows[:, 4] * hw[:, 0]
    x, y = rows[:, 1] * hw[:, 1] - w / 2, rows[:, 2] * hw[:, 0] - h / 2
    img = np.repeat(np.asarray(image_ids, dtype=np.int64), counts)
    anns = [
        {"id": i + 1, "image_id": int(im), "category_id": int(c), "bbox": [bx, by, bw, bh], "area": bw * bh,
         "iscrowd": 0}
        for i, (im, c, bx, by, bw, bh) in enumerate(zip(img, rows[:, 0], x.tolist(), y.tolist(), w.tolist(),
                                                        h.tolist()))
    ]  # fmt: skip
    images = [{"id": int(i), "height": int(s[0]), "width": int(s[1])} for i, s in zip(image_ids, shapes)]
    cats = [{"id": c, "name": str(c)} for c in range(nc)]
    return _quiet_coco({"images": images, "annotations": anns, "categories": cats})


def _results(gt: COCO, dets: np.ndarray) -> COCO:
    """Detections ``(M, 7)`` image_id, x, y, w, h, score, class as a COCO result set (what loadRes builds)."""
    img, cls = dets[:, 0].astype(np.int64).tolist(), dets[:, 6].astype(np.int64).tolist()
    boxes, scores = dets[:, 1:5].tolist(), dets[:, 5].tolist()
    anns = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "score": s, "area": b[2] * b[3], "iscrowd": 0}
        for i, (im, c, b, s) in enumerate(zip(img, cls, boxes, scores))
    ]
    return _quiet_coco({"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": anns})


def coco_evaluate(gt: COCO, dets: np.ndarray, nc: int) -> CocoScores:
    """Score detections ``(M, 7)`` (image_id, x, y, w, h in original pixels, score, class) against ``gt``.

    mAP values equal COCOeval's stats[0] and stats[1] (area "all", 100 detections per image); only
    the area range, detection limit and classes that those depend on are evaluated, to save time.
    """
    nan = np.full(nc, np.nan)
    if len(dets) == 0 or not gt.dataset["annotations"]:
        return CocoScores(0.0, 0.0, 0.0, 0.0, nan)
    ev = COCOeval(gt, _results(gt, dets), "bbox")
    ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
    # Classes without ground truth never enter the mean (COCOeval marks them -1): skip their work.
    ev.params.catIds = sorted({a["category_id"] for a in gt.dataset["annotations"]})
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # (iou thresholds, recall points, classes)
    i50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))

    def mean(a: np.ndarray) -> float:
        v = a[a > -1]
        return float(v.mean()) if v.size else 0.0

    per_class = nan.copy()
    for k, cat in enumerate(ev.params.catIds):
        if (prec[:, :, k] > -1).any():
            per_class[cat] = mean(prec[:, :, k])
    p, r = _pr_at_best_f1(ev, i50)
    return CocoScores(mean(prec), mean(prec[i50]), p, r, per_class)


def _pr_at_best_f1(ev: COCOeval, t: int) -> tuple[float, float]:
    """Mean precision and recall over classes with ground truth, at the confidence of the best mean F1.

    Uses COCOeval's own matches at IoU threshold index ``t`` (greedy by score, 100 detections per
    image); per class, P and R are interpolated on a 1000-point confidence grid, the mean F1 curve
    is smoothed a little and its peak picked, as the official YOLOv5 report does.
    """
    n_img = len(ev.params.imgIds)
    grid = np.linspace(0, 1, 1000)
    ps, rs = [], []
    for k in range(len(ev.params.catIds)):
        entries = [e for e in ev.evalImgs[k * n_img : (k + 1) * n_img] if e is not None]
        n_gt = sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in entries)
        if n_gt == 0:
            continue
        if entries:
            scores = np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in entries])
            tp = np.concatenate([e["dtMatches"][t] > 0 for e in entries])
            ignored = np.concatenate([e["dtIgnore"][t].astype(bool) for e in entries])
            scores, tp = scores[~ignored], tp[~ignored]
        else:
            scores, tp = np.zeros(0), np.zeros(0, bool)
        if scores.size == 0:
            ps.append(np.zeros_like(grid))
            rs.append(np.zeros_like(grid))
            continue
        order = np.argsort(-scores, kind="mergesort")
        scores, tp = scores[order], tp[order]
        tpc = np.cumsum(tp)
        recall = tpc / n_gt
        precision = tpc / np.arange(1, len(tp) + 1)
        # np.interp needs increasing x: walk the confidence grid downward (scores are sorted high -> low).
        rs.append(np.interp(-grid, -scores, recall, left=0))
        ps.append(np.interp(-grid, -scores, precision, left=1))
    if not ps:
        return 0.0, 0.0
    p, r = np.array(ps), np.array(rs)
    f1 = (2 * p * r / (p + r + 1e-16)).mean(0)
    half = 50  # box filter over 10% of the grid: a noisy F1 peak would pick an unrepresentative threshold
    smooth = np.convolve(np.pad(f1, half, mode="edge"), np.ones(2 * half + 1) / (2 * half + 1), mode="valid")
    i = int(smooth.argmax())
    return float(p[:, i].mean()), float(r[:, i].mean())
