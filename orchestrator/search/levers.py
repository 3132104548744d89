"""The deploy levers alone: the unpruned model in every deployable form the study searches, enqueued once.

A study that searches ``quantize`` or ``imgsz`` can buy speed without cutting a channel: int8 at the base size,
the float model at a smaller input, int8 at a smaller input. Those points cost no search and are what a user
would try first, so they are enqueued beside the uniform baselines and the warm start and count as heuristic
points (tagged ``warm_start: 0`` and ``lever``): the sampler's front has to beat them, not an empty plot. Each
runs with no cut and the fewest fine-tune epochs the study allows (the lever alone: nothing learnt to make up
for it).
"""

from __future__ import annotations

import itertools
from typing import Any

from ..study.dimensions import DIMENSIONS
from ..study.spec import StudySpec
from .record import ATTR_INTENDED, ATTR_LEVER, ATTR_RATIOS, ATTR_WARM_START, STUDY_LEVERS_ENQUEUED
from .space import SearchSpace, baseline_values

LEVERS = ("quantize", "imgsz")  # the dimensions that change the deployed file without data


def lever_points(spec: StudySpec, space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """(label, dimension values) of every combination of the searched levers but the baselines' own."""
    base = baseline_values(spec)
    searched = [n for n in LEVERS if n in DIMENSIONS and not space.dimensions[n].fixed]
    if not searched:
        return []
    epochs = DIMENSIONS.get("epochs")
    fewest = {"epochs": epochs.value_of(space.dimensions["epochs"])} if epochs is not None else {}
    out = []
    for combo in itertools.product(*(space.dimensions[n].options for n in searched)):
        values = dict(zip(searched, combo))
        if all(values[n] == base[n] for n in searched):
            continue  # the unpruned model as the baselines run it: the reference every speed-up divides
        label = " @ ".join(str(values[n]) for n in searched)
        out.append((label, {**base, **fewest, **values}))
    return out


def enqueue_levers(spec: StudySpec, study, space: SearchSpace) -> int:
    """Enqueue :func:`lever_points` once per study (after the uniform baselines); how many were enqueued."""
    if study.user_attrs.get(STUDY_LEVERS_ENQUEUED):
        return 0
    points = lever_points(spec, space)
    unpruned = dict.fromkeys(space.ratios, 0.0)
    for label, values in points:
        params = space.enqueued_params(unpruned, values, level=0.0)
        attrs = {ATTR_WARM_START: 0.0, ATTR_LEVER: label, ATTR_INTENDED: params}
        if space.relative:
            attrs[ATTR_RATIOS] = unpruned
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    study.set_user_attr(STUDY_LEVERS_ENQUEUED, True)
    return len(points)
