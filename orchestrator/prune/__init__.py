"""Pruning driven by per-layer ratio maps: prunable layer names and groups, unstructured masks, structured cuts.

Front door for the sweep: :func:`prunable_groups` names the search space, :func:`apply_ratios` turns a
ratio map into a pruned model and a :class:`PruneReport`.

May import: prune, yolo, leaves
"""

from .allocation import magnitude_allocation
from .apply import PruneReport, apply_ratios, conv_sparsity, count_params, uniform_ratios
from .layers import GRANULARITIES, METHODS, conv_layers, output_convs, prunable_groups, validate_ratios
from .unstructured import copy_pruned, has_masks, make_permanent

__all__ = [
    "GRANULARITIES",
    "METHODS",
    "PruneReport",
    "apply_ratios",
    "conv_layers",
    "conv_sparsity",
    "copy_pruned",
    "count_params",
    "has_masks",
    "magnitude_allocation",
    "make_permanent",
    "output_convs",
    "prunable_groups",
    "uniform_ratios",
    "validate_ratios",
]
