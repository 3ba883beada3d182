"""The ROI detector bench: data_prep.roi against the reference recipe's detector on a few hundred
synthetic scenes (data_prep.roi_scenes) covering every condition the detector must handle.

Run: python -m bench.roi_detector [--per-condition N] [--seed S]
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from data_prep.inpaint import remove_strokes
from data_prep.pixel_boxes import box_iou
from data_prep.roi import detect_boxes
from data_prep.roi_scenes import (BACKGROUNDS, GREENISH, GREENS, PixelBox, Scene, border_box, multi_boxes,
                                  reference_boxes, scene)


def our_boxes(rgb: np.ndarray) -> list[PixelBox]:
    """data_prep.roi.detect_boxes, for scoring."""
    return detect_boxes(rgb).boxes


# ---------------------------------------------------------------- scoring
def match(pred: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], iou: float = 0.9
          ) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU; pairs (pred index, truth index) with IoU >= iou."""
    pairs = sorted(((box_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)),
                   reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for v, i, j in pairs:
        if v >= iou and i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def corner_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest absolute coordinate difference between two boxes, in px."""
    return float(max(abs(x - y) for x, y in zip(a, b)))


def bench_scenes(per_condition: int, seed: int) -> list[Scene]:
    """A few hundred scenes covering every condition the detector must handle."""
    out: list[Scene] = []
    s = seed * 100_000
    for i in range(per_condition):
        for k in (1, 2, 3, 4):
            out.append(scene(f"stroke {k}px", s + i * 10 + k, stroke=k))
        for q in (50, 75, 95):
            out.append(scene(f"jpeg q{q}", s + 1000 + i * 10 + q % 7, quality=q))
        rng = np.random.default_rng(s + 2000 + i)
        side = str(rng.choice(["left", "top", "right", "bottom", "corner"]))
        out.append(scene("border cut", s + 2000 + i, boxes=[border_box(rng, 512, 512, side)]))
        out.append(scene("tiny 12-16px", s + 3000 + i, box_side=(12, 16)))
        for sz in ((64, 64), (2048, 2048), (600, 900)):
            if sz[0] <= 1024 or i % 4 == 0:
                out.append(scene(f"size {sz[1]}x{sz[0]}", s + 4000 + i, size=sz))
        for name, col in GREENS.items():
            out.append(scene(f"green {name}", s + 5000 + i * 5 + len(name), color=col))
        plain = [k for k in BACKGROUNDS if k not in GREENISH]
        tint = float(rng.uniform(0.2, 0.45))
        out.append(scene("green cast + box", s + 6000 + i, bg=plain[i % len(plain)], tint=tint))
        out.append(scene("greenish tissue + box", s + 6500 + i, bg=GREENISH[i % 2]))
        out.append(scene("green cast, no box", s + 7000 + i, tint=float(rng.uniform(0.2, 0.45)), n_boxes=0))
        out.append(scene("2-4 boxes", s + 8000 + i, boxes=multi_boxes(rng, 512, 512)))
        for bg in BACKGROUNDS:
            out.append(scene(f"no box ({bg})", s + 9000 + i * 20 + len(bg), bg=bg, n_boxes=0,
                             quality=[None, 75][i % 2]))
    return out


@dataclass
class Tally:
    """Scores of one detector on one condition."""
    images: int = 0
    truths: int = 0
    hits: int = 0
    false: int = 0
    abs_err: float = 0.0
    max_err: float = 0.0
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        for name in ("images", "truths", "hits", "false", "abs_err", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_err = max(self.max_err, other.max_err)

    def cells(self) -> list[str]:
        """recall, false boxes per image, mean abs corner error, max corner error, ms per image."""
        return [f"{self.hits / self.truths:.2f}" if self.truths else "-", f"{self.false / self.images:.2f}",
                f"{self.abs_err / (4 * self.hits):.2f}" if self.hits else "-",
                f"{self.max_err:.0f}" if self.hits else "-", f"{1000 * self.seconds / self.images:.2f}"]


def score(detector: Callable[[np.ndarray], list[PixelBox]], scenes: Sequence[Scene]) -> dict[str, Tally]:
    """Per condition: boxes matched at IoU >= 0.9, unmatched detections, corner errors, CPU time."""
    tallies: dict[str, Tally] = {}
    for sc in scenes:
        t0 = time.process_time()
        pred = detector(sc.image)
        dt = time.process_time() - t0
        pairs = match(pred, sc.boxes)
        t = tallies.setdefault(sc.condition, Tally())
        t.images += 1
        t.truths += len(sc.boxes)
        t.hits += len(pairs)
        t.false += len(pred) - len(pairs)
        t.abs_err += sum(abs(a - b) for i, j in pairs for a, b in zip(pred[i], sc.boxes[j]))
        t.max_err = max([t.max_err] + [corner_error(pred[i], sc.boxes[j]) for i, j in pairs])
        t.seconds += dt
    return tallies


def inpaint_ms(scenes: Sequence[Scene]) -> float:
    """CPU ms per image of remove_strokes on the detected masks of 512x512 scenes with boxes."""
    work = [(sc.image, detect_boxes(sc.image).mask) for sc in scenes if sc.boxes and sc.image.shape[:2] == (512, 512)]
    t0 = time.process_time()
    for rgb, mask in work:
        remove_strokes(rgb, mask)
    return 1000 * (time.process_time() - t0) / max(1, len(work))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-condition", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    scenes = bench_scenes(args.per_condition, args.seed)
    ours, ref = score(our_boxes, scenes), score(reference_boxes, scenes)
    cols = ("recall", "false", "mae", "max", "ms")
    line = "| {:24s} | {:>4s} | " + " | ".join(["{:>6s}"] * 5 + ["{:>10s}"] * 5) + " |"
    print(f"{len(scenes)} scenes (seed {args.seed}); recall: boxes found at IoU >= 0.9; false: unmatched boxes per "
          "image; mae / max: abs corner error of matched boxes (px); ms: CPU per image, 1 thread; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(line.format("condition", "n", *(f"{c}" for c in cols), *(f"ref {c}" for c in cols)))
    print("|" + "|".join("-" * len(cell) for cell in line.format(*[""] * 12).split("|")[1:-1]) + "|")
    total_o, total_r = Tally(), Tally()
    for cond in ours:
        print(line.format(cond, str(ours[cond].images), *ours[cond].cells(), *ref[cond].cells()))
        total_o.add(ours[cond])
        total_r.add(ref[cond])
    print(line.format("all", str(total_o.images), *total_o.cells(), *total_r.cells()))
    print(f"remove_strokes (linear fill) on the detected masks: {inpaint_ms(scenes):.2f} ms per 512x512 image")


if __name__ == "__main__":
    main()
