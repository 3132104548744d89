"""ONNX export of a structurally pruned yolov5n: one decoded output, onnxruntime agrees with PyTorch."""

from __future__ import annotations

import copy

import pytest
import torch

from orchestrator.deploy.export import export_onnx
from orchestrator.errors import OrchestratorError
from orchestrator.prune import apply_ratios

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def pruned(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, {"model.6": 0.5, "model.17": 0.3}, method="structured", granularity="block")
    return m


def test_onnx_matches_pytorch(pruned, tmp_path):
    r = export_onnx(pruned, tmp_path / "p.onnx", imgsz=256, dynamic=True)
    assert r.max_abs_diff is not None and r.max_abs_diff < 1e-3
    g = onnx.load(str(r.path)).graph
    assert [o.name for o in g.output] == ["output0"] and [i.name for i in g.input] == ["images"]
    assert r.output_shape == (1, 3 * (32 * 32 + 16 * 16 + 8 * 8), 85) and r.opset >= 12
    # dynamic axes: another batch and shape, against the unfused PyTorch model
    x = torch.rand(2, 3, 192, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = pruned.eval()(x)[0]
    (out,) = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"]).run(
        ["output0"], {"images": x.numpy()}
    )
    assert out.shape == tuple(y.shape)
    # box outputs are pixels (up to ~320): float32 rounding of the fused graph scales with them
    torch.testing.assert_close(torch.from_numpy(out), y, rtol=1e-5, atol=1e-3)


def test_bad_export_arguments(pruned, tmp_path):
    with pytest.raises(OrchestratorError, match="opset must be at least 12"):
        export_onnx(pruned, tmp_path / "x.onnx", opset=11)
    with pytest.raises(OrchestratorError, match="multiple of 32"):
        export_onnx(pruned, tmp_path / "x.onnx", imgsz=100)
