"""The relative space: level + bounded offsets around the allocation at that level, translated into ratios."""

from __future__ import annotations

import pytest

from orchestrator.search import level_grid, relative_space
from orchestrator.study.dimensions import LEVEL, OFFSET_PREFIX

BOUNDS = {"a": (0.0, 0.8), "b": (0.0, 0.8), "c": (0.1, 0.3)}


def _space(offset: float = 0.15):
    levels = level_grid(BOUNDS, 0.05)
    maps = [{"a": lv / 2, "b": min(lv * 1.5, 0.8), "c": min(max(lv, 0.1), 0.3)} for lv in levels]
    return relative_space(maps, levels, BOUNDS, 0.05, offset)


def test_the_level_grid_spans_the_bounds_on_the_step():
    assert level_grid(BOUNDS, 0.05) == tuple(round(k * 0.05, 10) for k in range(17))
    assert len(level_grid({"a": (0.0, 0.5)}, None)) == 11


def test_offsets_zero_give_the_allocation_and_offsets_stay_in_bounds_on_the_grid():
    space = _space()
    zero = {LEVEL: 0.4, **{OFFSET_PREFIX + g: 0.0 for g in BOUNDS}}
    assert space.ratios(zero) == {"a": 0.2, "b": 0.6, "c": 0.3}
    far = {LEVEL: 0.4, OFFSET_PREFIX + "a": -0.15, OFFSET_PREFIX + "b": 0.15, OFFSET_PREFIX + "c": 0.15}
    assert space.ratios(far) == {"a": 0.05, "b": 0.75, "c": 0.3}  # c clipped to its own bound
    dists = space.distributions()
    assert dists[LEVEL].low == 0.0 and dists[LEVEL].high == 0.8 and dists[LEVEL].step == pytest.approx(0.05)
    assert dists[OFFSET_PREFIX + "a"].low == -0.15 and dists[OFFSET_PREFIX + "a"].high == 0.15


def test_enqueued_params_are_exact_for_an_allocation_and_nearest_for_a_uniform_map():
    space = _space()
    warm = space.params_for(0.4, {"a": 0.2, "b": 0.6, "c": 0.3})
    assert warm == {LEVEL: 0.4, **{OFFSET_PREFIX + g: 0.0 for g in BOUNDS}}
    uniform = space.params_for(0.4, dict.fromkeys(BOUNDS, 0.4))
    assert uniform[OFFSET_PREFIX + "a"] == 0.15 and uniform[OFFSET_PREFIX + "b"] == -0.15  # clipped: the nearest
    assert all(d.single() is False for d in space.distributions().values())
