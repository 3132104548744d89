"""Distillation loss: zero against itself, positive and differentiable against a pruned student."""

from __future__ import annotations

import copy

import torch

from orchestrator.prune import apply_ratios
from orchestrator.yolo.distill import distill_loss, teacher_maps


def test_distill_loss_against_the_unpruned_teacher(yolov5n):
    x = torch.rand(2, 3, 96, 96)
    t = teacher_maps(yolov5n, x)
    assert [m.shape[-1] for m in t] == [85, 85, 85] and not any(m.requires_grad for m in t)
    assert float(distill_loss(t, t)) == 0.0
    student = copy.deepcopy(yolov5n)
    apply_ratios(student, {"model.8": 0.5}, method="structured", granularity="block")
    student.train()
    loss = distill_loss(student(x), t)
    assert float(loss) > 0
    loss.backward()
    assert student.model[8].cv1.conv.weight.grad.abs().sum() > 0
