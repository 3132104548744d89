"""``prune --target-speedup``: bad and unreachable targets are one line and exit 2; a reachable one gives a checkpoint
that loads and runs that much faster in ONNX Runtime; the latency table is read back from the cache untimed.

Small settings (128 px, stage groups, one scan ratio, at most one bottleneck, 4 calibration images) keep the real
run near a minute on a shared 2-core machine; the timings are real, so the speed-up check allows for noise."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.prune.budget import greedy, predicted

REPO = Path(__file__).resolve().parents[2]
SMALL = ("--imgsz", "128", "--granularity", "stage", "--scan-ratios", "0.5", "--max-depth", "1",
         "--calib-images", "4", "--recover", "compensate", "--timing-runs", "15", "--threads", "2")  # fmt: skip
TOLERANCE = 0.9  # timings on a shared machine: the checkpoint's own re-timing may read up to 10% lower


def test_a_speedup_of_at_most_one_is_one_line_and_exit_2(yolov5n_pt, coco128_yaml, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator", "prune", "--weights", str(yolov5n_pt), "--data", str(coco128_yaml),
         "--target-speedup", "0.5", "--out", str(tmp_path / "o.pt")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr.strip() == ("error: --target-speedup must be > 1 (a speed-up over the unpruned model), got 0.5")
        and not (tmp_path / "o.pt").exists()
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--target-gflops", "0.7"), "not allowed with argument --target-speedup"),
        (("--method", "unstructured"), "--target-speedup cuts channels and bottlenecks"),
        (("--max-depth", "-1"), "--max-depth must be at least 0"),
    ],
)
def test_flags_that_do_not_go_with_a_speedup_are_one_line(capsys, yolov5n_pt, coco128_yaml, tmp_path, extra, message):
    with contextlib.suppress(SystemExit):  # argparse's own refusal exits 2 itself
        rc = main(["prune", "--weights", str(yolov5n_pt), "--data", str(coco128_yaml), "--target-speedup", "1.2",
                   "--out", str(tmp_path / "o.pt"), *extra])  # fmt: skip
        assert rc == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1]  # argparse's own refusals print their usage first


def test_the_greedy_takes_the_cut_with_the_least_loss_per_ms_depth_included():
    # group -> [(level, predicted loss, ms saved)]: the neck saves many ms for little loss, depth a little for less
    levels = {
        "stem": [(0.0, 0.0, 0.0), (0.5, 0.10, 0.5)],
        "neck": [(0.0, 0.0, 0.0), (0.5, 0.02, 4.0)],
        "depth": [(0.0, 0.0, 0.0), (1.0, 0.001, 0.5), (2.0, 0.05, 0.6)],
    }
    base = 10.0
    chosen, steps, met = greedy(
        levels,
        lambda saved: base / (base - saved) >= 1.25,
        lambda lv: bool(lv) and base / (base - predicted(levels, lv)[1]) >= 1.25,
        lambda g: 1.0 if g == "depth" else 0.05,
    )
    assert met and steps[0] == "depth=1" and "stem" not in chosen
    assert chosen["depth"] == 1 and 0 < chosen["neck"] <= 0.5


@pytest.fixture(scope="module")
def speedup_run(yolov5n_pt, coco128_yaml, tmp_path_factory):
    """One real --target-speedup 1.1 run (latency table timed into a fresh cache), its JSON report and files."""
    d = tmp_path_factory.mktemp("speedup")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCHESTRATOR_CACHE", str(d / "cache"))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["prune", "--weights", str(yolov5n_pt), "--data", str(coco128_yaml), "--target-speedup", "1.1",
                       *SMALL, "--out", str(d / "fast.pt"), "--json"])  # fmt: skip
    assert rc == 0
    return json.loads(buf.getvalue()), d


def test_a_reachable_speedup_gives_a_checkpoint_that_loads_and_runs_that_fast(speedup_run, yolov5n):
    from orchestrator.deploy.latency import SpeedupTimer
    from orchestrator.yolo.checkpoint import load_checkpoint

    report, d = speedup_run
    b = report["speedup_budget"]
    assert b["speedup"] >= 1.1 and b["table"]["timed_now"] > 0 and b["predicted_loss"] >= 0
    assert b["ratios"] or b["depth"]
    model = load_checkpoint(d / "fast.pt").model.eval()
    speedup, _ = SpeedupTimer(yolov5n, 128, 2, runs=30).time(model)
    assert speedup >= 1.1 * TOLERANCE, f"re-timed at {speedup:.3f}x"


def test_the_latency_table_is_read_back_without_timing(speedup_run, yolov5n, yolov5n_pt, monkeypatch):
    from orchestrator.deploy import latency
    from orchestrator.prune import prunable_groups

    report, d = speedup_run
    timer = latency.SpeedupTimer(yolov5n, 128, 2, runs=3)
    monkeypatch.setattr(latency.SpeedupTimer, "saved_ms", lambda *_: pytest.fail("timed a cached cut"))
    groups = list(prunable_groups(yolov5n, "stage", method="structured"))
    t0 = time.perf_counter()
    table, timed = latency.cached_table(yolov5n_pt, yolov5n, timer, groups, [0.5], [], "stage", None, d / "cache")
    assert timed == 0 and time.perf_counter() - t0 < 1.0
    assert table.key == report["speedup_budget"]["table"]["key"] and set(table.channel) >= {"neck", "backbone.P4"}


def test_an_unreachable_speedup_is_one_line_naming_the_flag(speedup_run, capsys, yolov5n_pt, coco128_yaml, monkeypatch):
    _, d = speedup_run
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(d / "cache"))  # the table is cached: only the ceiling is timed
    rc = main(["prune", "--weights", str(yolov5n_pt), "--data", str(coco128_yaml), "--target-speedup", "50", *SMALL,
               "--out", str(d / "never.pt")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --target-speedup 50 is unreachable") and not (d / "never.pt").exists()
