"""One finished trial written into the Optuna storage, the source of truth every reader (status, MLflow, resume)
goes back to; the keys are :mod:`orchestrator.search.record`'s, so no reader has to know how they were written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..search import (
    ATTR_ATTEMPT,
    ATTR_DEVICE,
    ATTR_FAILURE,
    ATTR_HISTORY,
    ATTR_METRICS,
    ATTR_SCREENED,
    ATTR_STOPPED_EPOCH,
    ATTR_TEST,
    ATTR_WALL,
    ATTR_WORKER,
    SCREEN_CONSTRAINT,
    STOP_CONSTRAINT,
    objective_values,
)
from ..study.metrics import ONESHOT
from ..study.spec import StudySpec
from ..tracking.tracker import staging_dir
from ..trial.contract import TrialResult


def record_run(trial: Any, r: TrialResult) -> None:
    """Where and how long the trial ran, kept for failed trials too (a slow or dying worker shows in status)."""
    trial.set_user_attr(ATTR_DEVICE, r.device)
    trial.set_user_attr(ATTR_WORKER, r.worker)
    trial.set_user_attr(ATTR_WALL, round(r.wall_s, 3))
    if r.attempt:
        trial.set_user_attr(ATTR_ATTEMPT, r.attempt)  # retried once after its worker died


def checked_values(spec: StudySpec, r: TrialResult) -> tuple[list[float] | None, str]:
    """The objective values of a result the worker called good, or None and why it is not: a missing or
    non-finite objective would poison the sampler and the front."""
    if not r.ok:
        return None, r.failure
    try:
        values = objective_values(spec, r.metrics)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"non-finite objective values {values}")
    except (KeyError, ValueError) as e:
        return None, f"bad result: {e}"
    return values, ""


def record_success(trial: Any, r: TrialResult, spec: StudySpec, baseline: dict[str, float]) -> None:
    """A good result's metrics, history, sealed test figures and constraint violations (before ``study.tell``)."""
    trial.set_user_attr(ATTR_METRICS, r.metrics)
    trial.set_user_attr(ATTR_HISTORY, r.history)
    if r.test:
        trial.set_user_attr(ATTR_TEST, r.test)  # sealed: no selection reads it (holdout.py)
    violations = [c.violation(r.metrics, baseline) for c in spec.constraints]  # all of them, or none is set
    for c, v in zip(spec.constraints, violations):
        trial.set_constraint(c.text, v)  # read by the samplers and by search.feasible
    if spec.screen.on:  # every COMPLETE trial of a screening study has the screen's constraint, met here
        trial.set_constraint(SCREEN_CONSTRAINT, _screen_margin(spec, r.metrics.get(ONESHOT), baseline, met=True))
    if spec.early_stop.on:  # likewise early stopping's
        trial.set_constraint(STOP_CONSTRAINT, 0.0)


def screened_values(spec: StudySpec, r: TrialResult, baseline: dict[str, float]) -> list[float]:
    """The objective values a screened trial is told with: its one-shot figures; an objective the screen does not
    measure (latency, file size) takes the unpruned model's figure. Never read as a result: the trial is infeasible."""
    return [float(r.metrics.get(o.metric, baseline.get(o.metric, 0.0))) for o in spec.objectives]


def record_screened(trial: Any, r: TrialResult, spec: StudySpec, baseline: dict[str, float]) -> None:
    """A trial the screen or early stopping ended: its figures, the reason, and its stopping rule's constraint
    violated by how far it missed (TPE ranks infeasible trials by it), plus the study's own constraints where
    measured. A trial stopped after epoch k passed the screen (met) and keeps its epochs' history."""
    trial.set_user_attr(ATTR_METRICS, r.metrics)
    trial.set_user_attr(ATTR_SCREENED, r.reason)
    for c in spec.constraints:
        trial.set_constraint(c.text, c.violation(r.metrics, baseline) if c.metric in r.metrics else 0.0)
    if r.stopped_epoch:
        trial.set_user_attr(ATTR_STOPPED_EPOCH, r.stopped_epoch)
        trial.set_user_attr(ATTR_HISTORY, r.history)
        trial.set_constraint(STOP_CONSTRAINT, max(r.stop_gap, 1e-9))
    elif spec.early_stop.on:
        trial.set_constraint(STOP_CONSTRAINT, 0.0)
    if spec.screen.on or not r.stopped_epoch:
        oneshot = r.metrics.get(ONESHOT) if r.stopped_epoch else r.metrics.get("map50_95")
        trial.set_constraint(SCREEN_CONSTRAINT, _screen_margin(spec, oneshot, baseline, met=bool(r.stopped_epoch)))


def _screen_margin(spec: StudySpec, oneshot: float | None, baseline: dict[str, float], *, met: bool) -> float:
    """floor - one-shot mAP50-95: > 0 for a screened trial, <= 0 for one that passed (0 when not measured)."""
    if oneshot is None:
        return 0.0
    margin = spec.screen.min_map * baseline.get("map50_95", 0.0) - float(oneshot)
    return min(margin, 0.0) if met else max(margin, 1e-9)


def record_failure(trial: Any, reason: str) -> None:
    """Why the trial failed, for status and MLflow (before ``study.tell`` with FAIL)."""
    trial.set_user_attr(ATTR_FAILURE, reason)


def stage_files(spec: StudySpec, r: TrialResult) -> Path | None:
    """Keep a result's files on disk until MLflow has them: the tracker may be down when the trial ends."""
    if not r.files:
        return None
    folder = staging_dir(spec) / f"trial-{r.number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in r.files.items():
        (folder / name).write_bytes(data)
    return folder
