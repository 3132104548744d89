"""Turn a ratio map into a pruned model, and report what changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import PruningError
from ..vocabulary import STRUCTURED_IMPORTANCES
from ..yolo.masks import conv_sparsity as conv_sparsity  # one implementation (masks applied), re-exported
from .layers import conv_ratios, prunable_groups
from .structured import prune_structured
from .unstructured import make_permanent, prune_global, prune_unstructured


@dataclass(frozen=True)
class PruneReport:
    """What :func:`apply_ratios` did.

    ``sparsity`` is the zero fraction of all conv weights (the prunable ones); ``channels`` maps the first
    conv of each structurally cut set to (channels before, after).
    """

    method: str
    granularity: str
    importance: str
    ratios: dict[str, float]
    params_before: int
    params_after: int
    sparsity: float
    round_to: int | None = None
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = {k: list(v) for k, v in self.channels.items()}
        d["params_ratio"] = self.params_ratio
        return d


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def uniform_ratios(
    model: nn.Module, ratio: float, granularity: str = "layer", *, method: str = "unstructured"
) -> dict[str, float]:
    """The same ratio for every group: with ``method="unstructured"`` this is the official guide's
    ``prune(model, ratio)`` (L1 on every Conv2d, Detect's output convs included), done before fusion."""
    return {k: float(ratio) for k in prunable_groups(model, granularity, method=method)}


def apply_ratios(
    model: nn.Module,
    ratios: Mapping[str, float],
    *,
    method: str = "unstructured",
    granularity: str = "layer",
    importance: str = "l1",
    round_to: int | None = None,
    example_imgsz: int = 64,
    kept: dict | None = None,
) -> PruneReport:
    """Prune ``model`` in place by a ratio map keyed by :func:`prunable_groups` names.

    * ``unstructured``: per-layer L1 masks (kept as ``torch.nn.utils.prune`` re-parametrisations, so
      fine-tuning keeps zeros at zero; :func:`make_permanent` bakes them in);
    * ``global``: one L1 threshold across the chosen layers (they must share one ratio);
    * ``structured``: output channels removed (a genuinely smaller dense model; any masks are baked in first).

    ``importance`` may also be a callable scoring a Torch-Pruning group (structured only; a data-driven
    ranking from :mod:`.activation_importance`); ``kept`` (structured) is filled with the surviving channels.
    Groups missing from the map are left alone. Raises :class:`PruningError` naming the bad key or ratio.
    """
    per_conv = conv_ratios(model, ratios, granularity, method=method)
    valid = {k: float(v) for k, v in ratios.items()}
    before = count_params(model)
    channels: dict[str, tuple[int, int]] = {}
    if method == "unstructured":
        prune_unstructured(model, per_conv, importance=importance)
    elif method == "global":
        prune_global(model, per_conv, importance=importance)
    else:
        if not callable(importance) and importance not in STRUCTURED_IMPORTANCES:
            raise PruningError(
                f"importance must be one of {', '.join(STRUCTURED_IMPORTANCES)} for structured pruning, "
                f"got {importance!r}"
            )
        make_permanent(model)
        cuts = prune_structured(
            model, per_conv, importance=importance, round_to=round_to, example_imgsz=example_imgsz, kept=kept
        )
        channels = {c.convs[0]: (c.before, c.after) for c in cuts}
    return PruneReport(
        method=method,
        granularity=granularity,
        importance=getattr(importance, "name", importance),
        ratios=valid,
        params_before=before,
        params_after=count_params(model),
        sparsity=conv_sparsity(model),
        round_to=round_to if method == "structured" else None,
        channels=channels,
    )
