"""Checks on the committed MedTrinity-25M stand-in in data/sample/ (no source packages needed).

The sample must look like the real 25M_demo to every consumer: same parquet schema and HF
features, green ROI strokes exactly where the manifest says, and captions whose area shares
and locations agree with those boxes.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.pixel_boxes import area_share, location_phrase

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PARQUET = SAMPLE / "medtrinity_sample.parquet"
MANIFEST = SAMPLE / "manifest.jsonl"
REQUIRED_MODALITIES = {"CT", "MR", "X-ray", "ultrasound", "pathology"}
MODALITY_WORDS = {
    "CT": ("computed tomography", "CT"),
    "MR": ("magnetic resonance", "MRI"),
    "X-ray": ("X-ray", "radiograph"),
    "ultrasound": ("ultrasound", "sonographic"),
    "pathology": ("histopatholog", "histolog"),
    "fundus": ("fundus",),
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SHARE = re.compile(r"approximately (\d+\.\d)% of the image area")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pq.read_table(PARQUET)


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    with MANIFEST.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def pixels(table: pa.Table) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")).astype(np.int16)
            for cell in table.column("image").to_pylist()]


def green(values: np.ndarray) -> np.ndarray:
    """Pixels that read as the ROI stroke colour (0, 255, 0) after JPEG."""
    return (values[..., 1] > 200) & (values[..., 0] < 80) & (values[..., 2] < 80)


def ring(image: np.ndarray, box: list[int], inset: int) -> np.ndarray:
    """Pixels on the rectangle `box` moved `inset` px inwards (negative: outwards), inside the image."""
    x1, y1, x2, y2 = box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset
    height, width = image.shape[:2]
    xs = np.arange(max(x1, 0), min(x2, width - 1) + 1)
    ys = np.arange(max(y1, 0), min(y2, height - 1) + 1)
    sides = [image[y, xs] for y in (y1, y2) if 0 <= y < height]
    sides += [image[ys, x] for x in (x1, x2) if 0 <= x < width]
    return np.concatenate(sides)


def test_parquet_schema_is_25m_demo(table: pa.Table) -> None:
    expected = pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("caption", pa.string()),
    ])
    assert table.schema.remove_metadata() == expected
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features == {"id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"},
                        "caption": {"dtype": "string", "_type": "Value"}}


def test_rows_ids_and_jpeg_bytes(table: pa.Table) -> None:
    assert table.num_rows >= 200
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(UUID.fullmatch(i) for i in ids)
    assert all(cell["bytes"][:3] == b"\xff\xd8\xff" for cell in table.column("image").to_pylist())


def test_load_dataset_decodes_pil_images(tmp_path: Path, manifest: list[dict]) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(PARQUET), split="train", cache_dir=str(tmp_path))
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.num_rows == len(manifest)
    for index in (0, ds.num_rows // 2, ds.num_rows - 1):
        row = ds[index]
        assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB"
        assert row["image"].size == (manifest[index]["width"], manifest[index]["height"])
        assert row["id"] == manifest[index]["id"]


def test_sources_and_modalities(manifest: list[dict]) -> None:
    assert len({m["source"] for m in manifest}) >= 12
    assert REQUIRED_MODALITIES <= {m["modality"] for m in manifest}


def test_manifest_describes_every_row(table: pa.Table, manifest: list[dict], pixels: list[np.ndarray]) -> None:
    assert [m["id"] for m in manifest] == table.column("id").to_pylist()
    for entry, image in zip(manifest, pixels, strict=True):
        assert image.shape[:2] == (entry["height"], entry["width"])
        assert 1 <= entry["stroke"] <= 4 and entry["augment"]
        assert 1 <= len(entry["boxes"]) <= 2
        for x1, y1, x2, y2 in entry["boxes"]:
            assert x2 - x1 >= 12 and y2 - y1 >= 12
            assert 0 <= x1 and 0 <= y1 and x2 < entry["width"] and y2 < entry["height"]
    two = sum(len(m["boxes"]) == 2 for m in manifest) / len(manifest)
    assert 0.05 <= two <= 0.2
    assert {m["stroke"] for m in manifest} == {1, 2, 3, 4}


def test_green_strokes_lie_on_manifest_boxes(manifest: list[dict], pixels: list[np.ndarray]) -> None:
    for entry, image in zip(manifest, pixels, strict=True):
        stroke = entry["stroke"]
        for box in entry["boxes"]:
            on_edge = green(ring(image, box, 0)).mean()
            inside = green(ring(image, box, stroke // 2 + 3)).mean()
            assert on_edge >= 0.9, (entry["id"], box, on_edge)
            assert inside <= 0.1, (entry["id"], box, inside)
        if len(entry["boxes"]) == 1:
            outside = ring(image, entry["boxes"][0], -(stroke // 2 + 3))
            assert outside.size == 0 or green(outside).mean() <= 0.1, entry["id"]


def test_captions_agree_with_boxes(table: pa.Table, manifest: list[dict]) -> None:
    for entry, text in zip(manifest, table.column("caption").to_pylist(), strict=True):
        width, height = entry["width"], entry["height"]
        shares = [float(s) for s in SHARE.findall(text)]
        assert len(shares) == len(entry["boxes"]), text
        for share, box in zip(shares, entry["boxes"], strict=True):
            assert abs(share - 100.0 * area_share(box, width, height)) <= 0.15, (entry["id"], share, box)
            phrase = location_phrase(box, width, height)
            assert ("centrally" if phrase == "central" else f"in the {phrase} region") in text, text


def test_captions_name_modality_organ_and_vary(table: pa.Table, manifest: list[dict]) -> None:
    captions = table.column("caption").to_pylist()
    for entry, text in zip(manifest, captions, strict=True):
        assert entry["organ"].lower() in text.lower(), text
        assert any(word in text for word in MODALITY_WORDS[entry["modality"]]), text
    assert len(set(captions)) == len(captions)
    assert len({text.split(" ", 2)[0] + text.split(" ", 2)[1] for text in captions}) >= 3


def test_sources_md_covers_every_source(manifest: list[dict]) -> None:
    text = (SAMPLE / "SOURCES.md").read_text(encoding="utf-8")
    for source in {m["source"] for m in manifest}:
        assert f"`{source}`" in text


def test_size_budget() -> None:
    assert sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file()) <= 3_000_000
