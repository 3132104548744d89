"""FLOPs of a forward pass, counted by ``torch.utils.flop_counter`` (2 per multiply-add, as YOLOv5 prints).

Here, under the model code, because both pruning (a GFLOPs budget) and deployment (the measured cost) count them,
and pruning must not import deployment.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def count_gflops(net: nn.Module, imgsz: int, device: torch.device | str = "cpu") -> float:
    """FLOPs / 1e9 of one forward pass of one ``imgsz`` square image (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    ch = net.yaml.get("ch", 3) if hasattr(net, "yaml") else 3
    x = torch.zeros(1, ch, imgsz, imgsz, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9
