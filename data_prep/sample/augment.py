"""Deterministic augmentation of one source frame; every geometric step moves the ROI boxes too.

Order: crop around the ROIs -> resize to the output size -> flips -> small rotation ->
intensity jitter. Boxes are float [x1, y1, x2, y2] in pixels of the current image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.pixel_boxes import Box


@dataclass(frozen=True)
class Augment:
    """All random choices for one row, so a row is reproducible from its parameters alone."""

    crop: tuple[int, int, int, int]
    size: tuple[int, int]
    hflip: bool
    vflip: bool
    angle: float
    gamma: float
    contrast: float
    brightness: float

    def describe(self) -> str:
        """Short, stable text for the manifest's `augment` field."""
        parts = [f"crop={','.join(map(str, self.crop))}", f"size={self.size[0]}x{self.size[1]}"]
        parts += [name for name, on in (("hflip", self.hflip), ("vflip", self.vflip)) if on]
        parts += [f"rot={self.angle:+.1f}", f"gamma={self.gamma:.2f}", f"contrast={self.contrast:.2f}",
                  f"brightness={self.brightness:+.0f}"]
        return ";".join(parts)


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def crop_span(length: int, keep_lo: float, keep_hi: float, scale: float, rng: np.random.Generator
              ) -> tuple[int, int]:
    """A random window of `scale * length` along one axis that keeps [keep_lo, keep_hi] inside."""
    span = max(int(round(length * scale)), int(np.ceil(keep_hi - keep_lo)))
    span = min(span, length)
    lo = max(0, int(np.ceil(keep_hi)) - span)
    hi = min(int(np.floor(keep_lo)), length - span)
    start = int(rng.integers(lo, hi + 1)) if hi >= lo else max(0, min(lo, length - span))
    return start, start + span


def output_size(crop_w: int, crop_h: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the crop's aspect ratio and the given long side."""
    scale = long_side / max(crop_w, crop_h)
    return max(1, round(crop_w * scale)), max(1, round(crop_h * scale))


def sample_augment(rng: np.random.Generator, width: int, height: int, keep: Sequence[Sequence[float]],
                   flips: str, sizes: tuple[int, int], max_angle: float) -> Augment:
    """Draw the row's augmentation; the crop always keeps the ROIs (plus a margin) in view."""
    margin = 0.04 * max(width, height)
    ux1, uy1, ux2, uy2 = union_box(keep)
    x0, x1 = crop_span(width, ux1 - margin, ux2 + margin, float(rng.uniform(0.75, 1.0)), rng)
    y0, y1 = crop_span(height, uy1 - margin, uy2 + margin, float(rng.uniform(0.75, 1.0)), rng)
    long_side = int(rng.integers(sizes[0] // 16, sizes[1] // 16 + 1)) * 16
    return Augment(
        crop=(x0, y0, x1, y1),
        size=output_size(x1 - x0, y1 - y0, long_side),
        hflip="h" in flips and bool(rng.random() < 0.5),
        vflip="v" in flips and bool(rng.random() < 0.5),
        angle=float(np.round(rng.uniform(-max_angle, max_angle), 1)),
        gamma=float(np.round(rng.uniform(0.8, 1.25), 2)),
        contrast=float(np.round(rng.uniform(0.9, 1.1), 2)),
        brightness=float(np.round(rng.uniform(-10, 10))),
    )


def rotate_box(box: Sequence[float], matrix: np.ndarray) -> Box:
    """Axis-aligned hull of a box's corners after an affine map (a rotated ROI is still enclosed)."""
    x1, y1, x2, y2 = box
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], dtype=np.float64)
    moved = corners @ matrix.T
    return (float(moved[:, 0].min()), float(moved[:, 1].min()),
            float(moved[:, 0].max()), float(moved[:, 1].max()))


def apply_geometry(rgb: np.ndarray, boxes: Sequence[Sequence[float]], aug: Augment, reflect_border: bool
                   ) -> tuple[np.ndarray, list[Box]]:
    """Crop, resize, flip and rotate the image, moving the boxes the same way."""
    x0, y0, x1, y1 = aug.crop
    out_w, out_h = aug.size
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    interpolation = cv2.INTER_AREA if sx < 1.0 else cv2.INTER_CUBIC
    image = cv2.resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (out_w, out_h), interpolation=interpolation)
    moved = [((b[0] - x0) * sx, (b[1] - y0) * sy, (b[2] - x0) * sx, (b[3] - y0) * sy) for b in boxes]
    if aug.hflip:
        image = image[:, ::-1]
        moved = [(out_w - b[2], b[1], out_w - b[0], b[3]) for b in moved]
    if aug.vflip:
        image = image[::-1, :]
        moved = [(b[0], out_h - b[3], b[2], out_h - b[1]) for b in moved]
    matrix = cv2.getRotationMatrix2D((out_w / 2.0, out_h / 2.0), aug.angle, 1.0)
    border = cv2.BORDER_REFLECT_101 if reflect_border else cv2.BORDER_CONSTANT
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                           borderMode=border, borderValue=(0, 0, 0))
    return image, [rotate_box(b, matrix) for b in moved]


def apply_intensity(rgb: np.ndarray, aug: Augment) -> np.ndarray:
    """Gamma, contrast and brightness jitter through one lookup table shared by all channels."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    curve = (np.power(levels, aug.gamma) * 255.0 - 128.0) * aug.contrast + 128.0 + aug.brightness
    table = np.clip(np.rint(curve), 0, 255).astype(np.uint8)
    return table[rgb]
