"""int8 post-training quantization: what stays float, the options reaching the graph (as written and as ONNX
Runtime runs it), and ``export --int8`` end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from data_subsets import small_dataset
from onnx import numpy_helper

from orchestrator.cli import main
from orchestrator.deploy.export import onnx_bytes
from orchestrator.deploy.onnx_model import inspect_onnx
from orchestrator.deploy.ort_graph import optimized_ops, precision_shares, profile_ops
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


def test_bad_options_are_one_line(float224, calib224):
    with pytest.raises(OrchestratorError, match="expected one of minmax, percentile, entropy, got 'median'"):
        Int8Options("median")
    with pytest.raises(OrchestratorError, match="calibration images: expected >= 1, got 0"):
        Int8Options(images=0)
    with pytest.raises(OrchestratorError, match="int8 activations: expected one of u8, s8, got 'u16'"):
        Int8Options(activations="u16")
    with pytest.raises(OrchestratorError, match="calibration batch: expected >= 1, got 0"):
        Int8Options(batch=0)
    with pytest.raises(OrchestratorError, match=r"int8 float layers: expected layer indices >= 0, got \[-1\]"):
        Int8Options(float_layers=(-1,))
    with pytest.raises(OrchestratorError, match="ONNX Runtime cannot quantize Silu"):
        quantize_int8(float224, calib224, Int8Options(op_types=("Conv", "Silu")))


# The options reach the graph: imgsz 224, three calibration images, minmax (the fastest calibrator).


@pytest.fixture(scope="module")
def float224(yolov5n) -> bytes:
    return onnx_bytes(yolov5n, imgsz=224)


@pytest.fixture(scope="module")
def calib224(small_yaml) -> list[np.ndarray]:
    return calibration_images(load_data_config(small_yaml).train, 224, 3)


@pytest.fixture(scope="module")
def quantized(float224, calib224):
    """``quantized(**options)``: the int8 file of yolov5n at 224 made with those options (minmax, 3 images), over
    per-channel weights and every layer int8 (whatever the defaults)."""
    made: dict[tuple, bytes] = {}

    def make(**kw) -> bytes:
        kw = {"per_channel": True, "float_layers": (), **kw}
        key = tuple(sorted(kw.items()))
        if key not in made:
            made[key] = quantize_int8(float224, calib224, Int8Options("minmax", 3, **kw))
        return made[key]

    return make


def conv_weight_scales(q: bytes) -> list[np.ndarray]:
    """The scale of every conv weight's DequantizeLinear (its quantized input is a 4-d int8 initializer)."""
    g = onnx.load_from_string(q).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [
        init[n.input[1]]
        for n in g.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].ndim == 4
    ]


def activation_zero_points(q: bytes) -> set[np.dtype]:
    g = onnx.load_from_string(q).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return {init[n.input[2]].dtype for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in init}


def test_per_channel_off_gives_one_scale_per_weight_tensor(quantized):
    per_channel = conv_weight_scales(quantized())
    per_tensor = conv_weight_scales(quantized(per_channel=False))
    assert len(per_channel) == len(per_tensor) == 60  # yolov5n's convs, the Detect head's three included
    assert all(s.size > 1 for s in per_channel) and all(s.size == 1 for s in per_tensor)


def test_activation_type_reaches_the_zero_points(quantized):
    assert activation_zero_points(quantized(activations="u8")) == {np.dtype(np.uint8)}
    assert activation_zero_points(quantized(activations="s8")) == {np.dtype(np.int8)}


def test_float_head_keeps_the_three_detect_convs_float_where_ort_runs_them(quantized, float224):
    head_int8 = optimized_ops(quantized(float_head=False))
    head_float = optimized_ops(quantized(float_head=True))
    assert head_int8.float_convs == 0 and head_float.float_convs == 3
    assert head_int8.int8["QLinearConv"] == head_float.int8["QLinearConv"] + 3 == 60
    float_graph = optimized_ops(float224)
    assert not float_graph.int8 and not float_graph.convert and float_graph.float_convs == 60


def test_float_layers_keep_that_layer_float(quantized):
    first_float = optimized_ops(quantized(float_layers=(0,)))
    assert first_float.float_convs == 1 and first_float.int8["QLinearConv"] == 59  # model.0: one conv


def test_conv_only_leaves_silu_float_and_all_ops_quantize_it(quantized, float224):
    conv_only = optimized_ops(quantized(op_types=("Conv",)))
    assert conv_only.int8["QLinearConv"] == 60 and "QLinearSigmoid" not in conv_only.int8
    # each SiLU's Sigmoid and Mul stay float and unfused (the float graph fuses them), between convert nodes
    assert conv_only.other["Sigmoid"] == 57 + 3 and conv_only.other["Mul"] == 57 + 12  # + the Detect decode's
    assert conv_only.convert["QuantizeLinear"] >= 50 and "QuickGelu" not in conv_only.other
    assert optimized_ops(float224).other["QuickGelu"] == 57
    all_ops = optimized_ops(quantized())
    assert all_ops.int8["QLinearSigmoid"] == all_ops.int8["QLinearMul"] == 57


def test_calibration_in_batches_gives_the_same_ranges(float224, calib224):
    one_pass = quantize_int8(float224, calib224, Int8Options("minmax", 3, batch=3))
    two = quantize_int8(float224, calib224, Int8Options("minmax", 3, batch=2))  # a last batch of one image
    assert one_pass == two  # minmax merges the passes' ranges exactly


def test_calibration_cache_is_reused(float224, calib224, tmp_path):
    cache = tmp_path / "ranges.json"
    first = quantize_int8(float224, calib224, Int8Options("minmax", 3, per_channel=True), ranges=cache)
    assert cache.is_file()
    again = quantize_int8(float224, [], Int8Options("minmax", 3, per_channel=True), ranges=cache)  # the cache's
    assert again == first
    per_tensor = quantize_int8(float224, [], Int8Options("minmax", 3, per_channel=False), ranges=cache)
    assert per_tensor != first and all(s.size == 1 for s in conv_weight_scales(per_tensor))


def test_profile_says_where_int8_runs(quantized, float224):
    rows = profile_ops(quantized(), 224, runs=2, warmup=1)
    shares = precision_shares(rows)
    assert shares["int8"] > 0.5 and sum(shares.values()) == pytest.approx(1.0)
    conv = next(r for r in rows if r.op == "QLinearConv")
    assert conv.precision == "int8" and conv.nodes == 60
    assert "int8" not in precision_shares(profile_ops(float224, 224, runs=2, warmup=1))


def test_export_int8_then_val_through_onnx_runtime(capsys, yolov5n_pt, small_yaml, tmp_path):
    out = tmp_path / "q.onnx"
    argv = ["export", "--weights", str(yolov5n_pt), "--int8", "--data", str(small_yaml), "--imgsz", "128"]
    assert main([*argv, "--calib-images", "4", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)  # one JSON object: ORT's calibration chatter is not on stdout
    assert info["int8"] and info["calib_images"] == 4 and inspect_onnx(out).int8
    # the defaults (docs/deploy.md): percentile, per-tensor weights, the first conv float
    assert (info["calibration"], info["per_channel"], info["float_layers"]) == ("percentile", False, [0])
    assert optimized_ops(out.read_bytes()).float_convs == 1 and all(
        s.size == 1 for s in conv_weight_scales(out.read_bytes())
    )
    every = tmp_path / "every.onnx"  # the other forms are a flag away
    form = ["--calibration", "minmax", "--per-channel", "--float-layers", "--activations", "u8"]
    assert main([*argv, "--calib-images", "2", *form, "--out", str(every), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["float_layers"] == []
    assert optimized_ops(every.read_bytes()).float_convs == 0
    assert all(s.size > 1 for s in conv_weight_scales(every.read_bytes()))
    assert main([*argv, "--float-layers", "-1"]) == 2
    assert "int8 float layers: expected layer indices >= 0, got [-1]" in capsys.readouterr().err
    assert main(["val", "--weights", str(out), "--data", str(small_yaml), "--imgsz", "128", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 8 and r["map50_95"] > 0.05
    assert main(["export", "--weights", str(yolov5n_pt), "--int8", "--imgsz", "128"]) == 2
    assert "--int8: needs --data" in capsys.readouterr().err
    assert main([*argv, "--calib-images", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: calibration images: expected >= 1, got 0"
