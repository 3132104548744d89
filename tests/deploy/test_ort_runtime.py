"""ONNX Runtime latency: sessions with fixed threads, interleaved timing, and measure()'s ORT figures."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from orchestrator.deploy.export import onnx_bytes
from orchestrator.deploy.measure import measure
from orchestrator.deploy.ort_runtime import open_session, providers_for, session_forward, time_sessions
from orchestrator.prune import apply_ratios


class _Input:
    name = "images"


class _RecordingSession:
    """Stands in for an InferenceSession: records who ran, on what."""

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def get_inputs(self):
        return [_Input()]

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, outputs, feed):
        assert feed["images"].shape == (1, 3, 64, 64) and feed["images"].dtype == np.float32
        self.log.append(self.name)
        return [np.zeros(1)]


def test_sessions_are_timed_interleaved_run_by_run():
    log: list[str] = []
    t = time_sessions(_RecordingSession("m", log), _RecordingSession("b", log), 64, runs=4, warmup=1, threads=1)
    assert log == ["m", "b", "b", "m", "m", "b", "b", "m", "m", "b"]
    assert t.ms > 0 and t.baseline_ms > 0 and t.speedup > 0 and t.threads == 1
    assert t.provider == "CPUExecutionProvider"


def test_sessions_do_not_spin_so_two_in_one_process_can_be_timed_together(pruned):
    s = open_session(onnx_bytes(pruned, imgsz=64), threads=2)
    opts = s.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_cpu_device_gets_the_cpu_provider():
    assert providers_for("cpu") == ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def pruned(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, {"model.6": 0.5, "model.17": 0.5}, method="structured", granularity="block")
    return m


def test_session_runs_the_models_onnx_like_pytorch(pruned):
    sess = open_session(onnx_bytes(pruned, imgsz=64), threads=1)
    assert sess.get_session_options().intra_op_num_threads == 1
    x = torch.rand(3, 3, 96, 64)  # dynamic axes: another batch and shape than exported
    with torch.no_grad():
        y = pruned.eval()(x)[0]
    for chunk in (None, 2):  # a file with a fixed batch is fed in chunks
        out = session_forward(sess, chunk)(x)
        assert out.shape == y.shape and float((out - y).abs().max()) < 1e-3


def test_measure_reports_ort_latency_against_the_baseline(yolov5n, pruned):
    m = measure(pruned, imgsz=64, runs=3, warmup=1, threads=1, baseline=yolov5n)
    assert m.ort_latency_ms > 0 and m.ort_baseline_latency_ms > 0 and m.ort_speedup > 0
    assert m.ort_provider == "CPUExecutionProvider"
    # a session the caller keeps open serves as the baseline (a worker opens it once)
    base = open_session(onnx_bytes(yolov5n, imgsz=64), threads=1)
    again = measure(pruned, imgsz=64, runs=3, warmup=1, threads=1, ort_baseline=base)
    assert again.ort_speedup is not None and again.speedup is None  # eager: no baseline given
    alone = measure(pruned, imgsz=64, runs=2, warmup=0, ort=False)
    assert alone.ort_latency_ms is None and alone.ort_speedup is None
