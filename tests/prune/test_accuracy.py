"""Acceptance on A (coco128 val, 64 images) at 320: unstructured uniform 0.3 pruned before fusion."""

from __future__ import annotations

import copy

import pytest

from orchestrator.prune import apply_ratios, uniform_ratios
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.val import ValSet, validate


@pytest.mark.slow
def test_unstructured_uniform_30_matches_official_figure(yolov5n, coco128_yaml, tmp_path):
    """REFERENCE.md: the official prune(model, 0.3) before fusion gives mAP50-95 0.23966 on A at 320."""
    m = copy.deepcopy(yolov5n)
    report = apply_ratios(m, uniform_ratios(m, 0.3))
    assert report.sparsity == pytest.approx(0.300, abs=0.005)
    vs = ValSet(load_data_config(coco128_yaml, need=("val",)), 320, 32, cache_dir=tmp_path)
    r = validate(m, vs)  # fuses a copy after the masks are applied: pruned before fusion
    assert r.map50_95 == pytest.approx(0.2397, abs=0.005)
