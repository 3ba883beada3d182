"""Drawing boxes on images, the way MedTrinity draws its ROI rectangles."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

GREEN = (0, 255, 0)
RED = (255, 0, 0)


def draw_box(rgb: np.ndarray, box: Sequence[float], color: tuple[int, int, int] = GREEN,
             thickness: int = 2) -> np.ndarray:
    """Return a copy of an RGB uint8 image with a rectangle whose stroke is centred on `box`.

    The stroke of width `thickness` straddles the box edges, so a detector that returns the
    centre line of the stroke recovers `box` exactly (within a pixel for even widths).
    """
    out = np.ascontiguousarray(rgb.copy())
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    half_lo = (thickness - 1) // 2
    half_hi = thickness // 2
    for (ax1, ay1, ax2, ay2) in (
        (x1 - half_lo, y1 - half_lo, x2 + half_hi, y1 + half_hi),  # top
        (x1 - half_lo, y2 - half_lo, x2 + half_hi, y2 + half_hi),  # bottom
        (x1 - half_lo, y1 - half_lo, x1 + half_hi, y2 + half_hi),  # left
        (x2 - half_lo, y1 - half_lo, x2 + half_hi, y2 + half_hi),  # right
    ):
        cv2.rectangle(out, (ax1, ay1), (ax2, ay2), color, thickness=-1)
    return out
