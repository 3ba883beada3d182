"""Turning raw scanner values into display pixels: windowing, normalisation, orientation.

Pure numpy so that every modality ends up as the RGB uint8 picture a radiologist would see.
"""
from __future__ import annotations

import numpy as np


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map a window [center - width/2, center + width/2] linearly to 0..255 (DICOM linear VOI)."""
    low = center - width / 2.0
    scaled = (values.astype(np.float64) - low) / float(width)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def percentile_normalise(values: np.ndarray, low: float = 1.0, high: float = 99.5,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """Clip to the [low, high] percentiles (of `mask` pixels, e.g. the body) and scale to 0..255.

    MR, ultrasound and radiographs have no absolute unit like Hounsfield, so the
    intensity range is taken from the image itself; outliers (metal, text) are clipped.
    """
    sample = values[mask] if mask is not None else values
    lo, hi = np.percentile(sample.astype(np.float64), [low, high])
    return window(values, (lo + hi) / 2.0, max(hi - lo, 1e-6))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (H, W) or colour (H, W, 3|4) uint8 -> contiguous RGB (H, W, 3) uint8."""
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


def neutralise_green(rgb: np.ndarray, margin: int = 40) -> np.ndarray:
    """Grey out strongly green source pixels (scanner markers) so green means "ROI stroke" only."""
    out = rgb.copy()
    r, g, b = (out[..., i].astype(np.int16) for i in range(3))
    greenish = (g - np.maximum(r, b)) > margin
    grey = ((r + g + b) // 3).astype(np.uint8)
    out[greenish] = grey[greenish][:, None]
    return out


def canonical_axial(image: np.ndarray, row_cosine_x: float, col_cosine_y: float) -> np.ndarray:
    """Flip an axial slice into radiological display: patient anterior up, patient right on image left.

    In LPS patient space +x points to the patient's left and +y to posterior, so a
    row direction with negative x or a column direction with negative y is mirrored.
    """
    if row_cosine_x < 0:
        image = image[:, ::-1]
    if col_cosine_y < 0:
        image = image[::-1, :]
    return np.ascontiguousarray(image)
