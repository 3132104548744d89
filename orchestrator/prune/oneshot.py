"""A structured cut followed by one-shot recovery: what the CLI, the budget scan and the benchmark share."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch.nn as nn

from ..errors import PruningError
from ..vocabulary import DATA_IMPORTANCES
from ..vocabulary import IMPORTANCES as STRUCTURED_IMPORTANCES  # the data-driven ones included
from ..yolo.model import copy_model
from .activation_importance import OutputErrorImportance
from .apply import PruneReport, apply_ratios
from .calibration import CalibrationSet
from .recovery import RIDGE, ChannelStats, RecoveryReport, input_stats, recover
from .structured import KeptChannels


@dataclass(frozen=True)
class Recovered:
    """The pruned (and recovered) copy, what the cut did, what recovery did, and the seconds of each.

    ``kept``: per conv, which of the unpruned model's channels it still has (to line the two models up).
    """

    model: nn.Module
    prune: PruneReport
    recovery: RecoveryReport
    cut_seconds: float
    kept: Mapping[str, KeptChannels] = field(default_factory=dict)


class OneShot:
    """The unpruned model, its calibration images and statistics, measured once and reused for every cut."""

    def __init__(self, model: nn.Module, calib: CalibrationSet | None):
        self.model, self.calib = model.eval(), calib
        self._stats: dict[str, ChannelStats] | None = None

    @property
    def stats(self) -> dict[str, ChannelStats]:
        if self._stats is None:
            if self.calib is None:
                raise PruningError("this importance / recovery needs calibration images: give --data")
            self._stats = input_stats(self.model, self.calib)
        return self._stats

    def cut(
        self,
        ratios: Mapping[str, float],
        *,
        granularity: str = "block",
        importance: str = "l1",
        round_to: int | None = None,
        steps: Sequence[str] = (),
        ridge: float = RIDGE,
    ) -> Recovered:
        """A pruned copy by ``ratios`` (structured), recovered by ``steps``; the unpruned model is untouched."""
        if importance not in STRUCTURED_IMPORTANCES:
            raise PruningError(
                f"importance must be one of {', '.join(STRUCTURED_IMPORTANCES)} for structured pruning, "
                f"got {importance!r}"
            )
        if steps and self.calib is None:
            raise PruningError("recovery needs calibration images: give --data (or --recover none)")
        t0 = time.perf_counter()
        m, kept = copy_model(self.model), {}
        imp = OutputErrorImportance(m, self.stats, kept) if importance in DATA_IMPORTANCES else importance
        report = apply_ratios(
            m, ratios, method="structured", granularity=granularity, importance=imp, round_to=round_to, kept=kept
        )
        cut_s = time.perf_counter() - t0
        needs_stats = "compensate" in steps
        rec = recover(m, self.model, kept, self.calib, steps, stats=self.stats if needs_stats else None, ridge=ridge)
        return Recovered(m, report, rec, cut_s, kept)
