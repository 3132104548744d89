"""A data-driven channel ranking for structured pruning: how much output error removing a channel causes.

Magnitude rankings (l1, l2, |gamma|) look at weights only. What a cut costs is what the consumers of
a channel stop receiving: for consumer conv ``W`` reading channel ``k``, removing ``k`` changes its output
by ``W[:, k] * x_k``; after compensation (the mean of ``x_k`` folded back in) what is left is about
``||W[:, k]||^2 * Var(x_k)``. Summed over every consumer of the coupled set (Torch-Pruning's group lists
them, including Concat slices and residual adds), that is the channel's score: low = cheap to remove.
The variances come from the unpruned model on calibration images (:func:`.recovery.input_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from .recovery import ChannelStats
from .structured import KeptChannels


class OutputErrorImportance:
    """Callable for :func:`.structured.prune_structured`: scores a full-index group's root channels.

    ``kept`` must be the dict passed as ``kept=`` to the same prune call: it maps the consumers' current
    input positions back to the unpruned channels the statistics were measured on.
    """

    name = "output_error"

    def __init__(self, model: nn.Module, stats: Mapping[str, ChannelStats], kept: Mapping[str, KeptChannels]):
        self.names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        self.stats, self.kept = stats, kept

    def __call__(self, group) -> torch.Tensor | None:
        dg = group._DG  # the graph that built the group: it knows which handlers cut input channels
        n = len(group[0].idxs)
        score = torch.zeros(n, dtype=torch.float64)
        found = False
        for item in group.items:
            mod = item.dep.target.module
            if (
                not isinstance(mod, nn.Conv2d)
                or mod not in self.names
                or not dg.is_in_channel_pruning_fn(item.dep.handler)
            ):
                continue
            name = self.names[mod]
            pos = torch.as_tensor(item.idxs, dtype=torch.long)
            orig = torch.as_tensor(self.kept[name].inp, dtype=torch.long)[pos]
            energy = mod.weight.detach().double()[:, pos].pow(2).sum((0, 2, 3))
            score.index_add_(
                0, torch.as_tensor(item.root_idxs, dtype=torch.long), energy * self.stats[name].var.double()[orig]
            )
            found = True
        return score if found else None
