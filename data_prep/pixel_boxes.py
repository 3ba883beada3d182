"""Axis-aligned boxes in pixel coordinates, [x1, y1, x2, y2] with x2 > x1 and y2 > y1.

One home for the box arithmetic that data_prep, training and eval all need.
"""
from __future__ import annotations

from typing import Sequence

Box = tuple[float, float, float, float]


def box_area(box: Sequence[float]) -> float:
    """Area of a box; 0 for an empty or inverted box."""
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes; 0 when either is empty."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = box_area((ix1, iy1, ix2, iy2))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def clip_box(box: Sequence[float], width: float, height: float) -> Box:
    """Clip a box to the image rectangle [0, width] x [0, height]."""
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
            min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def area_share(box: Sequence[float], width: float, height: float) -> float:
    """Share of the image area covered by the (clipped) box, in [0, 1]."""
    return box_area(clip_box(box, width, height)) / float(width * height)


def location_phrase(box: Sequence[float], width: float, height: float) -> str:
    """Where the box centre lies, in the words MedTrinity captions use ("upper left", "central").

    The image is split in thirds; left/right are the viewer's (image) left and right.
    """
    cx = (box[0] + box[2]) / 2.0 / width
    cy = (box[1] + box[3]) / 2.0 / height
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    if not row and not col:
        return "central"
    if not row:
        return f"{col}-central"
    return f"{row} {col}" if col else f"{row}-central"
