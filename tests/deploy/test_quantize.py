"""int8 post-training quantization: what stays float, the file it writes, and ``export --int8`` end to end."""

from __future__ import annotations

import json

import onnx
import pytest
from data_subsets import small_dataset

from orchestrator.cli import main
from orchestrator.deploy.export import onnx_bytes
from orchestrator.deploy.onnx_model import inspect_onnx
from orchestrator.deploy.quantize import Int8Options, calibration_images, decode_nodes, quantize_int8
from orchestrator.errors import OrchestratorError
from orchestrator.yolo.data import load_data_config


@pytest.fixture(scope="module")
def float_onnx(yolov5n) -> bytes:
    return onnx_bytes(yolov5n, imgsz=64)


@pytest.fixture(scope="module")
def small_yaml(assets, tmp_path_factory):
    return small_dataset(assets, tmp_path_factory.mktemp("small"), 8)


def test_only_the_detect_decode_stays_float(float_onnx):
    g = onnx.load_from_string(float_onnx).graph
    by_name = {n.name: n for n in g.node}
    tail = decode_nodes(onnx.load_from_string(float_onnx))
    ops = {by_name[n].op_type for n in tail}
    assert "Conv" not in ops and {"Sigmoid", "Concat", "Reshape"} <= ops
    assert all("model.24" in n or by_name[n].op_type == "Constant" for n in tail)  # Detect is layer 24
    assert any(o == "output0" for n in tail for o in by_name[n].output)  # the final concat is in the tail
    convs = set(decode_nodes(onnx.load_from_string(float_onnx), head_convs=True)) - set(tail)
    assert len(convs) == 3 and all(by_name[n].op_type == "Conv" and "model.24" in n for n in convs)


def test_int8_file_is_quantized_and_smaller(float_onnx, small_yaml):
    cfg = load_data_config(small_yaml)
    images = calibration_images(cfg.train, 64, 3)
    assert len(images) == 3 and all(x.shape == (1, 3, 64, 64) and 0 <= x.min() <= x.max() <= 1 for x in images)
    q = quantize_int8(float_onnx, images, Int8Options("minmax", 3))
    ops = {n.op_type for n in onnx.load_from_string(q).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert len(q) < 0.35 * len(float_onnx)  # int8 weights: a quarter of the float bytes, plus scales


def test_bad_options_are_one_line():
    with pytest.raises(OrchestratorError, match="expected one of minmax, percentile, entropy, got 'median'"):
        Int8Options("median")
    with pytest.raises(OrchestratorError, match="calibration images: expected >= 1, got 0"):
        Int8Options(images=0)


def test_export_int8_then_val_through_onnx_runtime(capsys, yolov5n_pt, small_yaml, tmp_path):
    out = tmp_path / "q.onnx"
    argv = ["export", "--weights", str(yolov5n_pt), "--int8", "--data", str(small_yaml), "--imgsz", "128"]
    assert main([*argv, "--calib-images", "4", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)  # one JSON object: ORT's calibration chatter is not on stdout
    assert info["int8"] and info["calib_images"] == 4 and inspect_onnx(out).int8
    assert main(["val", "--weights", str(out), "--data", str(small_yaml), "--imgsz", "128", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 8 and r["map50_95"] > 0.05
    assert main(["export", "--weights", str(yolov5n_pt), "--int8", "--imgsz", "128"]) == 2
    assert "--int8: needs --data" in capsys.readouterr().err
    assert main([*argv, "--calib-images", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: calibration images: expected >= 1, got 0"
