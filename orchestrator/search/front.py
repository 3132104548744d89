"""The Pareto front of a study, its hypervolume (each objective as a fraction of the unpruned model), and the
searched trials against the uniform baselines."""

from __future__ import annotations

from typing import Any

from ..study.spec import StudySpec
from .record import is_uniform, is_warm_start


def objective_values(spec: StudySpec, metrics: dict[str, float]) -> list[float]:
    return [float(metrics[o.metric]) for o in spec.objectives]


def feasible(trial) -> bool:
    """Every constraint the driver set (``Trial.set_constraint``; Optuna also reads the list earlier studies
    stored through ``constraints_func``) is met."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_front(trials: list, directions: list[str]) -> list:
    """The non-dominated COMPLETE, feasible trials (small n: a plain pairwise check)."""
    pts = [(t, _as_loss(t.values, directions)) for t in trials if _complete(t) and feasible(t)]
    front = []
    for t, a in pts:
        if not any(_dominates(b, a) for _, b in pts):
            front.append(t)
    return front


def hypervolume(trials: list, spec: StudySpec, baseline: dict[str, float]) -> float:
    """Hypervolume of the trials' front, each objective as a fraction of the unpruned baseline.

    Reference point: the baseline's cost for cost objectives (1.0) and zero quality for quality
    objectives, so the value reads "quality kept x cost saved" and compares searched vs uniform runs.
    """
    import numpy as np

    from .exact_volume import hypervolume as exact_hypervolume

    pts = [normalized_loss(t.values, spec, baseline) for t in trials if _complete(t) and feasible(t)]
    if not pts:
        return 0.0
    ref = np.array([0.0 if o.direction == "maximize" else 1.0 for o in spec.objectives])
    return exact_hypervolume(np.array(pts, dtype=float), ref)


def normalized_loss(values: list[float], spec: StudySpec, baseline: dict[str, float]) -> list[float]:
    out = []
    for v, o in zip(values, spec.objectives):
        base = baseline.get(o.metric) or 1.0
        out.append(-v / base if o.direction == "maximize" else v / base)
    return out


def hypervolume_history(trials: list, spec: StudySpec, baseline: dict[str, float]) -> list[tuple[int, float]]:
    """Hypervolume after each finished trial, in trial-number order."""
    done = sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number)
    out, seen = [], []
    for t in done:
        seen.append(t)
        out.append((t.number, hypervolume(seen, spec, baseline)))
    return out


def versus_uniform(trials: list, spec: StudySpec, baseline: dict[str, float]) -> dict[str, Any]:
    """Searched trials against the uniform baselines: each side's hypervolume, and who dominates them.

    "Searched" is every trial that is not a uniform baseline (warm-start allocations included); the
    ``*_sampled`` entries count only the trials the sampler proposed itself.
    """
    done = [t for t in trials if _complete(t) and feasible(t)]
    uniform = [t for t in done if is_uniform(t)]
    searched = [t for t in done if not is_uniform(t)]
    sampled = [t for t in searched if not is_warm_start(t)]
    hv_u, hv_s = hypervolume(uniform, spec, baseline), hypervolume(searched, spec, baseline)
    losses = {t.number: _as_loss(t.values, spec.directions) for t in done}
    dominating = [
        s.number for s in searched if uniform and all(_dominates(losses[s.number], losses[u.number]) for u in uniform)
    ]
    return {
        "hypervolume_searched": hv_s,
        "hypervolume_uniform": hv_u,
        "ratio": hv_s / hv_u if hv_u > 0 else None,
        "dominate_every_uniform": dominating,
        # uniform trial -> the searched trials that dominate it
        "uniform_dominated_by": {
            u.number: [s.number for s in searched if _dominates(losses[s.number], losses[u.number])] for u in uniform
        },
        "hypervolume_sampled": hypervolume(sampled, spec, baseline),
        "uniform_dominated_by_sampled": {
            u.number: [s.number for s in sampled if _dominates(losses[s.number], losses[u.number])] for u in uniform
        },
    }


def _complete(t) -> bool:
    return t.state.name == "COMPLETE" and t.values is not None


def _as_loss(values, directions: list[str]) -> tuple[float, ...]:
    return tuple(-v if d == "maximize" else v for v, d in zip(values, directions))


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
