"""``orchestrator val`` / ``measure`` on ONNX files: scored through ONNX Runtime by our validator, timed, refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from data_subsets import small_dataset
from onnx import TensorProto, helper

from orchestrator.cli import main
from orchestrator.deploy.export import export_onnx
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.val import ValSet, validate


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_yaml(assets: Path, tmp_path_factory) -> Path:
    """Eight val images of coco128 (with their labels) as a dataset of their own."""
    return small_dataset(assets, tmp_path_factory.mktemp("small"), 8)


@pytest.fixture(scope="module")
def exports(yolov5n, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "dynamic": export_onnx(yolov5n, d / "dyn.onnx", imgsz=128, dynamic=True, check=False).path,
        "static": export_onnx(yolov5n, d / "static.onnx", imgsz=128, check=False).path,
        "batch3": export_onnx(yolov5n, d / "batch3.onnx", imgsz=128, batch=3, check=False).path,
    }


def _json(capsys, cmd: str, *argv: str) -> dict:
    assert main([cmd, *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert cap.out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_float_onnx_scores_what_its_checkpoint_scores(capsys, yolov5n, exports, small_yaml):
    r = _json(capsys, "val", "--weights", str(exports["dynamic"]), "--data", str(small_yaml), "--imgsz", "128")
    cfg = load_data_config(small_yaml)
    torch_r = validate(yolov5n, ValSet(cfg, 128, 32))
    assert r["images"] == 8 and r["map50_95"] > 0.05
    # same letterbox, NMS and COCOeval: only float32 rounding differs between the runtimes
    assert r["map50_95"] == pytest.approx(torch_r.map50_95, abs=2e-3)
    assert r["map50"] == pytest.approx(torch_r.map50, abs=2e-3)


def test_fixed_shape_onnx_gets_square_letterboxes(capsys, exports, small_yaml):
    r = _json(capsys, "val", "--weights", str(exports["static"]), "--data", str(small_yaml), "--imgsz", "128")
    assert r["images"] == 8 and r["map50_95"] > 0.05
    # a fixed batch of 3: 8 images go in chunks of 3, 3 and 2 (padded), scored the same
    r3 = _json(capsys, "val", "--weights", str(exports["batch3"]), "--data", str(small_yaml), "--imgsz", "128")
    assert r3["map50_95"] == pytest.approx(r["map50_95"], abs=1e-4)
    msg = _error(capsys, "val", "--weights", str(exports["static"]), "--data", str(small_yaml), "--imgsz", "256")
    assert msg == f"error: {exports['static']}: exported for 128x128 images: pass --imgsz 128"
    cfg = load_data_config(small_yaml)
    assert {tuple(b.images.shape[2:]) for b in ValSet(cfg, 128, 4, rect=False).batches} == {(128, 128)}


def test_measure_times_an_onnx_file_against_a_baseline(capsys, exports, yolov5n_pt):
    r = _json(
        capsys, "measure", "--weights", str(exports["dynamic"]), "--imgsz", "64", "--runs", "2", "--threads", "1",
        "--baseline", str(yolov5n_pt),
    )  # fmt: skip
    assert r["ort_latency_ms"] > 0 and r["ort_speedup"] > 0 and r["ort_provider"] == "CPUExecutionProvider"
    assert r["size_mb"] == pytest.approx(exports["dynamic"].stat().st_size / 1e6) and not r["int8"]
    assert r["params"] == pytest.approx(1.87e6, rel=0.01) and r["threads"] == 1


def _not_a_detector(path: Path) -> Path:
    """A valid ONNX model (one 1x1 conv) whose output is an image, not YOLOv5 predictions."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.ones(12, np.float32))
    node = helper.make_node("Conv", ["images", "w"], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 64])],
        [w],
    )
    onnx.save(helper.make_model(g), str(path))
    return path


def test_files_that_are_not_yolov5_detectors_are_refused(capsys, tmp_path, small_yaml):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf at all\xff" * 8)
    conv = _not_a_detector(tmp_path / "conv.onnx")
    for cmd in (["val", "--data", str(small_yaml), "--imgsz", "64"], ["measure", "--imgsz", "64"]):
        assert _error(capsys, *cmd, "--weights", str(junk)) == f"error: {junk}: not an ONNX model (DecodeError)"
        assert _error(capsys, *cmd, "--weights", str(conv)) == (
            f"error: {conv}: not a YOLOv5 detector: output 'y' has shape (1, 4, 64, 64), "
            "expected (batch, anchors, 5 + classes)"
        )
