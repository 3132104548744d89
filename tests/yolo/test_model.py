"""Our YOLOv5 against the official forward-pass figures in ../shared/assets/REFERENCE.md."""

from __future__ import annotations

import copy

import pytest
import torch

from orchestrator.yolo.model import Detect, build_model


def _reference_input() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 320, 256)


def test_forward_matches_official_reference(yolov5n):
    x = _reference_input()
    assert x.sum().item() == pytest.approx(246029.109, rel=1e-6)
    with torch.no_grad():
        y, raw = yolov5n(x)
    assert y.shape == (2, 5040, 85)
    assert y.double().sum().item() == pytest.approx(4017969.544, rel=1e-5)
    assert y.double().mean().item() == pytest.approx(4.689507, rel=1e-5)
    assert y.abs().max().item() == pytest.approx(355.8408, rel=1e-5)
    sums = [-3146582.478, -819732.922, -218403.666]
    shapes = [(2, 3, 40, 32, 85), (2, 3, 20, 16, 85), (2, 3, 10, 8, 85)]
    for r, s, shape in zip(raw, sums, shapes):
        assert tuple(r.shape) == shape
        assert r.double().sum().item() == pytest.approx(s, rel=1e-5)
    first = [4.294266, 5.370226, 7.916584, 9.919891, 0.000637, 0.395524, 0.005151, 0.177609]
    last = [238.26767, 292.730804, 144.073898, 106.99276, 2e-06, 0.19612, 0.004195, 0.022002]
    torch.testing.assert_close(y[0, 0, :8], torch.tensor(first), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[1, -1, :8], torch.tensor(last), rtol=1e-5, atol=1e-6)


def test_fused_model_matches_unfused(yolov5n):
    x = _reference_input()
    fused = copy.deepcopy(yolov5n).fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        y0, _ = yolov5n(x)
        y1, _ = fused(x)
    assert (y0 - y1).abs().max().item() < 9.5e-4 * 2


def test_official_parameter_names(yolov5n):
    keys = set(yolov5n.state_dict())
    for k in (
        "model.0.conv.weight",
        "model.2.m.0.cv1.bn.running_mean",
        "model.9.cv2.conv.weight",
        "model.24.m.0.weight",
        "model.24.m.2.bias",
        "model.24.anchors",
    ):
        assert k in keys
    assert isinstance(yolov5n.model[24], Detect)


@pytest.mark.parametrize("size,params", [("n", 1_867_405), ("s", 7_225_885)])
def test_build_from_shipped_yaml(size, params):
    m = build_model(f"yolov5{size}")
    fused = copy.deepcopy(m).eval().fuse()
    assert sum(p.numel() for p in fused.parameters()) == params  # official fused model summaries
    assert m.stride.tolist() == [8.0, 16.0, 32.0]


def test_nc_and_anchor_override_and_train_output():
    m = build_model("yolov5n", nc=3, anchors=[[10, 13, 16, 30], [30, 61, 62, 45], [116, 90, 156, 198]])
    out = m.train()(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 2, 8, 8, 8), (1, 2, 4, 4, 8), (1, 2, 2, 2, 8)]
    assert m.names == ["0", "1", "2"]
