"""``orchestrator prune | layers | measure | export`` end to end on the real yolov5n (in-process CLI)."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.cli import main
from orchestrator.yolo.checkpoint import load_checkpoint


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_layers_lists_the_names(capsys, yolov5n_pt):
    rc, out, _ = _run(capsys, "layers", "--weights", str(yolov5n_pt), "--granularity", "stage", "--json")
    assert rc == 0 and list(json.loads(out)) == [
        "backbone.P1", "backbone.P2", "backbone.P3", "backbone.P4", "backbone.P5", "neck", "head"
    ]  # fmt: skip
    rc, out, _ = _run(capsys, "layers", "--weights", str(yolov5n_pt), "--method", "structured")
    assert rc == 0 and "model.6.cv1.conv" in out and "model.24.m.0" not in out


def test_prune_structured_then_measure_and_export(capsys, yolov5n_pt, tmp_path):
    out_pt = tmp_path / "s.pt"
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--ratio", "0.3",
        "--granularity", "block", "--round-to", "8", "--out", str(out_pt), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["out"] == str(out_pt) and rep["layout"] == "orchestrator"
    assert rep["pruning"]["params_after"] < 0.6 * rep["pruning"]["params_before"]
    ck = load_checkpoint(out_pt)
    assert ck.meta["pruning"]["method"] == "structured" and ck.model.model[0].conv.out_channels == 8

    rc, out, err = _run(
        capsys, "measure", "--weights", str(out_pt), "--imgsz", "64", "--runs", "2", "--warmup", "0",
        "--baseline", str(yolov5n_pt), "--json",
    )  # fmt: skip
    assert rc == 0, err
    m = json.loads(out)
    for k in ("params", "nonzero_params", "size_mb", "size_zip_mb", "gflops", "latency_ms", "speedup", "device"):
        assert k in m
    assert m["params"] == rep["pruning"]["params_after"] and m["device"] == "cpu"
    rc, out, _ = _run(capsys, "measure", "--weights", str(out_pt), "--imgsz", "64", "--runs", "1", "--json")
    assert rc == 0 and "speedup" not in json.loads(out)

    pytest.importorskip("onnxruntime")
    rc, out, err = _run(capsys, "export", "--weights", str(out_pt), "--format", "onnx", "--imgsz", "128", "--json")
    assert rc == 0, err
    e = json.loads(out)
    assert (
        e["out"] == str(out_pt.with_name(f"{out_pt.stem}-128.onnx"))
        and e["max_abs_diff"] < 1e-3
        and e["output0"] == [1, 1008, 85]
    )


def test_prune_unstructured_official_layout(capsys, yolov5n_pt, tmp_path):
    out_pt = tmp_path / "u.pt"
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--ratio", "0.3", "--out", str(out_pt), "--official"
    )
    assert rc == 0, err
    assert "0.3000" in out  # conv weight zeros
    ck = load_checkpoint(out_pt)
    assert ck.layout == "official"
    w = torch.cat([c.weight.flatten() for c in ck.model.modules() if isinstance(c, torch.nn.Conv2d)])
    assert (w == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)


@pytest.mark.parametrize(
    "ratios, extra, expected",
    [
        ("model.6: 1.0\n", ["--granularity", "block"], "ratios: model.6: ratio must be in [0, 1)"),
        ("model.66: 0.2\n", ["--granularity", "block"], "'model.66' names no block group (close matches: model.6"),
        ("model.0: 0.97\n", ["--granularity", "block", "--method", "structured"], "model.0: ratio 0.97 would leave"),
        ("- 0.3\n", [], "expected a mapping of group names to ratios"),
    ],
)
def test_bad_ratio_files_exit_2_with_one_line(capsys, yolov5n_pt, tmp_path, ratios, extra, expected):
    f = tmp_path / "r.yaml"
    f.write_text(ratios)
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--ratios", str(f), "--out", str(tmp_path / "x.pt"), *extra
    )
    assert rc == 2 and out == ""
    assert err.startswith(f"error: {f}: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "x.pt").exists()


def test_bad_ratio_flag(capsys, yolov5n_pt, tmp_path):
    rc, _, err = _run(capsys, "prune", "--weights", str(yolov5n_pt), "--ratio", "-0.1", "--out", str(tmp_path / "x"))
    assert rc == 2 and "--ratio: ratio must be in [0, 1)" in err
