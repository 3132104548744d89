"""The held-out test split: sealed per trial, revealed only for the chosen front and the uniform baselines.

The sweep picks its Pareto front on the val split, so the front's val mAP is optimistic (the best of many
tries on the same images). A data yaml's ``test:`` split gives an honest figure: each trial's fine-tuned
model is validated on it once, inside the trial (the model exists only there), and the result is kept in the
Optuna storage under ``record.ATTR_TEST``, never in the metrics the sampler, the front, the
constraints or the MLflow trial view read. Once a front is chosen, :func:`revealed` hands out the test
figures of its trials and of the uniform baselines; the driver logs them to their MLflow runs at the end of
the study, and ``status``/``pareto`` show them beside the val figures.
"""

from __future__ import annotations

from .front import pareto_front
from .record import is_uniform, metrics_of, sealed_test


def revealed(trials: list, directions: list[str]) -> dict[int, dict[str, float]]:
    """Trial number -> sealed test figures, for the Pareto trials and the uniform baselines only."""
    front = {t.number for t in pareto_front(trials, directions)}
    out: dict[int, dict[str, float]] = {}
    for t in trials:
        test = sealed_test(t)
        if test and t.state.name == "COMPLETE" and (t.number in front or is_uniform(t)):
            out[t.number] = {k: float(v) for k, v in test.items()}
    return out


def held_out_points(trials: list, directions: list[str], metric: str) -> list[tuple[float, float]]:
    """(``metric``, test mAP50-95) of each revealed trial: drawn beside its val point in the Pareto plots."""
    shown = revealed(trials, directions)
    points = []
    for t in trials:
        x = metrics_of(t).get(metric)
        if t.number in shown and x is not None and "test_map50_95" in shown[t.number]:
            points.append((float(x), shown[t.number]["test_map50_95"]))
    return points
