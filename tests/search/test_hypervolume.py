"""Our exact hypervolume (Optuna's is private) on fronts whose volume is known by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from orchestrator.search.exact_volume import hypervolume


def test_known_volumes():
    ref2, ref3 = np.array([1.0, 1.0]), np.array([1.0, 1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5]]), ref2) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0]]), ref2) == pytest.approx(0.75)
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0], [0.6, 0.6]]), ref2) == pytest.approx(0.75)  # dominated
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), ref3) == pytest.approx(0.125)
    # two boxes overlapping in [0.5,1]^3: 0.5 + 0.5 - 0.25*0.5
    assert hypervolume(np.array([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]), ref3) == pytest.approx(0.75)
    assert hypervolume(np.array([[1.0, 0.0], [2.0, -1.0]]), ref2) == 0.0  # not below the reference
    assert hypervolume(np.zeros((0, 2)), ref2) == 0.0


def test_matches_inclusion_exclusion_on_random_fronts():
    rng = np.random.default_rng(0)
    for d in (2, 3, 4):
        pts, ref = rng.random((6, d)), np.ones(d)
        exact = 0.0  # the union of boxes [p, ref] by inclusion-exclusion over every subset
        for k in range(1, len(pts) + 1):
            for subset in itertools.combinations(pts, k):
                exact += (-1) ** (k + 1) * np.prod(ref - np.max(subset, axis=0))
        assert hypervolume(pts, ref) == pytest.approx(exact, abs=1e-12)
