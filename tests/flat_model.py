"""A detector without C3 blocks (three convs and Detect): what depth pruning must refuse, naming the key or flag."""

from __future__ import annotations

from pathlib import Path

from orchestrator.yolo.model import DetectionModel, build_model


def flat_model(nc: int = 80) -> DetectionModel:
    cfg = {
        "nc": nc,
        "anchors": [[10, 13, 16, 30, 33, 23]],
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
        "head": [[[2], 1, "Detect", ["nc", "anchors"]]],
    }
    return build_model(cfg)


def flat_checkpoint(folder: Path) -> Path:
    """``folder/flat.pt`` in our layout, 80 classes (as coco128's data yaml)."""
    from orchestrator.yolo.checkpoint import save_checkpoint

    return save_checkpoint(flat_model(), folder / "flat.pt")
