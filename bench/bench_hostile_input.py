"""How long `orchestrator check` takes to refuse hostile files (alias bombs, 10^6 classes, deep nesting).

Runs the real CLI in-process in a temporary folder, after its imports, 5 times per file; prints the median
and the worst time with the one line each refusal printed. Figures: docs/reliability.md.

    python bench/bench_hostile_input.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ASSETS

from orchestrator.cli import main

HEAD = "path: tiny\ntrain: images/train\nval: images/val\n"


def bomb(levels: int = 9, fan: int = 10) -> str:
    """A few hundred bytes of YAML that expand to fan**levels values for whoever walks them."""
    lines = [f"l0: &l0 [{', '.join(['x'] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import orchestrator.study.checks
    import orchestrator.yolo.data  # noqa: F401 (imports are not what is measured)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        good = {"name": "h", "model": str(ASSETS / "yolov5n.pt"), "data": str(d / "data.yaml"), "imgsz": 64}
        good_text = yaml.safe_dump(good)
        (d / "good.yaml").write_text(good_text)
        cases = {
            "study file: alias bomb under fake: (10^9 values)": (
                "bad.yaml",
                good_text + "fake:\n" + "".join(f"  {line}\n" for line in bomb().splitlines()),
            ),
            "study file: 10,000 nested [": ("bad.yaml", "[" * 10_000),
            "data yaml: 10^6 class names (2 MB)": ("data.yaml", HEAD + "names: [" + ",".join(["a"] * 10**6) + "]\n"),
            "data yaml: nc: 1000000": ("data.yaml", HEAD + "nc: 1000000\n"),
            "data yaml: alias bomb as names": ("data.yaml", HEAD + bomb() + "names: *l8\n"),
        }
        for name, (file, text) in cases.items():
            (d / file).write_text(text)
            study = d / ("bad.yaml" if file == "bad.yaml" else "good.yaml")
            times, err = [], io.StringIO()
            for _ in range(args.repeat):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    t0 = time.perf_counter()
                    code = main(["check", str(study)])
                    times.append(time.perf_counter() - t0)
            line = err.getvalue().strip().replace(str(d) + "/", "")
            print(
                f"{name}: exit {code}, median {statistics.median(times) * 1000:.0f} ms, "
                f"worst {max(times) * 1000:.0f} ms: {line}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main_()
