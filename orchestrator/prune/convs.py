"""The convs of a YOLOv5 model by name: what every pruning module keys its work on."""

from __future__ import annotations

import torch.nn as nn


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every ``nn.Conv2d`` of ``model`` by module path, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def output_convs(model: nn.Module) -> list[str]:
    """Names of the Detect layer's output convs (their widths are the output format)."""
    rows = model.model
    det = len(rows) - 1
    return [f"model.{det}.{name}" for name, m in rows[det].named_modules() if isinstance(m, nn.Conv2d)]
