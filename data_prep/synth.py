"""Synthetic MedTrinity-shaped rows (grey scan-like images with green ROI boxes + captions).

For tests and the throughput benchmark: fixtures of any size, offline, in the exact 25M_demo
parquet schema (id string, image = HF Image struct {bytes, path}, caption string).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.draw import draw_box
from data_prep.pixel_boxes import area_share, location_phrase

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
DEMO_SCHEMA = pa.schema([("id", pa.string()), ("image", IMAGE_TYPE), ("caption", pa.string())])
_MODALITIES = (("CT", "chest", "hypodense"), ("MRI", "brain", "hyperintense on T2-weighted images"),
               ("X-ray", "chest", "opaque"), ("ultrasound", "liver", "hypoechoic"))


def scan_like(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A grey RGB image with an elliptic 'body', soft blobs and correlated noise (no green anywhere)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = (((xx - w / 2) / (0.45 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2) < 1
    img = np.where(body, 90.0, 8.0).astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.03, 0.12) * min(h, w)
        img += rng.uniform(-50, 90) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    img = cv2.GaussianBlur(img + rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.0)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def random_boxes(rng: np.random.Generator, size: tuple[int, int], n: int) -> list[list[int]]:
    """Up to n non-overlapping boxes with sides of 1/8 to 1/3 of the image, well inside it."""
    h, w = size
    lo = max(16, min(h, w) // 8)
    boxes: list[list[int]] = []
    for _ in range(50 * n):
        if len(boxes) == n:
            break
        bw, bh = int(rng.integers(lo, max(lo + 1, w // 3))), int(rng.integers(lo, max(lo + 1, h // 3)))
        x1, y1 = int(rng.integers(8, max(9, w - bw - 8))), int(rng.integers(8, max(9, h - bh - 8)))
        b = [x1, y1, x1 + bw, y1 + bh]
        if all(b[2] + 10 < o[0] or o[2] + 10 < b[0] or b[3] + 10 < o[1] or o[3] + 10 < b[1] for o in boxes):
            boxes.append(b)
    return boxes


def caption(boxes: list[list[int]], size: tuple[int, int], k: int) -> str:
    """A caption in MedTrinity's template for the first box."""
    modality, organ, texture = _MODALITIES[k % len(_MODALITIES)]
    h, w = size
    if not boxes:
        return f"The image is a {modality} scan of the {organ} with no focal abnormality."
    b = boxes[0]
    return (f"The image is a {modality} scan of the {organ}. The region of interest is located in the "
            f"{location_phrase(b, w, h)} region and occupies approximately "
            f"{100 * area_share(b, w, h):.1f}% of the image area. It appears {texture} and is adjacent "
            f"to the surrounding tissue. These findings are suggestive of a neoplastic lesion.")


def synthetic_row(rng: np.random.Generator, k: int, size: tuple[int, int] = (512, 512),
                  n_boxes: int | None = None, thickness: int = 2, quality: int = 90) -> dict:
    """One row: JPEG bytes with 0-2 drawn boxes, the true boxes and a caption."""
    n = int(rng.integers(0, 3)) if n_boxes is None else n_boxes
    rgb = scan_like(rng, size)
    boxes = random_boxes(rng, size, n)
    for b in boxes:
        rgb = draw_box(rgb, b, thickness=thickness)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return {"id": f"syn{k:07d}", "jpeg": buf.tobytes(), "boxes": boxes, "caption": caption(boxes, size, k)}


def write_demo_parquet(path: Path, rows: Iterable[dict], row_group: int = 100, repeated_images: bool = False) -> int:
    """Write rows ({id, jpeg bytes or None, caption}) as 25M_demo parquet, streaming; returns the count.

    repeated_images: the rows reuse a few hundred images, so dictionary-encode the bytes per row
    group (a 200k-row benchmark stream then takes ~0.4 GB of disk instead of ~6 GB).
    """
    n = 0
    extra = {"dictionary_pagesize_limit": 64 << 20} if repeated_images else {}
    with pq.ParquetWriter(path, DEMO_SCHEMA, **extra) as writer:
        for batch in _batches(rows, row_group):
            writer.write_table(pa.Table.from_pylist(
                [{"id": r["id"], "image": {"bytes": r.get("jpeg"), "path": None}, "caption": r.get("caption")}
                 for r in batch], schema=DEMO_SCHEMA))
            n += len(batch)
    return n


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for r in rows:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
