"""Building the sample: plan rows over the sources, augment, draw the green boxes, caption, write.

Every random choice comes from numpy generators seeded by (seed, purpose, row), and the JPEG
encoder settings are fixed, so one seed always gives byte-identical files.
"""
from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from data_prep.draw import draw_box
from data_prep.pixel_boxes import clip_box
from data_prep.sample.augment import apply_geometry, apply_intensity, sample_augment
from data_prep.sample.captions import caption
from data_prep.sample.catalog import SourceSpec
from data_prep.sample.sources import Frame

FEATURES = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                              "caption": datasets.Value("string")})
PARQUET = "medtrinity_sample.parquet"
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Settings:
    """Generation knobs (all from the CLI)."""

    rows: int
    seed: int
    sizes: tuple[int, int]
    quality: tuple[int, int]
    strokes: tuple[int, int]
    min_box: int
    max_angle: float
    two_box_share: float


@dataclass(frozen=True)
class Plan:
    """Which source, frame and ROIs a row uses."""

    source: int
    frame: int
    rois: tuple[int, ...]


@dataclass(frozen=True)
class Row:
    id: str
    jpeg: bytes
    caption: str
    manifest: dict


def plan_rows(frames: Sequence[Sequence[Frame]], settings: Settings) -> list[Plan]:
    """Spread rows evenly over sources (shuffled rounds) and cycle through each source's frames.

    `two_box_share` of the rows are planned with two boxes (sources with two ROIs only);
    render_row falls back to one box where augmentation brings the two too close.
    """
    rng = np.random.default_rng([settings.seed, 0])
    order: list[int] = []
    while len(order) < settings.rows:
        order.extend(int(i) for i in rng.permutation(len(frames)))
    order = order[:settings.rows]
    eligible = [row for row, source in enumerate(order) if len(frames[source][0].rois) > 1]
    wanted = min(len(eligible), round(settings.two_box_share * settings.rows))
    pairs = {int(row) for row in rng.choice(eligible, size=wanted, replace=False)}
    visits: Counter[int] = Counter()
    plans = []
    for row, source in enumerate(order):
        frame = visits[source] % len(frames[source])
        visits[source] += 1
        n_rois = len(frames[source][frame].rois)
        if row in pairs:
            rois: tuple[int, ...] = (0, 1)
        else:
            rois = (0,) if n_rois == 1 or rng.random() < 0.75 else (int(rng.integers(1, n_rois)),)
        plans.append(Plan(source, frame, rois))
    return plans


def drawable_box(box: Sequence[float], width: int, height: int, stroke: int, min_side: int
                 ) -> tuple[int, int, int, int]:
    """Integer box of at least `min_side` whose whole stroke (see draw_box) stays inside the image."""
    lo, hi = (stroke - 1) // 2, stroke // 2
    x1, y1, x2, y2 = clip_box(box, width, height)
    out = []
    for a, b, size in ((x1, x2, width), (y1, y2, height)):
        first, last = lo, size - 1 - hi
        span = min(max(b - a, min_side), last - first)
        start = min(max(round((a + b) / 2.0 - span / 2.0), first), last - round(span))
        out.append((int(start), int(start + round(span))))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def separate(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    """Whether two boxes (with strokes) stay `gap` pixels apart, so each box interior is clean."""
    return (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def row_id(seed: int, index: int) -> str:
    """A uuid-shaped id, like MedTrinity's, derived from (seed, row) only."""
    return str(uuid.UUID(bytes=np.random.default_rng([seed, 2, index]).bytes(16), version=4))


def encode_jpeg(rgb: np.ndarray, quality: int, stroke: int) -> bytes:
    """Baseline JPEG with fixed settings and optimised Huffman tables (size budget).

    Strokes of 1-2 px lose their green under 4:2:0 chroma subsampling, so those rows keep
    full-resolution chroma (4:4:4); wider strokes survive 4:2:0, which saves ~15% per image.
    """
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="JPEG", quality=quality, subsampling=0 if stroke < 3 else 2,
                                     optimize=True, progressive=False)
    return buffer.getvalue()


def render_row(index: int, plan: Plan, frames: Sequence[Sequence[Frame]], settings: Settings) -> Row:
    """Augment one frame, draw its boxes, write its caption and manifest entry."""
    rng = np.random.default_rng([settings.seed, 1, index])
    frame = frames[plan.source][plan.frame]
    spec: SourceSpec = frame.spec
    height, width = frame.rgb.shape[:2]
    chosen = [frame.rois[i] for i in plan.rois]
    source_boxes = [box for box, _ in chosen]
    aug = sample_augment(rng, width, height, source_boxes, spec.flips, settings.sizes, settings.max_angle)
    image, moved = apply_geometry(frame.rgb, source_boxes, aug, reflect_border=spec.modality == "pathology")
    image = apply_intensity(image, aug)
    out_h, out_w = image.shape[:2]
    stroke = int(rng.integers(settings.strokes[0], settings.strokes[1] + 1))
    boxes = [drawable_box(b, out_w, out_h, stroke, settings.min_box) for b in moved]
    findings = [finding for _, finding in chosen]
    if len(boxes) == 2 and not separate(boxes[0], boxes[1], stroke + 2):
        boxes, findings = boxes[:1], findings[:1]
    for box in boxes:
        image = draw_box(image, box, thickness=stroke)
    quality = int(rng.integers(settings.quality[0], settings.quality[1] + 1))
    text = caption(rng, spec, boxes, findings, out_w, out_h)
    rid = row_id(settings.seed, index)
    manifest = {
        "id": rid, "source": spec.key, "modality": spec.modality, "organ": spec.organ,
        "width": out_w, "height": out_h, "boxes": [list(b) for b in boxes], "stroke": stroke,
        "augment": f"frame={frame.index};{aug.describe()};jpeg_q={quality}",
    }
    return Row(rid, encode_jpeg(image, quality, stroke), text, manifest)


def build_rows(frames: Sequence[Sequence[Frame]], settings: Settings) -> list[Row]:
    return [render_row(i, plan, frames, settings) for i, plan in enumerate(plan_rows(frames, settings))]


def write_parquet(rows: Sequence[Row], path: Path) -> None:
    """The 25M_demo schema: id string, image (HF Image feature, JPEG bytes), caption string."""
    table = {"id": [r.id for r in rows], "image": [{"bytes": r.jpeg, "path": None} for r in rows],
             "caption": [r.caption for r in rows]}
    datasets.Dataset.from_dict(table, features=FEATURES).to_parquet(str(path))


def write_manifest(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.manifest, ensure_ascii=False) + "\n")

