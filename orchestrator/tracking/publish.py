"""Finished trials handed to MLflow, and an MLflow outage waited out rather than fatal.

The Optuna storage is the source of truth: a trial MLflow has not taken yet stays pending here and is logged
when the tracker answers again, or by the next ``orchestrator run`` (it logs every finished trial it lacks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ..search import failure_reason
from ..study.spec import StudySpec
from ..urls import mask_url
from .tracker import Tracker, drop_staged, staging_dir

TRACKER_RETRY_S = 30.0


class TrackerSync:
    """Which finished trials MLflow still lacks, and whether it is down (then tried every ``TRACKER_RETRY_S``)."""

    def __init__(self, spec: StudySpec, study: Any, tracker: Tracker, say: Callable[[str], None]):
        self.spec, self.study, self.tracker, self.say = spec, study, tracker, say  # say: one line to the user
        self.pending: set[int] = set()  # finished trials MLflow has not taken yet
        self.down_since: float | None = None

    def add(self, numbers: Iterable[int]) -> None:
        self.pending.update(numbers)

    def sync(self, trials: list, front: list, baseline: dict[str, float], *, force: bool = False) -> None:
        """Log every pending trial, then the front (``front``: this batch's, computed once by the caller)."""
        if not self.pending:
            return
        if self.down_since is not None and not force and time.monotonic() - self.down_since < TRACKER_RETRY_S:
            return
        try:
            self._log_pending(trials, front)
            self.tracker.refresh_front(trials, baseline, force=force)
            if self.down_since is not None:
                self.say("MLflow answers again: caught up")
            self.down_since = None
        except Exception as e:
            self.failed(e)

    def _log_pending(self, trials: list, front: list) -> None:
        policy = self.spec.tracking.artifacts
        on_front = {t.number for t in front} if policy == "pareto" else set()
        by_number = {t.number: t for t in trials}
        attrs = self.study.user_attrs
        for n in sorted(self.pending):
            t = by_number.get(n)
            if t is None or not t.state.is_finished():
                continue
            folder = staging_dir(self.spec) / f"trial-{n:04d}"
            keep = policy == "all" or (policy == "pareto" and n in on_front)
            self.tracker.log_trial(t, folder if folder.is_dir() else None, keep, failure_reason(t, attrs))
            drop_staged(folder)
            self.pending.discard(n)
        for n in self.tracker.lost:
            self.say(f"trial {n}: its checkpoint is gone (not staged, not in the artifact folder): logged without")
        self.tracker.lost.clear()

    def failed(self, e: Exception) -> None:
        """Note an MLflow failure; said once per outage, with the URL's password masked."""
        first = self.down_since is None
        self.down_since = time.monotonic()
        if first:
            spec = self.spec
            why = mask_url(str(e), spec.tracking.uri, spec.storage).splitlines()[0][:120] if str(e) else ""
            self.say(
                f"MLflow at {mask_url(spec.tracking.uri)} failed ({type(e).__name__}: "
                f"{why}); results are safe in the Optuna "
                f"storage and are logged when it answers again, or by the next `orchestrator run {spec.path}`"
            )
