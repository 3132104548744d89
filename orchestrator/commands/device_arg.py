"""``--device`` for the commands that run a model: checked once, with a one-line error."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def parse_device(name: str, half: bool = False) -> torch.device:
    """The command's ``--device`` (see :func:`orchestrator.yolo.device.resolve_device`); ``half`` needs CUDA."""
    from ..yolo.device import resolve_device  # torch: imported when a command runs, not to build the parser

    return resolve_device(name, half=half, flag="--device")
