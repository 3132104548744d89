"""``--cache`` and ``--cache-budget-gb``: where decoded images live, shared by the commands that read a dataset."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import OrchestratorError
from ..vocabulary import CACHE_MODES


def add_cache_args(p: argparse.ArgumentParser) -> None:
    """The two flags, with the defaults a study file has (``cache: {mode: auto, budget_gb: 2}``)."""
    p.add_argument(
        "--cache", choices=CACHE_MODES, default="auto",
        help="decoded images: auto (in RAM when the split fits the budget, else read from disk batch by batch), "
        "ram (RAM up to the budget), disk (.npy files in the cache folder), none (default auto)",
    )  # fmt: skip
    p.add_argument(
        "--cache-budget-gb", type=float, default=2.0, help="RAM for decoded images per split, in GB (default 2)"
    )


def cache_settings(args: argparse.Namespace) -> Any:
    """The flags as a ``yolo.image_cache.CacheSettings``; a bad budget is one line naming the flag."""
    if not args.cache_budget_gb >= 0:
        raise OrchestratorError(f"--cache-budget-gb: expected >= 0, got {args.cache_budget_gb}")
    from ..yolo.image_cache import CacheSettings

    return CacheSettings(args.cache, args.cache_budget_gb)
