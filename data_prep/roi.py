"""Recover the green ROI rectangles MedTrinity draws onto its images.

MedTrinity-25M ships no box columns: each ROI is a green rectangle burnt into the pixels, 1-4 px
wide, often JPEG-compressed, sometimes several per image and sometimes cut by the image border.
detect_boxes returns every rectangle as the centre line of its stroke plus a stroke mask, so the
caller can both supervise localisation and paint the strokes out (data_prep.inpaint).

How (vectorised cv2/numpy):
1. greenness = G - max(R, B), kept signed: a colour difference that survives 4:2:0 chroma
   smearing far better than a hue window, ~0 on grey and negative on red tissue. Work is cropped
   to where something is greener than its neighbourhood (most radiology images: just the box);
2. per axis, a top-hat across the stroke direction keeps greenness above the local floor (a green
   cast, broad green tissue and strokes of the other axis drop to 0), a box filter along it
   averages out JPEG and sensor noise, and a threshold relative to the image's own statistics
   leaves straight runs, whose ruled cores become fragments grouped into lines;
3. corners are read off the smoothed maps: where a horizontal and a vertical line meet, each
   must run on one side only (the pen stopped), which tells corners from crossings and T's;
4. rectangles are four lines joined by four matching corners, drawn with one pen, with filled
   (square) corners; the image border stands in for up to two sides of a box that runs off it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product
from statistics import median
from typing import NamedTuple

import cv2
import numpy as np

Box = tuple[int, int, int, int]
CORNERS = {"TL": (1, 1), "TR": (-1, 1), "BL": (1, -1), "BR": (-1, -1)}  # direction each stroke runs


@dataclass(frozen=True)
class RoiResult:
    """Boxes as [x1, y1, x2, y2] stroke centre lines in image pixels, sorted by (y1, x1)."""
    boxes: list[Box]
    flags: list[str]
    mask: np.ndarray


@dataclass(frozen=True)
class RoiParams:
    """Detector tolerances (defaults tuned on bench/roi_detector.py scenes and data/sample).
    Contrasts are in greenness units: half of G - max(R, B).

    max_stroke       widest stroke handled (px)
    smooth           px averaged along a stroke before thresholding
    floor            least contrast of a stroke over its surroundings
    noise_gain, noise_quantile   the threshold rises to noise_gain x this quantile of the
                     contrast map on noisy or textured images
    line_offset      px within which fragment centres join one line
    arm, arm_gap, arm_frac, stop_frac, stop_spread   corner probes (corner_maps, arm_tests)
    max_weak         corners of a box that may be T-shaped (a fibre or another box runs on)
    cut_gain         a box cut by the border needs strokes this many times the threshold
    fill_frac        least greenness of a corner pixel, as a share of the stroke contrast
    border_tol       how close to the border the strokes of a box cut by it must run (px)
    min_cover        least share of a side covered by stroke runs
    consistency      least contrast ratio between the sides of one box (low: a stroke over
                     green tissue keeps little contrast)
    split_consistency   least contrast ratio of a stroke inside a box to the box's own for it
                     to mark the box as the union of two
    thick_stroke, tiny_side, cast_level   set the "thick_stroke" (px), "tiny_box" (shorter
                     side, px) and "green_cast" (median G - max(R, B)) flags
    mask_margin      px added on each side of a stroke in the returned mask
    lift_frac, lift_window   a stroke beats the mean greenness of the lift_window px around it
                     by lift_frac of its contrast (lifted)
    """
    max_stroke: int = 12
    smooth: int = 7
    floor: float = 16.0
    noise_gain: float = 1.6
    noise_quantile: float = 0.9
    line_offset: float = 1.5
    arm: int = 6
    arm_gap: int = 4
    arm_frac: float = 0.6
    stop_frac: float = 0.5
    stop_spread: int = 2
    max_weak: int = 1
    cut_gain: float = 2.0
    fill_frac: float = 0.25
    border_tol: float = 2.0
    min_cover: float = 0.6
    consistency: float = 0.25
    split_consistency: float = 0.5
    thick_stroke: float = 6.0
    tiny_side: int = 24
    cast_level: float = 12.0
    mask_margin: int = 1
    lift_frac: float = 0.4
    lift_window: int = 36


class Pen(NamedTuple):
    """How one side of a box is drawn."""
    cover: float     # share of the side's length the strokes cover
    width: float     # stroke width, px
    contrast: float  # greenness above the local floor
    centre: float    # centre line across the stroke (sub-pixel)


@dataclass(frozen=True)
class Fragment:
    """One straight run: centre across it (sub-pixel), extent [lo, hi] along it, width, contrast."""
    pos: float
    lo: int
    hi: int
    thick: float
    strength: float


@dataclass(frozen=True)
class Line:
    """Collinear fragments: one stroke (cut by crossings or JPEG dropouts) or the strokes of
    several boxes on one row. A virtual line is an image border."""
    pos: float
    lo: int
    hi: int
    thick: float
    frags: tuple[Fragment, ...]
    virtual: bool = False

    @classmethod
    def of(cls, frags: list[Fragment], virtual: bool = False) -> Line:
        size = [f.hi - f.lo + 1 for f in frags]
        return cls(_wmean([f.pos for f in frags], size), min(f.lo for f in frags), max(f.hi for f in frags),
                   _wmean([f.thick for f in frags], size), tuple(frags), virtual)

    def pen(self, a: int, b: int) -> Pen:
        """Pen of the fragments overlapping [a, b]; the local centre matters when one line holds
        the strokes of several boxes."""
        if self.virtual:
            return Pen(1.0, 0.0, 0.0, self.pos)
        overlap = [max(0, min(b, f.hi) - max(a, f.lo) + 1) for f in self.frags]
        if not any(overlap):
            return Pen(0.0, 0.0, 0.0, self.pos)
        return Pen(sum(overlap) / (b - a + 1), _wmean([f.thick for f in self.frags], overlap),
                   _wmean([f.strength for f in self.frags], overlap), _wmean([f.pos for f in self.frags], overlap))


def _wmean(values: list[float], weights: list[int]) -> float:
    """Weighted mean of a few numbers (np.average costs ~20x more on lists this short)."""
    return sum(v * w for v, w in zip(values, weights)) / sum(weights)


@dataclass(frozen=True)
class AxisStrokes:
    """Stroke evidence along one axis: the smoothed contrast map (indexed [across, along]), its
    threshold and the lines."""
    along: np.ndarray
    thr: float
    lines: list[Line]


@dataclass(frozen=True)
class Frame:
    """The image borders in working (crop) coordinates."""
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class Candidate:
    """A box with its side lines (top, bottom, left, right), stroke width, weakest side contrast
    and how many of its corners are T-shaped."""
    box: Box
    sides: tuple[Line, Line, Line, Line]
    thick: float
    weakest: float
    weak: int

    @property
    def virtual(self) -> int:
        return sum(s.virtual for s in self.sides)


def greenness(rgb: np.ndarray) -> np.ndarray:
    """(G - max(R, B) + 255) / 2 as uint8: 128 on grey, >128 green, <128 red/blue/magenta.

    Kept signed rather than clipped at 0 because after JPEG a thin green stroke on red tissue is
    often still redder than green in absolute terms, yet far greener than its surroundings.
    """
    r, g, b = cv2.split(rgb)
    return cv2.addWeighted(g, 0.5, cv2.bitwise_not(cv2.max(r, b)), 0.5, 0.0)


@lru_cache(maxsize=64)
def ones(shape: tuple[int, int]) -> np.ndarray:
    """A structuring element, made once per shape."""
    return np.ones(shape, np.uint8)


def quantile_u8(values: np.ndarray, q: float) -> float:
    """q-quantile of uint8 values by histogram (a sort costs ~10x more)."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return float(np.searchsorted(cum, q * cum[-1]))


def quantile_at_most(values: np.ndarray, q: float, level: float) -> bool:
    """quantile_u8(values, q) <= level, from one count: the usual answer needs no histogram."""
    above = cv2.countNonZero(cv2.threshold(values, math.floor(level), 1, cv2.THRESH_BINARY)[1])
    return values.size - above >= q * values.size


def half_greenness(rgb: np.ndarray) -> np.ndarray:
    """greenness of the half-resolution image (2x2 means): what the coarse steps look at."""
    h, w = rgb.shape[:2]
    hh, hw = max(1, h // 2), max(1, w // 2)
    return greenness(cv2.resize(rgb[:2 * hh, :2 * hw], (hw, hh), interpolation=cv2.INTER_AREA))


def stroke_region(half: np.ndarray, shape: tuple[int, int], *, floor: float, pad: int, min_cells: int,
                  scale: int = 4) -> tuple[int, int, int, int] | None:
    """Crop (y0, y1, x0, x1) of an image of `shape` (h, w) around every place greener than its
    neighbourhood, or None.

    Works on a 1/scale grid of `half` (half_greenness: a quarter of the work; a 1 px stroke keeps
    half its contrast there, hence floor/4): a cell's peak (3x3 max before subsampling, so 1 px
    strokes count) is compared with the neighbourhood floor (5x5 min of the area-averaged grid),
    a cheap stand-in for the top-hat; fewer than min_cells cells over it means no stroke at all.
    `pad` keeps the context later steps look at.
    """
    h, w = shape
    size = (max(1, w // scale), max(1, h // scale))
    k = scale // 2
    half = half[:k * size[1], :k * size[0]]  # whole cells: integer resize factors take a fast path
    peak = cv2.resize(cv2.dilate(half, ones((3, 3))), size, interpolation=cv2.INTER_NEAREST)
    low = cv2.erode(cv2.resize(half, size, interpolation=cv2.INTER_AREA), ones((5, 5)))
    cand = cv2.threshold(cv2.subtract(peak, low), floor / 4, 255, cv2.THRESH_BINARY)[1]
    if cv2.countNonZero(cand) < min_cells:
        return None
    x, y, bw, bh = cv2.boundingRect(cand)
    sy, sx = h / size[1], w / size[0]
    return (max(0, int(y * sy) - pad), min(h, int((y + bh) * sy) + pad),
            max(0, int(x * sx) - pad), min(w, int((x + bw) * sx) + pad))


def axis_strokes(green: np.ndarray, integral: np.ndarray, p: RoiParams, *,
                 vertical: bool, min_len: int, sample_step: int = 3) -> AxisStrokes:
    """Green strokes (runs >= min_len px) along one axis of a greenness image.

    A top-hat across the axis, longer than any stroke is wide, keeps only greenness above the
    floor on both sides of each pixel. A box filter along the axis averages JPEG ringing and
    sensor noise over `smooth` px without blurring across the stroke. The threshold is `floor`
    or, on busy images, `noise_gain` times the `noise_quantile` of that map (strokes cover well
    under 10% of an image). Runs that are merely the background between two less green
    structures (a gap between fibres) are dropped (see lifted). Coordinates come back as
    (across, along): (y, x) for horizontal strokes, (x, y) for vertical ones; so does the map
    (a transposed view for vertical).
    """
    def kernel(across: int, along_: int) -> np.ndarray:
        return ones((along_, across) if vertical else (across, along_))

    contrast = cv2.morphologyEx(green, cv2.MORPH_TOPHAT, kernel(p.max_stroke + 3, 1))
    along = cv2.blur(contrast, kernel(1, p.smooth).shape[::-1])
    sample = np.ascontiguousarray(along[::sample_step, ::sample_step])
    quiet = quantile_at_most(sample, p.noise_quantile, p.floor / p.noise_gain)
    thr = p.floor if quiet else max(p.floor, p.noise_gain * quantile_u8(sample, p.noise_quantile))
    binary = cv2.threshold(along, thr, 1, cv2.THRESH_BINARY)[1]
    runs = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel(1, min_len))
    contours, _ = cv2.findContours(runs, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    frags = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        run, amap = runs[y:y + h, x:x + w], along[y:y + h, x:x + w]
        if vertical:
            x, y, run, amap = y, x, np.ascontiguousarray(run.T), np.ascontiguousarray(amap.T)
        frags += [Fragment(y + f.pos, x + f.lo, x + f.hi, f.thick, f.strength)
                  for f in straight_cores(run, amap, p.max_stroke) if f.hi - f.lo + 1 >= max(min_len, 2 * f.thick)]
    if frags:
        keep = lifted(frags, integral.T if vertical else integral, p.lift_frac, p.lift_window // 2)
        frags = [f for f, k in zip(frags, keep) if k]
    return AxisStrokes(along.T if vertical else along, thr, group_lines(frags, p.line_offset))


def lifted(frags: list[Fragment], integral: np.ndarray, lift_frac: float, half: int) -> list[bool]:
    """Per fragment: is it greener than the mean of its neighbourhood (the 2*half px square around
    its middle) by lift_frac of its contrast? A drawn stroke is; a strip of plain background
    between two darker fibres only beats their floor.

    integral (cv2.integral of the greenness) is indexed [across, along]. The best of the rows
    centre-1..centre+1 counts: a 1 px stroke may sit a row off its centre. All 16 integral reads
    per fragment are one gather; the rest is a few scalars each.
    """
    n_rows, n_cols = integral.shape[0] - 1, integral.shape[1] - 1
    ys: list[int] = []
    xs: list[int] = []
    areas = []
    for f in frags:
        lo, hi, c = f.lo, f.hi + 1, centre(f.pos)
        rows = [min(max(r, 0), n_rows - 1) for r in (c - 1, c, c + 1)]
        r0, r1 = max(rows[1] - half, 0), min(rows[1] + half, n_rows)
        c0, c1 = max((lo + hi) // 2 - half, 0), min((lo + hi) // 2 + half, n_cols)
        for top, bottom, left, right in ((r, r + 1, lo, hi) for r in rows):
            ys += (bottom, top, bottom, top)
            xs += (right, right, left, left)
        ys += (r1, r0, r1, r0)
        xs += (c1, c1, c0, c0)
        areas.append((hi - lo, (r1 - r0) * (c1 - c0)))
    v = integral[ys, xs].tolist()
    sums = [v[k] - v[k + 1] - v[k + 2] + v[k + 3] for k in range(0, len(v), 4)]
    return [max(sums[4 * n:4 * n + 3]) / length - sums[4 * n + 3] / area >= lift_frac * f.strength
            for n, (f, (length, area)) in enumerate(zip(frags, areas))]


def straight_cores(run: np.ndarray, along: np.ndarray, max_stroke: int) -> list[Fragment]:
    """The ruled parts of one run component, in the component's own coordinates.

    Texture touching a stroke (a fibre crossing it, a stroke drawn along a fibre) joins its
    component; strokes are the bands of consecutive rows at least half as long as the longest
    row, and only a band gives centre, width and extent.
    """
    h, w = run.shape
    if cv2.countNonZero(run) == h * w:  # a clean strip, the usual case
        return [Fragment((h - 1) / 2, 0, w - 1, float(h), cv2.mean(along)[0])] if h <= max_stroke else []
    rows = run.sum(axis=1).tolist()
    half = max(rows) / 2
    out = []
    r = 0
    while r < h:
        if rows[r] < half:
            r += 1
            continue
        r0 = r
        while r < h and rows[r] >= half:
            r += 1
        if r - r0 <= max_stroke:
            out.append(_band(run[r0:r], along[r0:r], rows[r0:r], r0))
    return out


def _band(band: np.ndarray, along: np.ndarray, rows: list[int], r0: int) -> Fragment:
    """Fragment of rows r0.. of a component: its centre is the mean row of its pixels."""
    lo, _, width, _ = cv2.boundingRect(band)
    hi = lo + width - 1
    total = sum(rows)
    return Fragment(r0 + sum(i * n for i, n in enumerate(rows)) / total, lo, hi, total / (hi - lo + 1),
                    cv2.mean(along, mask=band)[0])


def group_lines(frags: list[Fragment], offset: float) -> list[Line]:
    """Group fragments whose centres lie within `offset` px of their neighbour into lines."""
    groups: list[list[Fragment]] = []
    for f in sorted(frags, key=lambda f: f.pos):
        if groups and f.pos - groups[-1][-1].pos <= offset:
            groups[-1].append(f)
        else:
            groups.append([f])
    return [Line.of(g) for g in groups]


def centre(pos: float) -> int:
    """Pixel index of a stroke centre; an even-width stroke (centre at .5) maps to its lower pixel."""
    return math.floor(pos + 0.5 - 1e-3)


def with_borders(lines: list[Line], lo: float, hi: float, start: float, end: float) -> list[Line]:
    """Append the two image borders at lo and hi, spanning [start, end], as virtual lines."""
    return lines + [Line.of([Fragment(pos, int(start), int(end), 0.0, 0.0)], virtual=True) for pos in (lo, hi)]


def arm_means(along: np.ndarray, rows: np.ndarray, starts: np.ndarray, length: int, spread: int) -> np.ndarray:
    """Mean of along[row + d, start:start+length] per row offset d in -spread..spread (axis 0)
    and junction (axis 1); pixels off the map count as 0, rows off it repeat the edge row."""
    n_rows, n_cols = along.shape
    cols = starts[:, None] + np.arange(length)[None, :]
    inside = (cols >= 0) & (cols < n_cols)
    offsets = np.arange(-spread, spread + 1)[:, None]
    near_rows = np.minimum(np.maximum(rows[None, :] + offsets, 0), n_rows - 1)
    vals = along[near_rows[:, :, None], np.minimum(np.maximum(cols, 0), n_cols - 1)[None, :, :]]
    return (vals * inside[None]).sum(axis=2) / length


def arm_tests(along: np.ndarray, thr: float, rows: np.ndarray, at: np.ndarray, gap: np.ndarray,
              p: RoiParams) -> tuple[np.ndarray, np.ndarray]:
    """(line runs that way, only that way) per direction (row 0 forward, row 1 backward) and junction.

    An arm runs when its mean contrast within 1 px of the line's centre (JPEG or grouping may
    move a 1 px stroke's centre by a pixel) reaches arm_frac x the threshold. The opposite arm
    has stopped when nothing within stop_spread px of the line (a curving fibre drifts off the
    row) reaches the threshold or stop_frac x the running arm. Both arms and both spreads come
    from one gather.
    """
    n, wide = len(rows), max(1, p.stop_spread)
    means = arm_means(along, np.concatenate([rows, rows]),
                      np.concatenate([at + gap, at - gap - p.arm + 1]), p.arm, wide).reshape(2 * wide + 1, 2, n)
    near = means[wide - 1:wide + 2].max(axis=0)
    spread = means[wide - p.stop_spread:wide + p.stop_spread + 1].max(axis=0)
    runs = near >= p.arm_frac * thr
    return runs, runs & (spread[::-1] < np.maximum(thr, p.stop_frac * near))


def corner_maps(h: AxisStrokes, v: AxisStrokes, hl: list[Line], vl: list[Line], frame: Frame,
                p: RoiParams) -> dict[str, np.ndarray]:
    """Matrices TL/TR/BL/BR [i, j]: 2 if horizontal line i and vertical line j form that corner,
    1 if only one of them stops there (a T: texture or another stroke runs on), else 0; and
    HDIR/VDIR [i, j]: +1 / -1 where the horizontal (vertical) line runs only right / left (down /
    up) from the junction, 0 where it runs both ways or neither.

    A drawn corner is where both strokes run on one side only; an arm is probed `arm` px long,
    starting `arm_gap` px plus half the other stroke beyond the junction (the other stroke's own
    pixels are 0 in this axis' map). A border line and a stroke form a corner (2) when the stroke
    runs into the border. All junctions and corner kinds are done in a few array operations.
    """
    grids = np.zeros((len(CORNERS) + 2, len(hl), len(vl)), np.int8)
    maps = dict(zip((*CORNERS, "HDIR", "VDIR"), grids))
    hp, hlo, hhi = np.array([(ln.pos, ln.lo, ln.hi) for ln in hl]).T
    vp, vlo, vhi = np.array([(ln.pos, ln.lo, ln.hi) for ln in vl]).T
    hv, vv = np.array([ln.virtual for ln in hl]), np.array([ln.virtual for ln in vl])
    reach = 2 * (p.arm_gap + p.arm)  # fragments may stop short of a corner (JPEG, weak pens)
    near = ((vp[None, :] >= hlo[:, None] - reach) & (vp[None, :] <= hhi[:, None] + reach)
            & (hp[:, None] >= vlo[None, :] - reach) & (hp[:, None] <= vhi[None, :] + reach))
    ii, jj = np.nonzero(near & ~hv[:, None] & ~vv[None, :])
    if len(ii):
        rows, cols = ii.tolist(), jj.tolist()
        ys = np.array([centre(hl[i].pos) for i in rows])
        xs = np.array([centre(vl[j].pos) for j in cols])
        h_on, h_only = arm_tests(h.along, h.thr, ys, xs, np.array([math.ceil(vl[j].thick / 2) for j in cols]) + p.arm_gap, p)
        v_on, v_only = arm_tests(v.along, v.thr, xs, ys, np.array([math.ceil(hl[i].thick / 2) for i in rows]) + p.arm_gap, p)
        hk, vk = ([(1 - d[axis]) // 2 for d in CORNERS.values()] for axis in (0, 1))  # direction row per corner
        grids[:len(CORNERS), ii, jj] = np.where(h_only[hk] & v_only[vk], 2,
                                                (h_only[hk] & v_on[vk]) | (v_only[vk] & h_on[hk]))
        grids[len(CORNERS):, ii, jj] = np.stack([h_only[0], v_only[0]]).astype(np.int8) - np.stack([h_only[1], v_only[1]])
    tol = p.border_tol
    reaches = {"left": hlo <= frame.left + tol, "right": hhi >= frame.right - tol,
               "top": vlo <= frame.top + tol, "bottom": vhi >= frame.bottom - tol}
    edge = {"top": [i for i, ln in enumerate(hl) if ln.virtual and ln.pos == frame.top],
            "bottom": [i for i, ln in enumerate(hl) if ln.virtual and ln.pos == frame.bottom],
            "left": [j for j, ln in enumerate(vl) if ln.virtual and ln.pos == frame.left],
            "right": [j for j, ln in enumerate(vl) if ln.virtual and ln.pos == frame.right]}
    for key, hside, vside in (("TL", "top", "left"), ("TR", "top", "right"),
                              ("BL", "bottom", "left"), ("BR", "bottom", "right")):
        for i in edge[hside]:  # the border row meets the strokes running into it, and the border column
            maps[key][i, reaches[hside] & ~vv] = 2
            maps[key][i, edge[vside]] = 2
        for j in edge[vside]:
            maps[key][reaches[vside] & ~hv, j] = 2
    return maps


def rectangles(green: np.ndarray, hl: list[Line], vl: list[Line], maps: dict[str, np.ndarray],
               p: RoiParams, *, min_side: int, cut_strength: float) -> list[Candidate]:
    """Boxes = top/bottom/left/right lines joined by matching corners, at most max_weak of them
    T-shaped (none when two sides are the border: one corner is all that vouches for it); each
    drawn side covered by strokes for >= min_cover of its length (corners excluded); all drawn
    with one pen, of at least cut_strength contrast when cut by the border; square corners; not
    the union of two boxes.

    The pairs of rows with a left and a right pair of corners are found on the matrices; the
    few candidates they give are checked on plain lists (numpy's per-call cost dominates there).
    """
    tl, tr, bl, br = ((maps[k] > 0) for k in CORNERS)
    hp = np.array([ln.pos for ln in hl])
    has_left = (tl[:, None, :] & bl[None, :, :]).any(axis=2)
    has_right = (tr[:, None, :] & br[None, :, :]).any(axis=2)
    pairs = np.argwhere(has_left & has_right & (hp[None, :] - hp[:, None] >= min_side - 1)).tolist()
    if not pairs:
        return []
    g = {k: m.tolist() for k, m in maps.items()}
    margin = p.arm_gap + p.smooth // 2
    found: list[Candidate] = []
    for (i, j, k, r), weak in corner_quads(g, pairs, len(vl)):
        top, bot, left, right = sides = (hl[i], hl[k], vl[j], vl[r])
        virtual = sum(s.virtual for s in sides)
        if right.pos - left.pos < min_side - 1 or virtual > 2 or weak > (0 if virtual > 1 else p.max_weak):
            continue
        x1, y1, x2, y2 = centre(left.pos), centre(top.pos), centre(right.pos), centre(bot.pos)
        mx, my = min(margin, (x2 - x1) // 3), min(margin, (y2 - y1) // 3)
        pens = [top.pen(x1 + mx, x2 - mx), bot.pen(x1 + mx, x2 - mx),
                left.pen(y1 + my, y2 - my), right.pen(y1 + my, y2 - my)]
        drawn = [pen for pen, s in zip(pens, sides) if not s.virtual]
        if min(d.cover for d in drawn) < p.min_cover:
            continue
        if not one_pen(drawn, p.consistency):
            continue
        pen = Pen(1.0, median(d.width for d in drawn), median(d.contrast for d in drawn), 0.0)
        if virtual and pen.contrast < cut_strength:
            continue
        if not square_corners(green, sides, (x1, y1, x2, y2), pen, p):
            continue
        across_v = [n for n in range(len(vl)) if g["VDIR"][i][n] == 1 and g["VDIR"][k][n] == -1]
        if split(across_v, vl, x1, x2, pen, p, min_side - 1):
            continue
        across_h = [n for n in range(len(hl)) if g["HDIR"][n][j] == 1 and g["HDIR"][n][r] == -1]
        if split(across_h, hl, y1, y2, pen, p, min_side - 1):
            continue
        box = (centre(pens[2].centre), centre(pens[0].centre), centre(pens[3].centre), centre(pens[1].centre))
        found.append(Candidate(box, sides, pen.width, min(d.contrast for d in drawn), weak))
    return found


def corner_quads(g: dict[str, list[list[int]]], pairs: list[list[int]], n_vertical: int
                 ) -> Iterator[tuple[tuple[int, int, int, int], int]]:
    """Candidate boxes as (top, left, bottom, right) line indices whose four corners match, with how
    many of those corners are T-shaped (a corner map value of 1)."""
    for i, k in pairs:
        lefts = [j for j in range(n_vertical) if g["TL"][i][j] and g["BL"][k][j]]
        rights = [r for r in range(n_vertical) if g["TR"][i][r] and g["BR"][k][r]]
        for j, r in product(lefts, rights):
            weak = (g["TL"][i][j] == 1) + (g["TR"][i][r] == 1) + (g["BL"][k][j] == 1) + (g["BR"][k][r] == 1)
            yield (i, j, k, r), weak


def one_pen(pens: list[Pen], consistency: float) -> bool:
    """Sides agree in contrast (ratio >= consistency). Width is no test: JPEG smears a 1 px
    horizontal stroke to 4-5 px and leaves the vertical ones at 2."""
    strength = [d.contrast for d in pens]
    return min(strength) >= consistency * max(strength)


def square_corners(green: np.ndarray, sides: tuple[Line, ...], box: Box, pen: Pen, p: RoiParams) -> bool:
    """Drawn corners are square: the pixel where two strokes meet is greener than the floor of a
    5x5 patch diagonally outside the corner by >= fill_frac of the stroke contrast. Rounded
    outlines (the letter O of a green overlay, a rounded ROI) fail here."""
    top, bot, left, right = sides
    x1, y1, x2, y2 = box
    h, w = green.shape
    d = int(np.ceil(pen.width / 2)) + 3
    for hs, vs, x, y, sx, sy in ((top, left, x1, y1, -1, -1), (top, right, x2, y1, 1, -1),
                                 (bot, left, x1, y2, -1, 1), (bot, right, x2, y2, 1, 1)):
        if hs.virtual or vs.virtual:
            continue
        inside = int(green[max(0, y - 1):y + 2, max(0, x - 1):x + 2].max())
        oy, ox = min(max(0, y + sy * d), h - 1), min(max(0, x + sx * d), w - 1)
        outside = int(green[max(0, oy - 2):oy + 3, max(0, ox - 2):ox + 3].min())
        if inside - outside < p.fill_frac * pen.contrast:
            return False
    return True


def split(across: list[int], lines: list[Line], lo: int, hi: int, pen: Pen, p: RoiParams, margin: int) -> bool:
    """True when a line drawn with the box's pen lies between lo and hi (over `margin` px from
    both) and runs from one side of the box to the other, stopping at both (`across`: the lines
    that run only inwards from either side): the candidate is the union of two boxes sharing a
    row or column. A fibre crossing the box does not stop at its sides."""
    return any(not lines[n].virtual and lo + margin < lines[n].pos < hi - margin
               and one_pen([lines[n].pen(lines[n].lo, lines[n].hi), pen], p.split_consistency)
               for n in across)


def dedupe(found: list[Candidate], tol: int = 3) -> list[Candidate]:
    """Keep one of each group of rival boxes: near-identical ones (a stroke hugging the border
    also matches the border itself) and ones sharing three sides (the fourth is a JPEG echo one
    block beside a stroke, or a fibre). Fewer border sides, then fewer T corners, then stronger
    strokes win."""
    keep: list[Candidate] = []
    for f in sorted(found, key=lambda f: (f.virtual, f.weak, -f.weakest)):
        if all(max(abs(a - b) for a, b in zip(f.box, k.box)) > tol
               and sum(a is b and not a.virtual for a, b in zip(f.sides, k.sides)) < 3 for k in keep):
            keep.append(f)
    return keep


def paint_strokes(mask: np.ndarray, box: Box, drawn: tuple[bool, bool, bool, bool], thick: int, margin: int) -> None:
    """Mark the drawn sides (top, bottom, left, right) of a box in mask, `margin` px wider."""
    x1, y1, x2, y2 = box
    lo, hi = (thick - 1) // 2 + margin, thick // 2 + margin
    bands = (((y1 - lo, y1 + hi), (x1 - lo, x2 + hi)), ((y2 - lo, y2 + hi), (x1 - lo, x2 + hi)),
             ((y1 - lo, y2 + hi), (x1 - lo, x1 + hi)), ((y1 - lo, y2 + hi), (x2 - lo, x2 + hi)))
    for on, (rows, cols) in zip(drawn, bands):
        if on:
            mask[max(0, rows[0]):rows[1] + 1, max(0, cols[0]):cols[1] + 1] = True


def stroke_context(p: RoiParams) -> int:
    """How far from a stroke the later steps read (px): half the lift window, the top-hat across
    (max_stroke + 3), and an arm probe (half the widest stroke, arm_gap, arm, half the smoothing)."""
    return max(p.lift_window // 2, p.max_stroke + 3, p.max_stroke // 2 + p.arm_gap + p.arm + p.smooth // 2)


def find_boxes(green: np.ndarray, frame: Frame, p: RoiParams, min_side: int) -> list[Candidate]:
    """All boxes in a greenness image (crop), in its own coordinates."""
    integral = cv2.integral(green)
    hs = axis_strokes(green, integral, p, vertical=False, min_len=min_side)
    vs = axis_strokes(green, integral, p, vertical=True, min_len=min_side)
    if not hs.lines or not vs.lines:
        return []
    hl = with_borders(hs.lines, frame.top, frame.bottom, frame.left, frame.right)
    vl = with_borders(vs.lines, frame.left, frame.right, frame.top, frame.bottom)
    maps = corner_maps(hs, vs, hl, vl, frame, p)
    return dedupe(rectangles(green, hl, vl, maps, p, min_side=min_side, cut_strength=p.cut_gain * max(hs.thr, vs.thr)))


def detect_boxes(rgb: np.ndarray, *, min_side: int = 12, params: RoiParams = RoiParams()) -> RoiResult:
    """Find every green rectangle (sides >= min_side px) in an RGB uint8 image."""
    p = params
    h, w = rgb.shape[:2]
    half = half_greenness(rgb)
    sample = np.ascontiguousarray(half[::4, ::4])  # one 2x2 mean per 8x8 block
    flags = [] if quantile_at_most(sample, 0.5, 127.5 + p.cast_level / 2) else ["green_cast"]
    region = stroke_region(half, (h, w), floor=p.floor, pad=stroke_context(p), min_cells=min_side // 2)
    found: list[Candidate] = []
    if region is not None:
        y0, y1, x0, x1 = region
        frame = Frame(float(-x0), float(-y0), float(w - 1 - x0), float(h - 1 - y0))
        found = [replace(c, box=(c.box[0] + x0, c.box[1] + y0, c.box[2] + x0, c.box[3] + y0))
                 for c in find_boxes(greenness(rgb[y0:y1, x0:x1]), frame, p, min_side)]
    found.sort(key=lambda c: (c.box[1], c.box[0]))
    mask = np.zeros((h, w), bool)
    for c in found:
        x1, y1, x2, y2 = c.box
        flags += [name for name, on in (("thick_stroke", c.thick > p.thick_stroke), ("cut_by_border", c.virtual > 0),
                                        ("tiny_box", min(x2 - x1, y2 - y1) < p.tiny_side)) if on]
        paint_strokes(mask, c.box, tuple(not s.virtual for s in c.sides), max(1, round(c.thick)), p.mask_margin)
    flags.append("no_box" if not found else "multiple_boxes" if len(found) > 1 else "")
    return RoiResult([c.box for c in found], [f for i, f in enumerate(flags) if f and f not in flags[:i]], mask)
