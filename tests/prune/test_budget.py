"""Budget allocation on a made-up sensitivity table: cheap groups are cut first, the real GFLOPs decide."""

from __future__ import annotations

import pytest

from orchestrator.errors import PruningError, UnreachableTarget
from orchestrator.prune.budget import allocate, scan

# group -> (mAP lost per unit ratio, GFLOPs saved per unit ratio); base 1.0 GFLOPs, score 0.3
GROUPS = {"stem": (0.5, 0.1), "wide": (0.02, 0.8), "mid": (0.1, 0.4)}


def _evaluate(ratios):
    score, gflops = 0.3, 1.0
    for g, r in ratios.items():
        score -= GROUPS[g][0] * r
        gflops -= GROUPS[g][1] * r
    return score, gflops


def _real_gflops(ratios):
    return _evaluate(ratios)[1] + 0.01 * len(ratios)  # overlapping savings: reality saves a little less


def test_scan_then_allocate_cuts_the_cheap_wide_group_first():
    sens = scan(list(GROUPS), [0.25, 0.5], _evaluate)
    assert sens.base_gflops == 1.0 and len(sens.points) == 6
    alloc = allocate(sens, 0.7, _real_gflops)
    assert alloc.gflops_fraction <= 0.7 and _real_gflops(alloc.ratios) == pytest.approx(alloc.gflops_fraction)
    assert alloc.ratios["wide"] == 0.4 and "stem" not in alloc.ratios
    assert alloc.predicted_loss == pytest.approx(0.02 * 0.4)


def test_target_one_cuts_nothing_and_unreachable_targets_name_the_flag():
    sens = scan(list(GROUPS), [0.25, 0.5], _evaluate)
    assert allocate(sens, 1.0, _real_gflops).ratios == {}
    with pytest.raises(UnreachableTarget, match="--target-gflops 0.3 is unreachable"):
        allocate(sens, 0.3, _real_gflops)
    for bad in (0.0, 1.2):
        with pytest.raises(PruningError, match=r"--target-gflops must be in \(0, 1\]"):
            allocate(sens, bad, _real_gflops)
