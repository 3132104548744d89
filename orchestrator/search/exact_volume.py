"""Exact hypervolume of a set of points (losses: lower is better) below a reference point.

Ours because Optuna's is private (``optuna._hypervolume``). Studies have a few objectives and at most a few
hundred trials, so slicing along the last objective (HSO: each slice is a hypervolume one dimension lower) is
exact and fast enough: 2 objectives are one sort, 3 are O(n^2 log n).
"""

from __future__ import annotations

import numpy as np


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """The volume dominated by ``points`` (n x d) and bounded by ``ref``; points not below ``ref`` add nothing."""
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    return _hso(pts, np.asarray(ref, dtype=float)) if len(pts) else 0.0


def _hso(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:  # one sweep: the staircase
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        volume, best_y = 0.0, ref[1]
        for x, y in pts[order]:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):  # slice between this point's last coordinate and the next one's (or ref)
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if top > pts[i, -1]:
            volume += _hso(pts[: i + 1, :-1], ref[:-1]) * (top - pts[i, -1])
    return float(volume)
