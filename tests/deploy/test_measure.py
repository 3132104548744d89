"""Measurements on the real yolov5n: counts, bytes, FLOPs against official figures, interleaved timing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from orchestrator.deploy.measure import deployable, measure, resolve_device, time_models
from orchestrator.errors import OrchestratorError
from orchestrator.prune import apply_ratios, uniform_ratios
from orchestrator.yolo.flops import count_gflops


@pytest.fixture(scope="module")
def dense(yolov5n):
    return measure(yolov5n, imgsz=64, runs=2, warmup=0)


def test_counts_and_sizes(yolov5n, yolov5n_pt, dense):
    assert dense.params == sum(p.numel() for p in yolov5n.parameters())
    assert dense.nonzero_params == sum(int(torch.count_nonzero(p)) for p in yolov5n.parameters())
    # the same layout as the official file, which also stores Detect's cached grids: a little smaller
    official = yolov5n_pt.stat().st_size / 1e6
    assert 0.9 * official < dense.size_mb < official
    assert dense.size_zip_mb < dense.size_mb
    assert dense.device == "cpu" and dense.imgsz == 64 and dense.batch == 1 and dense.speedup is None
    assert dense.latency_ms > 0 and dense.latency_ms_batch == dense.latency_ms


def test_gflops_match_official_summary(yolov5n):
    # official: "YOLOv5n summary: ... 4.5 GFLOPs" at 640 (thop MACs x 2, fused model)
    net = deployable(yolov5n)
    g640 = count_gflops(net, 640)
    assert g640 == pytest.approx(4.5, abs=0.05)
    assert count_gflops(net, 320) == pytest.approx(g640 / 4, rel=1e-3)  # FLOPs scale with pixels


def test_unstructured_zeros_show_in_the_zip_not_in_flops(yolov5n, dense):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, uniform_ratios(m, 0.3))
    u = measure(m, imgsz=64, runs=2, warmup=0, batch=2, baseline=yolov5n)
    assert u.params == dense.params
    conv_weights = sum(c.weight.numel() for c in m.modules() if isinstance(c, nn.Conv2d))
    assert dense.nonzero_params - u.nonzero_params == pytest.approx(0.3 * conv_weights, rel=0.01)
    # the same tensors: the deployable bytes, without the mask record checkpoints carry for fine-tuning
    assert u.size_mb == pytest.approx(dense.size_mb, rel=1e-3)
    assert u.size_zip_mb < 0.9 * dense.size_zip_mb
    assert u.gflops == pytest.approx(dense.gflops, rel=1e-9)
    assert u.speedup is not None and u.speedup_batch is not None and u.baseline_latency_ms > 0
    assert u.latency_ms_batch > 0 and u.batch == 2
    assert m.model[0].conv.weight_mask is not None  # the caller's model keeps its masks


class _Recorder(nn.Module):
    def __init__(self, name: str, log: list[str]):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_timing_is_interleaved_run_by_run():
    log: list[str] = []
    t = time_models(
        _Recorder("m", log), _Recorder("b", log), torch.zeros(1), runs=4, warmup=1, device=torch.device("cpu")
    )
    assert log == ["m", "b", "b", "m", "m", "b", "b", "m", "m", "b"]
    assert t.ms > 0 and t.baseline_ms > 0 and t.speedup > 0


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(OrchestratorError, match="expected cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(OrchestratorError, match="CUDA is not available"):
            resolve_device("0")


def test_bad_sizes(yolov5n):
    with pytest.raises(OrchestratorError, match="multiple of 32"):
        measure(yolov5n, imgsz=100)
    with pytest.raises(OrchestratorError, match="batch must be at least 1"):
        measure(yolov5n, imgsz=64, batch=0)
