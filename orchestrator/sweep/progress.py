"""What a running study shows: a rich live view on a terminal, one line per event otherwise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..study.spec import StudySpec


@dataclass
class StudyProgress:
    spec: StudySpec
    target: int | None
    complete: int = 0
    failed: int = 0
    screened: int = 0  # stopped by the one-shot screen or early stopping: not complete, not failed
    running: list[int] = field(default_factory=list)
    front: list[dict] = field(default_factory=list)  # trial_summary() records
    hypervolume: float = 0.0
    events: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    slots: int = 1
    started: float = field(default_factory=time.monotonic)

    def eta_s(self) -> float | None:
        if not self.durations or self.target is None:
            return None
        left = max(0, self.target - self.complete)
        mean = sum(self.durations[-20:]) / len(self.durations[-20:])
        return left * mean / max(1, self.slots)

    def headline(self) -> str:
        target = f"/{self.target}" if self.target else ""
        eta = self.eta_s()
        screened = f" · {self.screened} screened" if self.screened else ""
        eta_text = f" · ETA {_dur(eta)}" if eta is not None and self.complete < (self.target or 0) else ""
        return (
            f"{self.spec.name}: {self.complete}{target} complete · {len(self.running)} running · "
            f"{self.failed} failed{screened} · hypervolume {self.hypervolume:.4f} · "
            f"{_dur(time.monotonic() - self.started)}"
            f"{eta_text}"
        )


class ProgressView:
    """A rich Live panel when the console is a terminal; plain lines (for logs and CI) otherwise."""

    def __init__(self, progress: StudyProgress, console=None, live: bool | None = None):
        from rich.console import Console

        self.p = progress
        self.console = console or Console(stderr=True)
        self.live_on = self.console.is_terminal if live is None else live
        self._live = None

    def __enter__(self) -> ProgressView:
        if self.live_on:
            from rich.live import Live

            self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def event(self, text: str) -> None:
        self.p.events.append(text)
        if self._live is None:
            self.console.print(text, highlight=False, soft_wrap=True)

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        p = self.p
        table = Table(title="current Pareto front", title_justify="left", expand=False)
        metrics = [o.metric for o in p.spec.objectives]
        for col in ["trial", *metrics, "origin"]:
            table.add_column(col, justify="right")
        for rec in p.front[:12]:
            m = rec["metrics"]
            table.add_row(str(rec["number"]), *[_fmt(m.get(k)) for k in metrics], rec["origin"])
        running = ", ".join(str(n) for n in sorted(p.running)) or "-"
        return Group(
            Text(p.headline(), style="bold"),
            Text(f"running trials: {running}"),
            table,
            *[Text(e, style="dim") for e in p.events[-5:]],
        )


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 100:
        return f"{v:.4g}"
    return f"{v:,.0f}" if isinstance(v, float | int) else str(v)


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
