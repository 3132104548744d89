"""Validation: NMS, COCO scoring, box mapping back to original pixels, models with masks or narrower layers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from orchestrator.yolo.coco_map import coco_evaluate, coco_ground_truth
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.labels import scan_labels
from orchestrator.yolo.model import build_model
from orchestrator.yolo.nms import non_max_suppression
from orchestrator.yolo.val import ValResult, ValSet, validate


@pytest.fixture(scope="module")
def val320(coco128_yaml, tmp_path_factory):
    cfg = load_data_config(coco128_yaml, need=("val",))
    return ValSet(cfg, 320, 32, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def small(coco128_yaml, tmp_path_factory):
    """12 real val images at 160 in batches of 5 (three batches, the last one short)."""
    cfg = load_data_config(coco128_yaml, need=("val",))
    li = scan_labels(cfg.val[:12], cfg.nc, cache_dir=tmp_path_factory.mktemp("cache"))
    return ValSet(li, 160, 5, nc=cfg.nc, names=cfg.names)


def test_nms_multilabel_per_class_and_limits():
    pred = torch.zeros(2, 4, 8)  # 2 images, 4 boxes, 3 classes
    pred[0, 0] = torch.tensor([50, 50, 20, 20, 0.9, 0.8, 0.5, 0.0])  # A: classes 0 and 1 pass
    pred[0, 1] = torch.tensor([51, 50, 20, 20, 0.9, 0.7, 0.0, 0.6])  # B: overlaps A; class 0 suppressed, 2 kept
    pred[0, 2] = torch.tensor([200, 200, 10, 10, 0.0005, 1.0, 0.0, 0.0])  # objectness below conf
    pred[0, 3] = torch.tensor([300, 300, 10, 10, 0.5, 0.001, 0.0, 0.0])  # obj * cls below conf
    pred[1, 0] = torch.tensor([10, 10, 4, 4, 0.5, 0.0, 0.0, 0.5])
    d = non_max_suppression(pred, conf=0.001, iou=0.6, max_det=300)
    expect = [
        [0, 40, 40, 60, 60, 0.72, 0],
        [0, 41, 40, 61, 60, 0.54, 2],
        [0, 40, 40, 60, 60, 0.45, 1],
        [1, 8, 8, 12, 12, 0.25, 2],
    ]
    torch.testing.assert_close(d, torch.tensor(expect), rtol=0, atol=1e-5)
    d = non_max_suppression(pred, max_det=2)
    assert d[:, 0].tolist() == [0, 0, 1] and d[:2, 5].tolist() == pytest.approx([0.72, 0.54])
    assert non_max_suppression(torch.zeros(3, 10, 85)).shape == (0, 7)


def test_coco_scores_perfect_and_missing():
    labels = [np.array([[0, 0.5, 0.5, 0.2, 0.4], [1, 0.2, 0.2, 0.1, 0.1]], np.float32), np.zeros((0, 5), np.float32)]
    shapes = np.array([[100, 200], [50, 50]])
    gt = coco_ground_truth(labels, shapes, [1, 2], nc=3)
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[1]))
    assert [a["bbox"] for a in ann] == [pytest.approx([80, 30, 40, 40]), pytest.approx([30, 15, 20, 10])]
    assert [a["id"] for a in ann] == [1, 2] and ann[0]["area"] == pytest.approx(1600)
    perfect = np.array([[1, 80, 30, 40, 40, 0.9, 0], [1, 30, 15, 20, 10, 0.8, 1]])
    s = coco_evaluate(gt, perfect, nc=3)
    assert (s.map50_95, s.map50, s.precision, s.recall) == pytest.approx((1, 1, 1, 1))
    assert s.per_class[:2].tolist() == pytest.approx([1, 1]) and np.isnan(s.per_class[2])
    half = np.array([[1, 80, 30, 40, 40, 0.9, 0], [1, 30, 15, 20, 10, 0.8, 2]])  # second box: wrong class
    s = coco_evaluate(gt, half, nc=3)
    assert s.map50_95 == pytest.approx(0.5) and s.recall == pytest.approx(0.5)
    assert coco_evaluate(gt, np.zeros((0, 7)), nc=3).map50_95 == 0.0


class _Oracle(nn.Module):
    """Predicts every labelled box exactly, in the letterboxed pixels of each batch it is fed in order."""

    def __init__(self, vs: ValSet):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.vs, self.calls = vs, 0

    def forward(self, x):
        b = self.vs.batches[self.calls % len(self.vs.batches)]
        self.calls += 1
        assert x.shape == b.images.shape and x.dtype == torch.float32 and float(x.max()) <= 1
        out = torch.zeros(x.shape[0], 64, 5 + self.vs.nc)
        for j, i in enumerate(b.index):
            lb, (h0, w0) = self.vs.labels[i], self.vs.shapes[i]
            g, (dw, dh) = b.gain[j], b.pad[j]
            n = len(lb)
            xywh = lb[:, 1:] * np.array([w0, h0, w0, h0]) * g + np.array([dw, dh, 0, 0])
            out[j, :n, :4] = torch.from_numpy(xywh)
            out[j, :n, 4] = 1.0
            out[j, torch.arange(n), 5 + torch.from_numpy(lb[:, 0]).long()] = 0.9
        return out, []


def test_oracle_boxes_map_back_to_original_pixels(small):
    """Exact boxes through rect batches, NMS, rescaling and COCOeval score 1: nothing is shifted or mixed up."""
    oracle = _Oracle(small)
    # iou=0.99: a few labelled objects overlap > 0.6 with a same-class neighbour, which NMS would merge.
    r = validate(oracle, small, fuse=False, per_class=True, iou=0.99)
    assert oracle.calls == len(small.batches) == 3
    assert r.images == 12 and r.instances == sum(len(lb) for lb in small.labels)
    assert r.map50_95 == pytest.approx(1.0, abs=1e-6) and r.precision == pytest.approx(1.0)
    assert set(r.per_class) <= set(small.names) and min(r.per_class.values()) > 0.99


def test_modes_restored_and_weights_untouched(yolov5n, small):
    m = copy.deepcopy(yolov5n).train()
    m.model[2].eval()  # a frozen block stays frozen
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for fuse in (False, True):
        r = validate(m, small, fuse=fuse)
        assert isinstance(r, ValResult) and 0 < r.map50_95 < 1
        assert m.training and not m.model[2].training and m.model[3].training
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
        assert any(isinstance(c, nn.BatchNorm2d) for c in m.modules())  # not fused in place
    assert set(r.speed_ms) >= {"preprocess", "inference", "nms"}


def test_valset_is_reused_and_checked(yolov5n, small):
    a = validate(yolov5n, small)
    b = validate(yolov5n, small, imgsz=160, batch=5)
    assert a.map50_95 == b.map50_95 and a.speed_ms["load"] == 0.0
    with pytest.raises(ValueError, match="imgsz=320 but the ValSet was built with imgsz=160"):
        validate(yolov5n, small, imgsz=320)


def test_narrower_model_runs(small):
    """A structurally pruned model (fewer channels) needs nothing special."""
    m = build_model("yolov5n", nc=80).eval()
    m.model[0].conv = nn.Conv2d(3, 8, 6, 2, 2, bias=False)  # narrower first conv and what it feeds
    m.model[0].bn = nn.BatchNorm2d(8)
    m.model[1].conv = nn.Conv2d(8, 32, 3, 2, 1, bias=False)
    r = validate(m.eval(), small)
    assert 0 <= r.map50_95 < 0.01  # random weights detect nothing useful, but every step ran


def test_fused_and_unfused_agree_with_prune_masks(yolov5n, small):
    m = copy.deepcopy(yolov5n)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            prune.l1_unstructured(mod, "weight", amount=0.2)
    a, b = validate(m, small, fuse=True), validate(m, small, fuse=False)
    assert a.map50_95 == pytest.approx(b.map50_95, abs=2e-3)
    assert prune.is_pruned(m)  # the caller's masks are still there


def test_official_figure_and_pruned_figure_at_320(yolov5n, val320):
    """REFERENCE.md: pycocotools 0.3132 unpruned; 0.23966 after official-style L1 pruning 0.3 before fusion."""
    r = validate(yolov5n, val320)
    assert (r.images, r.instances) == (64, 440)
    assert r.map50_95 == pytest.approx(0.3132, abs=0.002)
    assert r.map50 == pytest.approx(0.4939, abs=0.002)
    assert r.precision == pytest.approx(0.58381, abs=0.03) and r.recall == pytest.approx(0.44855, abs=0.03)
    m = copy.deepcopy(yolov5n)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            prune.l1_unstructured(mod, "weight", amount=0.3)  # masks kept: validate must apply them
    p = validate(m, val320)
    assert p.map50_95 == pytest.approx(0.23966, abs=0.005)
