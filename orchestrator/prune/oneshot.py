"""A structured cut (after a depth cut, when asked) followed by one-shot recovery: what the CLI, the budget scan,
the trials and the benchmarks share."""

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
from .depth import BottleneckRank, DepthCut, Shallower, drop_depth, rank_bottlenecks, shallower, without_dropped
from .recovery import RIDGE, ChannelStats, RecoveryReport, input_stats, original_names, recover
from .structured import KeptChannels


@dataclass(frozen=True)
class Recovered:
    """The pruned (and recovered) copy, what the cut did, what recovery did, and the seconds of each.

    ``kept``: per conv, which of the unpruned model's channels it still has (to line the two models up);
    ``depth``: the bottlenecks dropped before the channel cut.
    """

    model: nn.Module
    prune: PruneReport
    recovery: RecoveryReport
    cut_seconds: float
    kept: Mapping[str, KeptChannels] = field(default_factory=dict)
    depth: DepthCut = field(default_factory=DepthCut)


class OneShot:
    """The unpruned model, its calibration images and statistics, measured once and reused for every cut."""

    def __init__(self, model: nn.Module, calib: CalibrationSet | None):
        self.model, self.calib = model.eval(), calib
        self._stats: dict[str, ChannelStats] | None = None
        self._ranking: list[BottleneckRank] | None = None

    @property
    def ranking(self) -> list[BottleneckRank]:
        """The unpruned model's bottlenecks, least missed first (what a depth cut drops by)."""
        if self._ranking is None:
            if self.calib is None:
                raise PruningError("a depth cut ranks bottlenecks on calibration images: give --data")
            self._ranking = rank_bottlenecks(self.model, self.calib)
        return self._ranking

    def shallower(self, depth: int, what: str = "pruning.depth") -> Shallower:
        """A copy without the ``depth`` least missed bottlenecks, its layers after them refit (``reconstruct``)."""
        return shallower(self.model, depth, self.calib, ("reconstruct",), what, self.ranking if depth else None)

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
        depth: int = 0,
    ) -> Recovered:
        """A pruned copy by ``ratios`` (structured), recovered by ``steps``; the unpruned model is untouched.

        ``depth``: that many of the least missed bottlenecks are dropped first; recovery then refits against the
        unpruned model, ``reconstruct`` included whatever ``steps`` say (it is what restores a dropped block).
        """
        if importance not in STRUCTURED_IMPORTANCES:
            raise PruningError(
                f"importance must be one of {', '.join(STRUCTURED_IMPORTANCES)} for structured pruning, "
                f"got {importance!r}"
            )
        if steps and self.calib is None:
            raise PruningError("recovery needs calibration images: give --data (or --recover none)")
        t0 = time.perf_counter()
        m, kept = copy_model(self.model), {}
        dcut = drop_depth(m, depth, self.ranking, "pruning.depth") if depth else DepthCut()
        if dcut.dropped:
            steps = tuple(dict.fromkeys([*steps, "reconstruct"]))
            ratios = without_dropped(m, ratios, granularity, "structured")
        if importance in DATA_IMPORTANCES:
            names = original_names(m, dcut.renamed)  # statistics were measured on the unpruned model
            imp = OutputErrorImportance(m, {n: self.stats[o] for n, o in names.items()}, kept)
        else:
            imp = importance
        report = apply_ratios(
            m, ratios, method="structured", granularity=granularity, importance=imp, round_to=round_to, kept=kept
        )
        cut_s = time.perf_counter() - t0
        needs_stats = "compensate" in steps
        rec = recover(
            m, self.model, kept, self.calib, steps, stats=self.stats if needs_stats else None, ridge=ridge,
            renamed=dcut.renamed,
        )  # fmt: skip
        return Recovered(m, report, rec, cut_s, kept, dcut)
