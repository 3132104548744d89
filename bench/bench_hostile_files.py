"""How fast and in how much memory the CLI refuses the files that once exhausted RAM (issue 27's high cases).

Builds each hostile file the way tests/scenarios/test_hostile_files.py does (tests/hostile.py: a few KB each),
runs the real command in a fresh process under the same address-space limit as the test (``--repeat`` times),
and prints the median and worst wall time from process start (torch's import included), the peak RSS from
``wait4``, the exit code and the one line printed. Figures: docs/reliability.md.

    python bench/bench_hostile_files.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import ASSETS, REPO

sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "scenarios")]

from hostile import checkpoint_with_yaml, onnx_two_million_rows  # noqa: E402
from test_hostile_files import CHECKPOINTS, ONNX, run_limited  # noqa: E402

from orchestrator.yolo.checkpoint import load_model, save_checkpoint  # noqa: E402


def cases(folder: Path) -> list[tuple[str, list[str]]]:
    """(name, argv): the issue's two high cases (a 2,000,000-row ONNX in val; a checkpoint's layer table edited)
    and the other tables that once asked for 5-770 GB."""
    ours = save_checkpoint(load_model(ASSETS / "yolov5n.pt"), folder / "yolov5n.pt")
    out = [("val: ONNX with 2,000,000 output rows", _val(onnx_two_million_rows(folder / "rows.onnx")))]
    for name, (edit, _) in CHECKPOINTS.items():
        bad = checkpoint_with_yaml(ours, folder / f"{name}.pt", edit)
        out.append((f"layers: checkpoint {name}", ["layers", "--weights", str(bad), "--granularity", "stage"]))
    for name, (make, _) in ONNX.items():
        if make is not onnx_two_million_rows:
            out.append((f"val: ONNX {name}", _val(make(folder / f"{len(out)}.onnx"))))
    return out


def _val(onnx: Path) -> list[str]:
    return ["val", "--weights", str(onnx), "--data", str(ASSETS / "coco128.yaml"), "--imgsz", "64"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("| case | exit | median s | worst s | peak RSS MB | line |\n|---|---|---|---|---|---|")
        for name, argv in cases(folder):
            runs = [run_limited(argv, folder) for _ in range(args.repeat)]
            secs = [r.seconds for r in runs]
            line = runs[-1].err.strip().replace(str(folder) + "/", "")
            print(
                f"| {name} | {runs[-1].code} | {statistics.median(secs):.2f} | {max(secs):.2f} | "
                f"{max(r.peak_mb for r in runs):.0f} | {line[:110]} |"
            )


if __name__ == "__main__":
    main()
