"""Synthetic MedTrinity-like ROI scenes (backgrounds, green box strokes, JPEG, tints) with their true
boxes, and the reference recipe's ROI detector that data_prep.roi is measured against.

The fixtures of tests/data_prep/test_roi.py, test_inpaint.py and test_convert.py, and the scenes
bench/roi_detector.py scores, so the tests and the bench exercise the same conditions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from data_prep.draw import draw_box
from data_prep.pixel_boxes import box_iou

PixelBox = tuple[int, int, int, int]

GREENS: dict[str, tuple[int, int, int]] = {
    "pure": (0, 255, 0),
    "soft": (20, 230, 30),
    "olive": (60, 200, 50),
    "dark": (0, 180, 0),
}


# ---------------------------------------------------------------- backgrounds
def smooth_field(h: int, w: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1]: white noise at 1/scale resolution, upsampled bicubically."""
    sh, sw = max(2, int(h / scale)), max(2, int(w / scale))
    small = rng.standard_normal((sh, sw)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / (hi - lo + 1e-6)


def _gray(x: np.ndarray) -> np.ndarray:
    v = np.clip(x * 255.0, 0, 255).astype(np.uint8)
    return np.dstack([v, v, v])


def _palette(weights: np.ndarray, colors: Sequence[Sequence[float]]) -> np.ndarray:
    """Blend colours with per-pixel weights (HxWxK, rows sum to 1) into an RGB uint8 image."""
    rgb = weights @ np.asarray(colors, dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def bg_ct(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Dark field, bright elliptical body with soft inner structure and a few dense blobs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.45, 0.55), w * rng.uniform(0.45, 0.55)
    ry, rx = h * rng.uniform(0.3, 0.45), w * rng.uniform(0.3, 0.45)
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    tissue = 0.25 + 0.35 * smooth_field(h, w, rng, max(h, w) / 8) + 0.1 * smooth_field(h, w, rng, 3)
    img = np.where(body, tissue, 0.04 + 0.02 * smooth_field(h, w, rng, 4))
    for _ in range(int(rng.integers(2, 6))):
        by, bx = rng.uniform(cy - ry / 2, cy + ry / 2), rng.uniform(cx - rx / 2, cx + rx / 2)
        rad = rng.uniform(0.03, 0.08) * min(h, w)
        img = np.where((yy - by) ** 2 + (xx - bx) ** 2 < rad**2, 0.9, img)
    return _gray(img)


def bg_xray(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Grey vertical gradient with soft anatomy-like variation and film grain."""
    ramp = np.linspace(rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.9), h, dtype=np.float32)[:, None]
    img = 0.6 * ramp + 0.35 * smooth_field(h, w, rng, max(h, w) / 6)
    img = img + rng.normal(0, 0.02, (h, w)).astype(np.float32)
    return _gray(img)


def bg_gradient(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Linear colour gradient at a random angle between two random (possibly green) colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    t = np.cos(ang) * xx / w + np.sin(ang) * yy / h
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    c0, c1 = _not_green(rng.uniform(0, 255, 3)), _not_green(rng.uniform(0, 255, 3))
    return _palette(np.dstack([1 - t, t]), [c0, c1])


def _not_green(rgb: np.ndarray, limit: float = 60.0) -> np.ndarray:
    """Cap G - max(R, B): a background as green as the pen hides any stroke, for any detector."""
    out = rgb.copy()
    out[1] = min(out[1], max(out[0], out[2]) + limit)
    return out


def bg_noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Mid-grey with strong per-channel pixel noise (sensor noise, speckle)."""
    base = rng.uniform(60, 190)
    img = base + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def bg_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured gratings (some axis-aligned) modulated by smooth noise: fabric, muscle fibres."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    acc = np.zeros((h, w), np.float32)
    for _ in range(3):
        ang = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        period = rng.uniform(4, 24)
        acc += np.sin((np.cos(ang) * xx + np.sin(ang) * yy) * 2 * np.pi / period)
    t = (acc - acc.min()) / (acc.max() - acc.min() + 1e-6) * smooth_field(h, w, rng, 40)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    return _palette(np.dstack([1 - t, t]), [c0, c1])


def _blobs(h: int, w: int, rng: np.random.Generator, n: int, rmin: float, rmax: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (max(1, int(rng.uniform(rmin, rmax))), max(1, int(rng.uniform(rmin, rmax))))
        cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(np.float32)


def _fibres(h: int, w: int, rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Thin random-walk curves (vessels, collagen fibres)."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        p = rng.uniform([0, 0], [w, h])
        ang = rng.uniform(0, 2 * np.pi)
        pts = [p.copy()]
        for _ in range(40):
            ang += rng.normal(0, 0.25)
            p = p + 0.03 * max(h, w) * np.array([np.cos(ang), np.sin(ang)])
            pts.append(p.copy())
        cv2.polylines(mask, [np.asarray(pts, np.int32)], False, 1, width)
    return mask.astype(np.float32)


def _tissue(h: int, w: int, rng: np.random.Generator, colors: Sequence[Sequence[float]]) -> np.ndarray:
    """Stained-tissue look: background stain, fibres and nuclei blended with a palette of 3."""
    scale = min(h, w) / 512
    fib = cv2.GaussianBlur(_fibres(h, w, rng, 25, max(1, int(3 * scale))), (0, 0), 0.8)
    nuc = _blobs(h, w, rng, int(h * w / 900), 2 * scale, 7 * scale)
    nuc = np.clip(nuc * (0.7 + 0.3 * smooth_field(h, w, rng, 5)), 0, 1)
    fib = np.clip(fib - nuc, 0, 1)
    base = np.clip(1 - fib - nuc, 0, 1)
    return _palette(np.dstack([base, fib, nuc]), colors)


def bg_pathology(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """H&E-like: pink stroma, eosin fibres, purple nuclei."""
    return _tissue(h, w, rng, [(236, 205, 222), (214, 120, 170), (110, 60, 160)])


def bg_green_tissue(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Greenish tissue (special stains, Masson trichrome collagen): green fibres and nuclei."""
    return _tissue(h, w, rng, [(205, 228, 196), (90, 190, 100), (60, 125, 75)])


def bg_fundus(h: int, w: int, rng: np.random.Generator, red_free: bool = False) -> np.ndarray:
    """Retinal photo: black surround, vignetted disc, bright optic disc, dark vessels.

    red_free=True gives the green-filtered look (whole retina green), False the usual orange.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((yy - h / 2) / (0.47 * min(h, w)), (xx - w / 2) / (0.47 * min(h, w)))
    disc = np.clip((1.0 - r) * 25, 0, 1)
    vignette = np.clip(1.1 - 0.6 * r**2, 0, 1) * (0.85 + 0.15 * smooth_field(h, w, rng, 30))
    od = np.exp(-(((xx - w * 0.65) ** 2 + (yy - h * 0.5) ** 2) / (2 * (0.06 * min(h, w)) ** 2)))
    vessels = cv2.GaussianBlur(_fibres(h, w, rng, 14, max(1, min(h, w) // 150)), (0, 0), 1.0)
    retina = (40, 170, 70) if red_free else (205, 95, 40)
    bright = (180, 245, 170) if red_free else (250, 215, 150)
    dark = (10, 70, 25) if red_free else (120, 25, 15)
    w_od = od * (1 - vessels)
    w_v = vessels * 0.8
    w_r = np.clip(1 - w_od - w_v, 0, 1)
    img = np.dstack([w_r, w_od, w_v]) @ np.asarray([retina, bright, dark], np.float32)
    img = img * (vignette * disc)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def bg_text(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """CT-like image with scanner overlays: white/yellow/green text, a ruler and tick marks."""
    img = bg_ct(h, w, rng)
    scale = max(0.3, min(h, w) / 1024)
    labels = ["L", "R", "W:400 L:40", "Se:3 Im:42", "10 cm", "AX T2 FLAIR", "HFS", "A", "P"]
    colors = [(255, 255, 255), (255, 255, 0), (0, 255, 0), (200, 200, 200)]
    for i in range(6):
        org = (int(rng.uniform(0, 0.8) * w), int(rng.uniform(0.05, 1.0) * h))
        cv2.putText(img, labels[int(rng.integers(len(labels)))], org, cv2.FONT_HERSHEY_SIMPLEX,
                    scale * rng.uniform(0.6, 1.2), colors[i % len(colors)], 1, cv2.LINE_AA)
    x0, y0 = int(0.05 * w), int(0.9 * h)
    cv2.line(img, (x0, y0), (x0 + w // 3, y0), (220, 220, 220), 1)
    for k in range(11):
        x = x0 + k * (w // 30)
        cv2.line(img, (x, y0), (x, y0 - (8 if k % 5 == 0 else 4)), (220, 220, 220), 1)
    return img


BACKGROUNDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "ct": bg_ct, "xray": bg_xray, "gradient": bg_gradient, "noise": bg_noise,
    "texture": bg_texture, "pathology": bg_pathology, "green_tissue": bg_green_tissue,
    "fundus": bg_fundus, "red_free": lambda h, w, rng: bg_fundus(h, w, rng, red_free=True),
    "text": bg_text,
}
GREENISH = ("green_tissue", "red_free")


def background(kind: str, h: int, w: int, seed: int) -> np.ndarray:
    """A reproducible RGB uint8 background of the named kind."""
    return BACKGROUNDS[kind](h, w, np.random.default_rng(seed))


def tint_green(rgb: np.ndarray, strength: float = 0.35) -> np.ndarray:
    """Whole-image green cast: pull R and B down and G up, as a bad white balance would."""
    gain = np.array([1 - strength * 0.6, 1 + strength * 0.3, 1 - strength * 0.6], np.float32)
    return np.clip(rgb.astype(np.float32) * gain + np.array([0, 40 * strength, 0]), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through baseline JPEG with 4:2:0 chroma subsampling (libjpeg's default)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------- scenes
@dataclass
class Scene:
    """An image with ground-truth boxes (centre lines, clipped to the last pixel) and the same
    image before the boxes were drawn (for inpainting checks)."""
    condition: str
    image: np.ndarray
    boxes: list[PixelBox]
    stroke: int
    clean: np.ndarray


def clip_to_pixels(box: Sequence[int], w: int, h: int) -> PixelBox:
    """Clip a centre-line box to pixel indices [0, w-1] x [0, h-1]."""
    x1, y1, x2, y2 = box
    return (max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2))


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[int]], color: tuple[int, int, int],
               stroke: int) -> np.ndarray:
    """All boxes drawn with one pen, as MedTrinity does."""
    out = rgb
    for b in boxes:
        out = draw_box(out, b, color, stroke)
    return out


def random_box(rng: np.random.Generator, h: int, w: int, lo: int, hi: int, margin: int = 4) -> PixelBox:
    """A box with sides in [lo, hi] fully inside the image (stroke margin kept)."""
    bw = int(rng.integers(lo, min(hi, w - 2 * margin) + 1))
    bh = int(rng.integers(lo, min(hi, h - 2 * margin) + 1))
    x1 = int(rng.integers(margin, w - margin - bw + 1))
    y1 = int(rng.integers(margin, h - margin - bh + 1))
    return (x1, y1, x1 + bw, y1 + bh)


def separated_boxes(rng: np.random.Generator, h: int, w: int, n: int, lo: int, hi: int,
                    gap: int = 8, tries: int = 200) -> list[PixelBox]:
    """n boxes whose strokes keep `gap` px apart (no touching, no crossing)."""
    out: list[PixelBox] = []
    for _ in range(tries if n else 0):
        b = random_box(rng, h, w, lo, hi)
        if all(b[0] > o[2] + gap or o[0] > b[2] + gap or b[1] > o[3] + gap or o[1] > b[3] + gap
               for o in out):
            out.append(b)
        if len(out) == n:
            break
    return out


def scene(condition: str, seed: int, *, size: tuple[int, int] = (512, 512), bg: str | None = None,
          boxes: Sequence[PixelBox] | None = None, n_boxes: int = 1, stroke: int | None = None,
          color: tuple[int, int, int] | None = None, quality: int | None = None,
          tint: float = 0.0, box_side: tuple[int, int] | None = None) -> Scene:
    """Compose one scene: background, optional tint, boxes, optional JPEG round trip.

    Boxes are drawn after the tint (MedTrinity draws onto the finished image), so the stroke
    keeps its colour while the tissue around it turns green.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    kind = bg or str(rng.choice(list(BACKGROUNDS)))
    img = background(kind, h, w, seed)
    if tint:
        img = tint_green(img, tint)
    stroke = int(rng.integers(1, 5)) if stroke is None else stroke
    color = GREENS[str(rng.choice(list(GREENS)))] if color is None else color
    lo, hi = box_side or (max(12, min(h, w) // 10), max(13, min(h, w) // 2))
    drawn = list(boxes) if boxes is not None else separated_boxes(rng, h, w, n_boxes, lo, hi)
    out = draw_boxes(img, drawn, color, stroke)
    if quality is not None:
        out = jpeg(out, quality)
    truth = sorted((clip_to_pixels(b, w, h) for b in drawn), key=lambda b: (b[1], b[0]))
    return Scene(condition, out, truth, stroke, img)


# ---------------------------------------------------------------- reference detector
def reference_detect(rgb: np.ndarray) -> tuple[float, float, float, float] | None:
    """The reference recipe's ROI: largest contour of an HSV green mask, normalised [x1,y1,x2,y2].

    HSV [35,50,50]-[85,255,255], 5x5 opening then closing, bounding rect of the largest
    external contour. Kept verbatim in spirit for comparison only.
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    mask = cv2.inRange(hsv, np.array([35, 50, 50]), np.array([85, 255, 255]))
    kernel = np.ones((5, 5), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    x, y, bw, bh = cv2.boundingRect(max(contours, key=cv2.contourArea))
    h, w = rgb.shape[:2]
    return (x / w, y / h, (x + bw) / w, (y + bh) / h)


def reference_boxes(rgb: np.ndarray) -> list[PixelBox]:
    """reference_detect mapped to pixel boxes (0 or 1 of them) so it can be scored like ours."""
    box = reference_detect(rgb)
    if box is None:
        return []
    h, w = rgb.shape[:2]
    return [(round(box[0] * w), round(box[1] * h), round(box[2] * w) - 1, round(box[3] * h) - 1)]


def border_box(rng: np.random.Generator, h: int, w: int, side: str) -> PixelBox:
    """A box that runs past the named image border(s) by 10-60 px."""
    x1, y1, x2, y2 = random_box(rng, h, w, min(h, w) // 6, min(h, w) // 2)
    over = int(rng.integers(10, 60))
    if side in ("left", "corner"):
        x1, x2 = -over, x2 - x1 - over
    if side in ("top", "corner"):
        y1, y2 = -over, y2 - y1 - over
    if side == "right":
        x1, x2 = w - (x2 - x1) + over, w - 1 + over
    if side == "bottom":
        y1, y2 = h - (y2 - y1) + over, h - 1 + over
    return (x1, y1, x2, y2)


def multi_boxes(rng: np.random.Generator, h: int, w: int) -> list[PixelBox]:
    """2-4 boxes: separated, nested (a box inside another) or adjacent (strokes ~10 px apart)."""
    layout = str(rng.choice(["separate", "nested", "adjacent"]))
    if layout == "nested":
        outer = random_box(rng, h, w, min(h, w) // 3, int(min(h, w) * 0.8))
        inset = int(rng.integers(12, 30))
        inner = (outer[0] + inset, outer[1] + inset, outer[2] - inset, outer[3] - inset)
        extra = separated_boxes(rng, h, w, 1, 20, 60)
        return [outer, inner] + [b for b in extra if box_iou(b, outer) == 0 and not _inside(b, outer)]
    if layout == "adjacent":
        x1, y1 = int(rng.integers(10, 100)), int(rng.integers(10, 200))
        bw, bh = int(rng.integers(40, 150)), int(rng.integers(40, 150))
        gap = int(rng.integers(8, 14))
        return [(x1, y1, x1 + bw, y1 + bh), (x1 + bw + gap, y1, x1 + 2 * bw + gap, y1 + bh)]
    return separated_boxes(rng, h, w, int(rng.integers(2, 5)), 20, 160)


def _inside(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2] and a[3] <= b[3]
