"""Which images belong together: explicit group keys and perceptual near-duplicates.

A split is only honest if no test image has a copy, or a sibling from the same patient, in
training. Rows are therefore split by group, not by id:

- an explicit key (a patient, study or source-image id) from the source's own columns
  (GROUP_FIELDS, see group_key) or from a side file (`convert --groups`) puts every row that
  carries it in one group, and decides that group alone: hashes never link keyed rows;
- every other row is linked to the rows whose perceptual hash (image_hash) lies within a small
  Hamming distance, transitively (union-find), so resized, re-encoded or slightly cropped copies
  of one image form one group.

image_hash runs in the workers (one 64-bit integer per image); linking needs every hash at once,
so it runs when convert assembles the final files (near_pairs + components, exact and without
comparing all pairs).
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from math import comb

import cv2
import numpy as np

# Columns / JSON fields that carry an explicit group key, in order of preference.
GROUP_FIELDS = ("group", "patient_id", "study_id", "source_image_id")
HASH_BITS = 64
DEFAULT_DISTANCE = 8

_SIDE = 32  # the hash is computed on a 32x32 thumbnail
_WORK = 128  # ... of the image first area-averaged to at most this many px a side
_BLUR = 1.0
_CENTRE_SIGMA = 0.2  # Gaussian window, in image widths, that weights the centre over the borders
_FLAT = 1.0  # thumbnail std (grey levels) below which an image has no structure to hash
_BRUTE_CHUNK = 1 << 20  # pairs compared per vectorised step inside a bucket


def group_key(row: Mapping) -> str | None:
    """The explicit group key of a source row: "field=value" of the first GROUP_FIELDS it fills.

    The field name is part of the key so that patient 7 and study 7 stay apart.
    """
    for name in GROUP_FIELDS:
        value = row.get(name)
        if value is not None and str(value).strip():
            return f"{name}={str(value).strip()}"
    return None


def _zigzag(n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the `count` lowest DCT frequencies after DC, in zig-zag order."""
    cells = sorted(((i, j) for i in range(n) for j in range(n)), key=lambda p: (p[0] + p[1], p[0]))[1:count + 1]
    return np.array([i for i, _ in cells]), np.array([j for _, j in cells])


def _centre_window(n: int, sigma: float) -> np.ndarray:
    """n x n Gaussian window (sigma in image widths): borders, which crops remove, weigh little."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
    return np.exp(-(c[None, :] ** 2 + c[:, None] ** 2) / (2 * sigma ** 2)).astype(np.float32)


_ZZ_ROWS, _ZZ_COLS = _zigzag(_SIDE, HASH_BITS)
_CENTRE = _centre_window(_SIDE, _CENTRE_SIGMA)


def _stroke_free_weights(rgb: np.ndarray) -> np.ndarray:
    """Per pixel 1, falling to 0 where green exceeds red and blue by 10 to 50 levels.

    What the drawn ROI strokes and their JPEG smear look like; real images are almost never
    that green. The detector's stroke mask would serve too, but its width is in pixels and varies
    with a copy's size and JPEG quality, while the colour is the same in every copy.
    """
    c = rgb.astype(np.int16)
    excess = c[..., 1] - np.maximum(c[..., 0], c[..., 2])
    return np.clip(1.0 - (excess - 10) / 40.0, 0.0, 1.0).astype(np.float32)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """32x32 area-averaged grey thumbnail in which the drawn strokes do not count.

    The image is first area-averaged to at most _WORK px a side (cheap, and a stroke keeps enough
    of its green there to be recognised), then averaged with the stroke-free weights (normalised
    convolution): the boxes are left out of the hash at little cost, so an image hashes alike
    with any box drawn on it, or none.
    """
    h, w = rgb.shape[:2]
    if max(h, w) > _WORK:
        s = _WORK / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if rgb.ndim == 2:
        return cv2.resize(rgb.astype(np.float32), (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    weight = _stroke_free_weights(rgb)
    num = cv2.resize(grey * weight, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), float(grey.mean())).astype(np.float32)


def image_hash(rgb: np.ndarray) -> int | None:
    """64-bit perceptual hash of an image; None for a flat image (nothing to recognise it by).

    Signs of the 64 lowest DCT frequencies (against their median) of a blurred 32x32 grey
    thumbnail, strokes left out, under a centre-weighted window. Low frequencies survive
    resizing and JPEG re-encoding; the median makes it blind to brightness and contrast; the
    window lets a crop of a few percent, which removes borders, move few bits. Measured on the
    bundled sample's 240 images (tests/data_prep/test_groups.py checks the near-duplicates): a copy at half
    size and JPEG quality 30 moves at most 6 bits, one cropped by 2% per side at most 8 (2% off two
    sides only: 97% within 8), a second box drawn on it at most 4, while images of different base
    images differ by 10 or more. Crops of 3-5% stay within 8 bits for ~85% of images; a flipped
    copy is not a near-duplicate to this hash (~32 bits off). ~0.5 ms for a 512x512 image.
    """
    small = cv2.GaussianBlur(_thumbnail(rgb), (0, 0), _BLUR)
    if float(small.std()) < _FLAT:
        return None
    coeffs = cv2.dct((small - small.mean()) * _CENTRE)[_ZZ_ROWS, _ZZ_COLS]
    bits = coeffs > np.median(coeffs)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    return np.bitwise_count(x).astype(np.int64)


def near_pairs(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) that connect every two hashes within `distance` bits of each other,
    directly or through other such pairs (a spanning set: not every close pair is listed).

    Exact, by the pigeonhole principle: cut the 64 bits into distance + q bands; two hashes that
    differ in at most `distance` bits differ in at most `distance` bands, so they agree on at least
    q bands entirely. For every choice of q bands, hashes are sorted by those bands and only
    hashes that agree on all of them are compared: never all n^2 pairs. q trades sorting (more
    band choices) against comparing (fewer hashes per bucket) and is picked for n (_plan).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    found = UnionFind(len(uniq))
    if distance > 0 and len(uniq) > 1:
        for mask in _keyings(len(uniq), distance):
            found.union(*_bucket_pairs(uniq, uniq & np.uint64(mask), distance, found.roots()))
    root = found.roots()[inverse]  # identical hashes share their unique value's root
    linked = np.flatnonzero(first[root] != np.arange(len(hashes)))
    return first[root[linked]].astype(np.int64), linked.astype(np.int64)


def _plan(n: int, distance: int) -> tuple[int, int]:
    """(bands, q) for n distinct hashes: the q in 1..4 with the least estimated work.

    Per band choice: sorting costs ~n log n, comparing ~n^2 / 2^(bits + 1) for bits = 64 q / bands
    if band values spread evenly; C(bands, q) band choices.
    """
    def cost(q: int) -> float:
        bands = min(distance + q, HASH_BITS)
        bits = HASH_BITS * q / bands
        return comb(bands, q) * (5.0 * n * max(1.0, np.log2(max(n, 2))) + 30.0 * n * n / 2.0 ** (bits + 1))
    q = min(range(1, 5), key=cost)
    return min(distance + q, HASH_BITS), q


def _keyings(n: int, distance: int) -> list[int]:
    """The bit masks to bucket by: every union of q of the bands (see near_pairs)."""
    bands, q = _plan(n, distance)
    edges = np.linspace(0, HASH_BITS, bands + 1).round().astype(int)
    masks = [((1 << int(hi)) - 1) ^ ((1 << int(lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
    return [sum(chosen) for chosen in combinations(masks, q)]


def _bucket_pairs(values: np.ndarray, keys: np.ndarray, distance: int,
                  roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within `distance` among values that share a key and are not yet linked (roots differ).

    Sort by key, then compare each value with the one `step` places further on, for growing
    steps, while both are in one bucket: every step is one vectorised pass over the values still
    in a bucket larger than `step`, so big buckets cost their pairs and nothing more.
    """
    order = np.argsort(keys, kind="stable")
    k, v, r = keys[order], values[order], roots[order]
    out_i, out_j = [], []
    active = np.flatnonzero(k[1:] == k[:-1])  # positions with a same-bucket neighbour one step on
    step = 1
    while len(active):
        for lo in range(0, len(active), _BRUTE_CHUNK):
            pos = active[lo:lo + _BRUTE_CHUNK]
            hit = pos[(r[pos] != r[pos + step]) & (popcount(v[pos] ^ v[pos + step]) <= distance)]
            out_i.append(order[hit])
            out_j.append(order[hit + step])
        step += 1
        active = active[active + step < len(k)]
        active = active[k[active + step] == k[active]]
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


class UnionFind:
    """Union-find over n nodes, in bulk numpy operations; a root is the smallest index of its set."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def union(self, i: np.ndarray, j: np.ndarray) -> None:
        """Join the sets of every pair (i[k], j[k]).

        Each round hooks the larger root of every still-separate pair to the smaller one (no
        cycles), then halves paths until every node points at its root; it stops when no pair
        joins two roots.
        """
        i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
        while len(i):
            ri, rj = self.parent[i], self.parent[j]
            apart = ri != rj
            if not apart.any():
                return
            i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
            np.minimum.at(self.parent, np.maximum(ri, rj), np.minimum(ri, rj))
            self._compress()

    def _compress(self) -> None:
        while True:
            grand = self.parent[self.parent]
            if np.array_equal(grand, self.parent):
                return
            self.parent = grand

    def roots(self) -> np.ndarray:
        """The root of every node (after union, every parent is a root)."""
        return self.parent


def components(n: int, pairs_i: np.ndarray, pairs_j: np.ndarray) -> np.ndarray:
    """Connected components of n nodes under the given edges: each node's label is the smallest
    node index of its component."""
    found = UnionFind(n)
    found.union(pairs_i, pairs_j)
    return found.roots()
