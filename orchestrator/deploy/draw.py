"""Detections drawn on their image: a box per object, its class name and confidence on a filled tag.

Why PIL's ImageDraw and not OpenCV's: its bundled TrueType font (Pillow >= 10.1) renders small labels legibly at
any size, where ``cv2.putText``'s Hershey fonts blur under 12 px. Colours come from a fixed palette indexed by
class, so one class keeps its colour across images, models and the Pareto page's side-by-side views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Kenneth Kelly's colours of maximum contrast (1965), white and black left out: distinct from one another
# and from most photographs' greys; a class index picks one, modulo the palette's length.
PALETTE = (
    (243, 195, 0),
    (135, 86, 146),
    (243, 132, 0),
    (161, 202, 241),
    (190, 0, 50),
    (194, 178, 128),
    (0, 136, 86),
    (230, 143, 172),
    (0, 103, 165),
    (249, 150, 121),
    (96, 78, 151),
    (246, 166, 0),
    (179, 68, 108),
    (220, 211, 0),
    (136, 45, 23),
    (141, 182, 0),
    (101, 69, 34),
    (226, 88, 34),
    (43, 61, 38),
    (132, 132, 130),
)


def class_colour(cls: int) -> tuple[int, int, int]:
    """The palette colour of class ``cls``."""
    return PALETTE[int(cls) % len(PALETTE)]


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tags, white on dark ones (relative luminance, ITU-R BT.601 weights)."""
    r, g, b = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(image: Image.Image, dets: np.ndarray, names: Sequence[str]) -> Image.Image:
    """A copy of ``image`` (RGB) with ``dets`` drawn: rows ``x, y, w, h, score, class`` in its pixels.

    Line width and font size follow the image's size (2 px and 11 pt at 320 px, thicker on large photos);
    tags sit above their box, or inside it when the box touches the top edge. Low scores are drawn under
    high ones, so the most confident box of a cluster stays readable.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    side = max(out.size)
    width = max(2, round(side / 320))
    font = ImageFont.load_default(size=max(11, round(side / 40)))
    for x, y, w, h, score, cls in sorted(np.asarray(dets, dtype=np.float64).tolist(), key=lambda d: d[4]):
        c = int(cls)
        colour = class_colour(c)
        name = names[c] if 0 <= c < len(names) else str(c)
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=width)
        label = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        ty = y - th if y - th >= 0 else y  # above the box, else inside its top edge
        draw.rectangle((x, ty, x + tw, ty + th), fill=colour)
        draw.text((x + width - left, ty + width - top), label, fill=_text_colour(colour), font=font)
    return out
