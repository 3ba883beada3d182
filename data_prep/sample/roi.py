"""Finding ROI boxes in a source image: from a lesion mask or from a simple blob analysis."""
from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2hed

from data_prep.sample.catalog import Blob, Box, LabelMask, Roi


def mask_box(mask: np.ndarray, pad: float) -> Box:
    """Box around the largest lesion component, padded by `pad` of its size like a loose ROI."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        raise ValueError("lesion mask is empty on this slice")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[biggest, :4])
    dx, dy = max(2, round(w * pad)), max(2, round(h * pad))
    return (x - dx, y - dy, x + w + dx, y + h + dy)


def blob_score(rgb: np.ndarray, score: str) -> np.ndarray:
    """Per-pixel evidence map for a blob kind (bright optic disc, dark fovea, DAB or haematoxylin stain)."""
    luminance = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    if score == "bright":
        return luminance
    if score == "dark":
        return 255.0 - luminance
    stains = rgb2hed(rgb)
    return stains[..., 2] if score == "dab" else stains[..., 0]


def blob_box(rgb: np.ndarray, blob: Blob) -> Box:
    """Box around the connected top-`top_percent` region that holds the smoothed score's peak."""
    score = cv2.GaussianBlur(blob_score(rgb, blob.score), (0, 0), blob.sigma)
    x0, y0, x1, y1 = blob.within or (0, 0, rgb.shape[1], rgb.shape[0])
    region = score[y0:y1, x0:x1]
    hot = region >= np.percentile(region, 100.0 - blob.top_percent)
    _, labels = cv2.connectedComponents(hot.astype(np.uint8), connectivity=8)
    peak = np.unravel_index(int(np.argmax(region)), region.shape)
    ys, xs = np.nonzero(labels == labels[peak])
    return (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)


def resolve_roi(roi: Roi, rgb: np.ndarray, mask: np.ndarray | None) -> Box:
    """The ROI's box in the displayed source image's pixel coordinates."""
    where = roi.where
    if isinstance(where, LabelMask):
        if mask is None:
            raise ValueError("a LabelMask ROI needs a source that ships a lesion mask")
        return mask_box(mask, where.pad)
    if isinstance(where, Blob):
        return blob_box(rgb, where)
    return where
