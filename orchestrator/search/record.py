"""The study record: every key the driver writes into the Optuna storage, and every reader of it.

The storage is the source of truth for everything a trial produced (metrics, history, failure reason, where
it came from, its sealed held-out figures), so the storage alone rebuilds the MLflow view of a study after a
crash. Keys live here and nowhere else: a writer or a reader elsewhere names a constant of this module.
"""

from __future__ import annotations

import json
from typing import Any

from ..study.dimensions import DIMENSIONS, trial_ratios

# trial user attributes (the storage is the source of truth for everything a trial produced)
ATTR_METRICS = "metrics"
ATTR_HISTORY = "history"
ATTR_FAILURE = "failure"
ATTR_DEVICE = "device"
ATTR_WORKER = "worker"
ATTR_WALL = "wall_s"
ATTR_BASELINE = "uniform_ratio"  # set on enqueued uniform baselines
ATTR_WARM_START = "warm_start"  # set on enqueued warm-start allocations: the target sparsity
ATTR_LEVER = "lever"  # set (with ATTR_WARM_START 0) on the unpruned model in a searched deploy form (levers.py)
ATTR_RETRY_OF = "retry_of"
ATTR_INTENDED = "intended"  # set on enqueued trials: their parameters, complete even before they are asked
# set on a trial the one-shot screen stopped before fine-tuning: the one-line reason. Such a trial is told COMPLETE
# with its one-shot values and SCREEN_CONSTRAINT violated (> 0): Optuna's TPE reads COMPLETE and PRUNED trials only
# (FAIL is invisible to it) and ranks infeasible ones by how far they miss, below every feasible one, so the
# sampler learns where the dead cuts are; search.feasible keeps them off the front and out of the hypervolume.
ATTR_SCREENED = "screened"
# the absolute ratio map a trial ran, set when its parameters are not ratios (sampler.space: relative) and on the
# relative space's enqueued uniform baselines (their exact map): status, MLflow and the exports read it
ATTR_RATIOS = "ratios"
SCREEN_CONSTRAINT = "screen: one-shot map50_95 >= floor"  # its value: floor - one-shot mAP50-95 (> 0: screened)
# set (with ATTR_SCREENED, its reason) on a trial early stopping ended: the epoch after which it stopped. Every
# COMPLETE trial of a study with early_stop has STOP_CONSTRAINT: 0, or how far the stopped one trailed (> 0)
ATTR_STOPPED_EPOCH = "stopped_epoch"
STOP_CONSTRAINT = "early stop: map50_95 within margin of cheaper trials epoch by epoch"
# study user attributes
STUDY_BASELINE = "baseline"  # the unpruned model's groups + metrics
STUDY_SPEC = "study_file"
STUDY_IDENTITY = "identity"  # {"uid", "created"}: set once at creation; MLflow's parent run records it
STUDY_ORPHAN_FAILURES = "orphan_failures"  # {trial number: reason} for trials failed after their driver died


ATTR_ATTEMPT = "attempt"  # set when a trial ran again after its worker died
ATTR_TEST = "test_metrics"  # sealed held-out figures {"test_map50_95": .., "test_map50": .., "test_images": ..}
STUDY_OBJECTIVES = "objectives"  # the objectives' metric names, checked on resume
STUDY_BASELINES_ENQUEUED = "baselines_enqueued"
STUDY_WARM_START_ENQUEUED = "warm_start_enqueued"
STUDY_LEVERS_ENQUEUED = "levers_enqueued"
STUDY_LEASE = "driver"  # the running driver's lease (sweep/lease.py)
STUDY_ALLOCATIONS = "allocations"  # relative space: {"levels": [...], "maps": [{group: ratio}, ...]} (relative.py)


def origin(t) -> str:
    """Who proposed a trial: ``uniform 0.3`` (a baseline), ``warm 0.3`` (the warm start), ``lever int8 @ 288`` (the
    unpruned model in a deploy form) or ``sampler``."""
    if t.user_attrs.get(ATTR_LEVER):
        return f"lever {t.user_attrs[ATTR_LEVER]}"
    if t.user_attrs.get(ATTR_BASELINE) is not None:
        return f"uniform {t.user_attrs[ATTR_BASELINE]:g}"
    if t.user_attrs.get(ATTR_WARM_START) is not None:
        return f"warm {t.user_attrs[ATTR_WARM_START]:g}"
    return "sampler"


def is_uniform(t) -> bool:
    """A uniform baseline (one ratio everywhere), enqueued by the driver."""
    return t.user_attrs.get(ATTR_BASELINE) is not None


def ratios_of(t) -> dict[str, float]:
    """The absolute ratio map a trial ran: recorded (relative space) or its ``ratio.*`` parameters."""
    return dict(t.user_attrs.get(ATTR_RATIOS) or trial_ratios(t.params))


def is_screened(t) -> bool:
    """Stopped by the one-shot screen before fine-tuning, or by early stopping during it (never on the front; not
    counted toward n_trials)."""
    return bool(t.user_attrs.get(ATTR_SCREENED))


def state_of(t) -> str:
    """Optuna's state name, or ``SCREENED``/``STOPPED`` for a trial the one-shot screen or early stopping ended
    (told COMPLETE to Optuna)."""
    if not is_screened(t):
        return t.state.name
    return "STOPPED" if t.user_attrs.get(ATTR_STOPPED_EPOCH) else "SCREENED"


def learning_curves(trials: list, costs: tuple[str, ...]) -> list[tuple[int, tuple[float, ...], tuple[float, ...]]]:
    """(number, its ``costs`` metrics, best mAP50-95 so far after each epoch) of every trial that ran its whole
    fine-tune: what early stopping judges a new trial against."""
    out = []
    for t in trials:
        history, metrics = t.user_attrs.get(ATTR_HISTORY) or [], metrics_of(t)
        if t.state.name != "COMPLETE" or is_screened(t) or not history or not all(c in metrics for c in costs):
            continue
        best, curve = float("-inf"), []
        for rec in history:
            best = max(best, float(rec["map50_95"]))
            curve.append(best)
        out.append((t.number, tuple(float(metrics[c]) for c in costs), tuple(curve)))
    return out


def is_warm_start(t) -> bool:
    return t.user_attrs.get(ATTR_WARM_START) is not None


def metrics_of(t) -> dict[str, float]:
    """What a finished trial measured (empty for a failed one)."""
    return t.user_attrs.get(ATTR_METRICS) or {}


def sealed_test(t) -> dict[str, float]:
    """A trial's held-out figures as sealed; only :func:`orchestrator.search.holdout.revealed` should hand them out."""
    return t.user_attrs.get(ATTR_TEST) or {}


def intended_params(t) -> dict[str, Any]:
    """An enqueued trial's full parameters (stored before it is asked), overlaid with what Optuna recorded."""
    return {**(t.user_attrs.get(ATTR_INTENDED) or {}), **t.params}


def failure_reason(t, study_attrs: dict[str, Any] | None = None) -> str:
    """Why a trial failed or was screened: its own attribute, or for a trial left RUNNING by a dead driver the
    study's record (Optuna has no public way to write to a trial another process asked; ``Study.tell`` takes a
    number)."""
    own = t.user_attrs.get(ATTR_FAILURE) or t.user_attrs.get(ATTR_SCREENED)
    if own:
        return own
    return ((study_attrs or {}).get(STUDY_ORPHAN_FAILURES) or {}).get(str(t.number), "")


def trial_summary(t, study_attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready record of one trial (status/pareto commands and the CSV); ``study_attrs`` for failure reasons."""
    return {
        "number": t.number,
        "state": state_of(t),
        "values": list(t.values) if t.values else None,
        "metrics": metrics_of(t),
        "uniform_ratio": t.user_attrs.get(ATTR_BASELINE),
        "warm_start": t.user_attrs.get(ATTR_WARM_START),
        "origin": origin(t),
        "dimensions": {name: t.params.get(name) for name in DIMENSIONS},  # None: not a parameter of the study
        "ratios": ratios_of(t),
        "failure": failure_reason(t, study_attrs),
        "device": t.user_attrs.get(ATTR_DEVICE, ""),
        "wall_s": t.user_attrs.get(ATTR_WALL),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
