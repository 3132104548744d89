"""How many output rows a YOLOv5 detector can have: the bound ONNX files are held to before and after a run.

Kept apart from :mod:`.onnx_model` (which reads files) and :mod:`.ort_runtime` (which runs them) so both
can use it without importing each other.
"""

from __future__ import annotations

STRIDES = (8, 16, 32)  # the detection levels of a P5 YOLOv5
ROW_MARGIN = 2  # room for a P6 level or a fourth anchor per level
FREE_SIDE = 2048  # the input side assumed for the bound when the file leaves height or width free


def max_rows(height: int | None, width: int | None) -> int:
    """The most output rows a YOLOv5 detector can have for an input of ``height`` x ``width`` (free: 2048).

    Three anchors per cell of each level (strides 8, 16, 32), times a margin: an official export at 640
    has 25,200 rows. Anything far beyond is not a detector, and NMS and the runtime would pay for every row.
    """
    h, w = height or FREE_SIDE, width or FREE_SIDE
    return ROW_MARGIN * 3 * sum(-(-h // s) * -(-w // s) for s in STRIDES)
