"""The stopping rules a trial is asked under: the one-shot screen and per-epoch early stopping.

Both apply to the sampler's own trials only: the enqueued uniform baselines and warm starts run in full, since
they are the reference the searched front is measured against (and what early stopping compares with).
"""

from __future__ import annotations

from typing import Any

from ..search import is_uniform, is_warm_start, learning_curves
from ..study.metrics import QUALITY_METRICS
from ..study.spec import StudySpec
from ..trial.contract import EarlyStop, Reference


def stopping_rules(spec: StudySpec, trial: Any, study: Any, baseline: dict[str, float]) -> dict[str, Any]:
    """``TrialSpec`` keywords: ``screen`` (fraction, unpruned mAP50-95) and ``stop`` (the complete trials' learning
    curves as they stand now, read from ``study`` only when the study stops early), None where they do not apply."""
    if is_uniform(trial) or is_warm_start(trial):
        return {"screen": None, "stop": None}
    screen = (spec.screen.min_map, float(baseline["map50_95"])) if spec.screen.on else None
    stop = None
    if spec.early_stop.on:
        costs = tuple((o.metric, o.direction) for o in spec.objectives if o.metric not in QUALITY_METRICS)
        curves = learning_curves(study.get_trials(deepcopy=False), tuple(m for m, _ in costs))
        rule = spec.early_stop
        stop = EarlyStop(rule.margin or 0.0, rule.after, costs, tuple(Reference(*c) for c in curves))
    return {"screen": screen, "stop": stop}
