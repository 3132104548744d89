"""What the prune commands share: writing the pruned checkpoint, progress on stderr, the scan arguments.

Kept apart from ``prune.py`` so the commands it dispatches to (``prune_depth``, ``prune_speedup``) import these
without importing it back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PruningError


def save_pruned(args: argparse.Namespace, model, out: Path, meta: dict) -> bool:
    """Write ``model`` in the layout ``--official`` asks for; with ``--json`` print the report and return True."""
    if args.official:
        from ..yolo.official_layout import save_official

        save_official(model, out)
    else:
        from ..yolo.checkpoint import save_checkpoint

        save_checkpoint(model, out, meta=meta)
    if args.json:
        print(json.dumps({"out": str(out), "layout": "official" if args.official else "orchestrator", **meta}))
        return True
    return False


class Stages:
    """Progress on stderr while the scan (minutes) and the recovery (seconds) run; only on a terminal, so
    pipes, logs and one-line errors stay clean."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not console.is_terminal, transient=True,
        )  # fmt: skip
        self.scan_task: int | None = None
        self.table_task: int | None = None

    def __enter__(self) -> Stages:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def scan_point(self, done: int, total: int) -> None:
        if self.scan_task is None:
            self.scan_task = self.progress.add_task("sensitivity scan (cut, compensate, val)", total=total)
        self.progress.update(self.scan_task, completed=done)

    def table_point(self, done: int, total: int) -> None:
        if self.table_task is None:
            self.table_task = self.progress.add_task("latency table (cut, export, time in ORT)", total=total)
        self.progress.update(self.table_task, completed=done)

    def recovery(self, images: int, steps) -> None:
        what = " + ".join(steps) if steps else "no recovery"
        self.progress.add_task(f"cut + {what} on {images} train images", total=None)


def previous_scan(path: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PruningError(f"--scan-from: cannot read {path} ({e.__class__.__name__})") from None
    budget = doc.get("budget") if isinstance(doc, dict) else None
    if not isinstance(budget, dict):
        raise PruningError(f"--scan-from: {path} has no 'budget' (write it with prune --target-gflops --json)")
    return budget


def parse_scan_ratios(text: str) -> list[float]:
    from ..prune.layers import check_ratio

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PruningError(f"--scan-ratios must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise PruningError(f"--scan-ratios must be ratios in (0, 1), got {text!r}")
    return sorted(check_ratio("--scan-ratios", v) for v in values)
