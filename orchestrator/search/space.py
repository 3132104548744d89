"""The search space as Optuna distributions, and the trials the driver enqueues (uniform baselines, warm starts)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..study.dimensions import DIMENSIONS, ratio_distributions, ratio_params, trial_ratios
from ..study.spec import StudySpec
from .record import (
    ATTR_BASELINE,
    ATTR_INTENDED,
    ATTR_RATIOS,
    ATTR_WARM_START,
    STUDY_BASELINES_ENQUEUED,
    STUDY_WARM_START_ENQUEUED,
)
from .relative import RelativeSpace


@dataclass(frozen=True)
class SearchSpace:
    """One ratio per group plus the declared dimensions; fixed values are not searched but still recorded."""

    ratios: dict[str, tuple[float, float]]  # group -> (low, high)
    step: float | None
    dimensions: dict[str, Any]  # dimension name -> its domain (spec.space)
    relative: RelativeSpace | None = None  # sampler.space: relative (set once the allocations are known)

    def distributions(self) -> dict[str, Any]:
        out = self.relative.distributions() if self.relative else ratio_distributions(self.ratios, self.step)
        for name, dim in DIMENSIONS.items():
            if dim.is_param(self.dimensions[name]):
                out[name] = dim.distribution(self.dimensions[name])
        return out

    def trial_ratios(self, params: dict[str, Any]) -> dict[str, float]:
        """The absolute ratios a trial's parameters stand for."""
        return self.relative.ratios(params) if self.relative else trial_ratios(params)

    def enqueued_params(self, ratios: dict[str, float], values: dict[str, Any], level: float = 0.0) -> dict[str, Any]:
        """A trial's parameters from its ratio map (at ``level`` in the relative space) and the dimensions' values
        (those that are parameters)."""
        params: dict[str, Any] = self.relative.params_for(level, ratios) if self.relative else ratio_params(ratios)
        params.update({k: v for k, v in values.items() if DIMENSIONS[k].is_param(self.dimensions[k])})
        return params


def build_space(spec: StudySpec, groups: list[str]) -> SearchSpace:
    """Apply global and per-group ratio bounds (first matching pattern wins) to the model's groups."""
    problems = []
    for gb in spec.pruning.groups:
        if not any(fnmatch.fnmatchcase(g, gb.pattern) for g in groups):
            problems.append((f"pruning.groups.{gb.pattern}", f"matches no group; the groups are: {', '.join(groups)}"))
    if problems:
        raise ConfigError(str(spec.path), problems)
    ratios = {}
    for g in groups:
        rng = next((gb.ratio for gb in spec.pruning.groups if fnmatch.fnmatchcase(g, gb.pattern)), spec.pruning.ratio)
        ratios[g] = (rng.low, rng.high)
    if not ratios:
        raise ConfigError(str(spec.path), [("pruning", "the model has no prunable group left: check exclude")])
    return SearchSpace(ratios, spec.pruning.step, dict(spec.space))


def baseline_values(spec: StudySpec) -> dict[str, Any]:
    """Every dimension's value for the enqueued trials: ``baselines.<name>`` if given, else the dimension's choice
    (the most fine-tuning a searched trial can get, the middle lr0, the deployable form the study is after)."""
    return {name: spec.baselines.values.get(name, dim.baseline(spec.space[name])) for name, dim in DIMENSIONS.items()}


def enqueue_baselines(spec: StudySpec, study, space: SearchSpace) -> int:
    """Enqueue the uniform baselines once per study (before any searched trial)."""
    if study.user_attrs.get(STUDY_BASELINES_ENQUEUED):
        return 0
    values = baseline_values(spec)
    for r in spec.baselines.ratios:
        ratios = dict.fromkeys(space.ratios, r)
        params = space.enqueued_params(ratios, values, level=r)
        attrs = {ATTR_BASELINE: r, ATTR_INTENDED: params, **({ATTR_RATIOS: ratios} if space.relative else {})}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    study.set_user_attr(STUDY_BASELINES_ENQUEUED, True)
    return len(spec.baselines.ratios)


def enqueue_warm_start(spec: StudySpec, study, space: SearchSpace, allocations: list[dict[str, float]]) -> int:
    """Enqueue the warm-start allocations (one per baseline ratio, same fine-tune budget) once per study."""
    if study.user_attrs.get(STUDY_WARM_START_ENQUEUED):
        return 0
    values = baseline_values(spec)
    for target, ratios in zip(spec.baselines.ratios, allocations):
        params = space.enqueued_params(ratios, values, level=target)
        attrs = {ATTR_WARM_START: target, ATTR_INTENDED: params, **({ATTR_RATIOS: ratios} if space.relative else {})}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    study.set_user_attr(STUDY_WARM_START_ENQUEUED, True)
    return len(allocations)
