"""``orchestrator prune --method structured --data / --target-gflops``: bad input is one line and exit 2;
a small recovered cut runs end to end and records its recovery."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.yolo.checkpoint import load_checkpoint


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (("--target-gflops", "0", "--data", "D"), "--target-gflops must be in (0, 1]"),
        (("--target-gflops", "1.5", "--data", "D"), "--target-gflops must be in (0, 1]"),
        (("--target-gflops", "0.7"), "--target-gflops needs --data"),
        (("--ratio", "0.1", "--importance", "output_error"), "--importance output_error needs"),
        (("--ratio", "0.1", "--data", "D", "--calib-images", "1"), "--calib-images must be at least 2"),
    ],
)
def test_bad_budget_flags_are_one_line(capsys, yolov5n_pt, tmp_path, extra, flag):
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--out", str(tmp_path / "o.pt"), *extra
    )
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and flag in err and len(err.strip().splitlines()) == 1


def test_target_gflops_needs_structured(capsys, yolov5n_pt, tmp_path):
    rc, _, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--target-gflops", "0.7", "--out", str(tmp_path / "o.pt")
    )
    assert rc == 2 and "--target-gflops goes with --method structured" in err


def test_bad_recovery_step_is_one_line(capsys, yolov5n_pt, coco128_yaml, tmp_path):
    rc, _, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--ratio", "0.1",
        "--data", str(coco128_yaml), "--recover", "compensate,magic", "--out", str(tmp_path / "o.pt"),
    )  # fmt: skip
    assert rc == 2 and "recovery steps must be among" in err and len(err.strip().splitlines()) == 1


def test_recovered_cut_records_its_recovery(capsys, yolov5n_pt, coco128_yaml, tmp_path):
    out_pt = tmp_path / "r.pt"
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--granularity", "block",
        "--ratios", str(_ratio_file(tmp_path)), "--data", str(coco128_yaml), "--imgsz", "128",
        "--calib-images", "4", "--recover", "compensate", "--out", str(out_pt), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["recovery"]["steps"] == ["compensate"] and rep["pruning"]["importance"] == "output_error"
    assert load_checkpoint(out_pt).model.model[8].cv1.conv.out_channels < 128


def _ratio_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model.8: 0.25\n")
    return p


def test_scan_from_a_file_without_a_scan_is_one_line(capsys, yolov5n_pt, coco128_yaml, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"out": "x.pt"}')
    rc, _, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--target-gflops", "0.8",
        "--data", str(coco128_yaml), "--calib-images", "2", "--imgsz", "64", "--scan-from", str(bad),
        "--out", str(tmp_path / "o.pt"),
    )  # fmt: skip
    assert rc == 2 and "--scan-from" in err and "has no 'budget'" in err and len(err.strip().splitlines()) == 1


def test_budget_run_reports_its_progress_and_keeps_stderr_clean_off_a_terminal(
    capsys, monkeypatch, yolov5n_pt, coco128_yaml, tmp_path
):
    """The scan takes minutes: a terminal sees it advance point by point; a pipe or log sees nothing."""
    import orchestrator.commands.prune as prune_cmd

    seen: list[tuple] = []
    scan_point, recovery = prune_cmd.Stages.scan_point, prune_cmd.Stages.recovery
    monkeypatch.setattr(prune_cmd.Stages, "scan_point", lambda s, d, t: (seen.append((d, t)), scan_point(s, d, t)))
    monkeypatch.setattr(prune_cmd.Stages, "recovery", lambda s, n, st: (seen.append((n, st)), recovery(s, n, st)))
    rc, out, err = _run(
        capsys, "prune", "--weights", str(yolov5n_pt), "--method", "structured", "--granularity", "stage",
        "--target-gflops", "0.9", "--data", str(coco128_yaml), "--imgsz", "64", "--calib-images", "4",
        "--recover", "compensate", "--out", str(tmp_path / "b.pt"), "--json",
    )  # fmt: skip
    assert rc == 0 and err == ""  # captured stderr is no terminal: no bars in it
    total = 1 + 6 * 2  # the unpruned model, then 6 stage groups x 2 scan ratios
    assert seen == [*((d, total) for d in range(1, total + 1)), (4, ("compensate",))]
    assert json.loads(out)["budget"]["gflops_fraction"] <= 0.9
