"""A generated lesion task in the MedTrinity-25M `25M_demo` schema, for the learning check.

Each image is a scan-like abdominal slice with one elliptical lesion, bright (hyperdense,
"hemorrhage") or dark (hypodense, "cyst"). The finding depends only on what the box shows, so
verify negatives made by swapping findings are learnable from the pixels; the green ROI box is
drawn on the image as MedTrinity does, and the caption follows MedTrinity's template so the
real converter (`make data`) parses it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.draw import draw_box
from data_prep.pixel_boxes import area_share, location_phrase
from data_prep.synth import scan_like

SIZE = 224
MARGIN = 8  # px between a lesion and the border when drawing candidates
KINDS = {
    True: ("hyperdense", "hemorrhage"),
    False: ("hypodense", "cyst"),
}


@dataclass(frozen=True)
class Lesion:
    """One generated image: its truth (box, brightness) and the parquet row content."""
    id: str
    box: tuple[int, int, int, int]
    bright: bool
    jpeg: bytes
    caption: str

    @property
    def finding(self) -> str:
        return KINDS[self.bright][1]


def inside_body(size: int, shrink: float = 0.92) -> np.ndarray:
    """Where the elliptic 'body' of data_prep.synth.scan_like lies (shrunk), so a lesion sits on tissue:
    a dark lesion on the black background would be invisible."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.42 * size)) ** 2) < shrink ** 2


def lesion_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A soft-edged random ellipse (float mask in [0, 1]) lying wholly inside the body."""
    body = inside_body(size)
    while True:
        a, b = rng.uniform(7, 36), rng.uniform(7, 36)
        cx, cy = rng.uniform(MARGIN + a, size - MARGIN - a), rng.uniform(MARGIN + b, size - MARGIN - b)
        mask = np.zeros((size, size), np.float32)
        cv2.ellipse(mask, (round(cx), round(cy)), (round(a), round(b)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.2)
        if body[mask > 0.5].all():
            return mask


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The lesion's bounding box [x1, y1, x2, y2] (pixel edges) of the mask's > 0.5 region."""
    ys, xs = np.nonzero(mask > 0.5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def add_lesion(rgb: np.ndarray, mask: np.ndarray, bright: bool, rng: np.random.Generator) -> np.ndarray:
    """Blend a textured bright or dark lesion into a grey RGB image."""
    grey = rgb[..., 0].astype(np.float32)
    level = rng.uniform(190, 235) if bright else rng.uniform(10, 40)
    texture = cv2.GaussianBlur(rng.normal(0, 8, grey.shape).astype(np.float32), (0, 0), 1.5)
    out = np.clip(grey * (1 - mask) + (level + texture) * mask, 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


def caption(box: tuple[int, int, int, int], bright: bool, size: int = SIZE) -> str:
    """A MedTrinity-style caption: modality, organ, ROI location and area, density, hypothesis."""
    density, diagnosis = KINDS[bright]
    return (f"The image is an axial CT scan of the abdomen, showing the liver, the bowel loops and the spine. "
            f"The region of interest, located in the {location_phrase(box, size, size)} region of the image, "
            f"occupies approximately {100 * area_share(box, size, size):.1f}% of the image area and appears as "
            f"a well-circumscribed {density} lesion relative to the surrounding soft tissue. "
            f"It lies within the abdominal soft tissue, adjacent to the neighbouring bowel loops. "
            f"These features are suggestive of a {diagnosis}.")


def make_lesion(rng: np.random.Generator, k: int, size: int = SIZE) -> Lesion:
    """One image with its lesion, the green box drawn on (2 px) and the caption."""
    bright = bool(rng.random() < 0.5)
    mask = lesion_mask(rng, size)
    box = bounding_box(mask)
    rgb = draw_box(add_lesion(scan_like(rng, (size, size)), mask, bright, rng), box, thickness=2)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return Lesion(f"lesion{k:05d}", box, bright, buf.tobytes(), caption(box, bright, size))


def lesions(n: int, seed: int = 0) -> Iterator[Lesion]:
    rng = np.random.default_rng(seed)
    for k in range(n):
        yield make_lesion(rng, k)


def write_lesion_parquet(path: Path, n: int, seed: int = 0) -> dict[str, Lesion]:
    """Write n images as 25M_demo parquet (datasets Image() feature, so the file carries the same
    Hugging Face schema metadata as the real one); returns the truth by id, without image bytes."""
    from datasets import Dataset, Features, Image, Value

    made = list(lesions(n, seed))
    features = Features({"id": Value("string"), "image": Image(), "caption": Value("string")})
    Dataset.from_dict({"id": [m.id for m in made], "image": [{"bytes": m.jpeg, "path": None} for m in made],
                       "caption": [m.caption for m in made]}, features=features).to_parquet(str(path))
    return {m.id: Lesion(m.id, m.box, m.bright, b"", m.caption) for m in made}
