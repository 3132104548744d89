"""Knowledge distillation from the unpruned model: its Detect outputs as soft targets next to the YOLOv5 loss.

A pruned model fine-tuned on 128 images for a few epochs overfits the labels it sees; the unpruned
teacher's predictions carry what it knew about every anchor (objectness and class scores where there
is no label, boxes where there is), so matching them keeps the pruned model close to its origin.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def teacher_maps(teacher: nn.Module, imgs: torch.Tensor) -> list[torch.Tensor]:
    """The teacher's raw per-level maps ``(B, na, H, W, 5 + nc)`` (BNs in eval, no grad)."""
    teacher.eval()
    with torch.no_grad():
        out = teacher(imgs)
    return list(out[1] if isinstance(out, tuple) else out)


def distill_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Squared difference of sigmoid outputs, summed over the 5 + nc channels, mean over anchors and levels.

    Every YOLOv5 output goes through a sigmoid before decoding, so this compares what the two models
    predict, on a scale (about 0.01-0.1 per image) comparable to the detection loss it is added to.
    """
    losses = [(s.float().sigmoid() - t.float().sigmoid()).pow(2).sum(-1).mean() for s, t in zip(student, teacher)]
    return torch.stack(losses).mean()
