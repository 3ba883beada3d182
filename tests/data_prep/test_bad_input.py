"""Bad input never crashes a run and never costs good rows; each kind is counted with its reason."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data_prep import images
from data_prep.convert import main as convert
from data_prep.synth import synthetic_row, write_demo_parquet


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression-bomb stand-in, no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def gradient16(h: int = 64, w: int = 80) -> np.ndarray:
    """12-bit data in a 16-bit container, as CT/MR exports often are."""
    return (np.linspace(0, 4095, w)[None, :] * np.ones((h, 1))).astype(np.uint16)


@pytest.fixture(scope="module")
def good() -> list[dict]:
    rng = np.random.default_rng(3)
    return [synthetic_row(rng, k, size=(160, 192), n_boxes=1) for k in range(8)]


# --- decoding, unit level ---------------------------------------------------------------------

def test_16bit_is_scaled_to_its_range_not_clipped() -> None:
    dec = images.decode(encoded(Image.fromarray(gradient16()), "PNG"))
    assert dec.change and dec.change.startswith("mode:I")
    gray = dec.rgb[..., 0]
    assert dec.rgb.dtype == np.uint8 and dec.rgb.shape == (64, 80, 3)
    assert gray.min() == 0 and gray.max() == 255
    assert 100 < gray.mean() < 155  # clipping would give ~255 almost everywhere, >>8 shifting ~8


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1"])
def test_non_rgb_modes_become_rgb_and_are_marked_changed(mode: str) -> None:
    base = Image.fromarray(np.dstack([np.full((40, 50), v, np.uint8) for v in (200, 120, 40)]))
    im = base.convert(mode)
    dec = images.decode(encoded(im, "JPEG" if mode == "CMYK" else "PNG"))
    assert dec.rgb.shape == (40, 50, 3) and dec.rgb.dtype == np.uint8
    assert dec.change == f"mode:{mode}"
    if mode in ("RGBA", "CMYK", "P"):
        assert np.abs(dec.rgb.reshape(-1, 3).mean(0) - [200, 120, 40]).max() < 12


def test_plain_jpeg_header_is_read_without_pil(good: list[dict]) -> None:
    """The fast header path agrees with PIL, and leaves EXIF, CMYK and non-JPEG files to it."""
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (37, 53, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    plain = [good[0]["jpeg"], encoded(rgb.convert("L"), "JPEG")]
    for kw in ({"progressive": True}, {"subsampling": 0}, {"optimize": True}):
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", **kw)
        plain.append(buf.getvalue())
    for data in plain:
        im = Image.open(io.BytesIO(data))
        assert images.read_header(data) == images.Header("JPEG", im.mode, im.size)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    for data in (buf.getvalue(), encoded(rgb.convert("CMYK"), "JPEG"), encoded(rgb, "PNG")):
        assert images.jpeg_frame(data) is None and images.read_header(data).image is not None
    rotated = images.decode(buf.getvalue())
    assert rotated.change == "exif_orientation" and rotated.rgb.shape == (53, 37, 3)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16"])
def test_decoded_pixels_are_writable(mode: str) -> None:
    """Inpainting works on the decoded array in place, whichever decoder produced it."""
    im = Image.fromarray(gradient16()) if mode == "I;16" else Image.new("RGB", (30, 20), (200, 120, 40)).convert(mode)
    for fmt in ("PNG", "JPEG") if mode in ("RGB", "L") else ("PNG",):
        rgb = images.decode(encoded(im, fmt)).rgb
        assert rgb.flags.writeable and rgb.flags.c_contiguous


def test_transparent_pixels_are_composited_over_black() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 5:, 3] = 255
    dec = images.decode(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert dec.rgb[:, :5].max() == 0 and dec.rgb[:, 5:].min() == 255


def test_rgb_jpeg_is_decoded_unchanged(good: list[dict]) -> None:
    dec = images.decode(good[0]["jpeg"])
    assert dec.change is None and dec.ext == "jpg"
    ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(good[0]["jpeg"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(dec.rgb, ref)


def test_truncated_and_corrupt_images_raise_with_reasons(good: list[dict]) -> None:
    jpeg = good[0]["jpeg"]
    png = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    cases = {"truncated_image": [jpeg[: len(jpeg) * 2 // 3], png[: len(png) // 2]],
             "corrupt_image": [b"this is not an image", jpeg[:200] + bytes(len(jpeg) - 200)],
             "missing_image": [b"", None]}
    for reason, blobs in cases.items():
        for blob in blobs:
            with pytest.raises(images.BadImage) as err:
                images.decode(blob)
            assert err.value.reason in ({reason} if reason != "corrupt_image" else {"corrupt_image", "truncated_image"})


def test_pixel_limit_refuses_from_the_header() -> None:
    with pytest.raises(images.BadImage) as err:
        images.decode(png_header_only(100_000, 100_000))
    assert err.value.reason == "too_large" and err.value.size == (100_000, 100_000)
    with pytest.raises(images.BadImage, match="too_large"):
        images.decode(encoded(Image.new("RGB", (300, 200)), "PNG"), max_pixels=50_000)


# --- a whole run ---------------------------------------------------------------------------------

def test_bad_rows_are_counted_and_good_rows_survive(tmp_path: Path, good: list[dict]) -> None:
    jpeg = good[0]["jpeg"]
    cap = good[0]["caption"]
    bad = [
        {"id": "corrupt", "jpeg": b"\xff\xd8\xff\xe0garbage" * 20, "caption": cap},
        {"id": "truncated", "jpeg": jpeg[: len(jpeg) // 2], "caption": cap},
        {"id": "bomb", "jpeg": png_header_only(60_000, 60_000), "caption": cap},
        {"id": "too-large", "jpeg": encoded(Image.new("RGB", (1200, 1000), (40, 40, 40)), "PNG"), "caption": cap},
        {"id": "no-bytes", "jpeg": None, "caption": cap},
        {"id": good[2]["id"], "jpeg": good[5]["jpeg"], "caption": "a duplicate id"},
        {"id": "empty-caption", "jpeg": jpeg, "caption": "   "},
        {"id": "null-caption", "jpeg": jpeg, "caption": None},
    ]
    converted = [
        {"id": "mode-L", "jpeg": encoded(Image.open(io.BytesIO(jpeg)).convert("L"), "JPEG"), "caption": cap},
        {"id": "mode-RGBA", "jpeg": encoded(Image.open(io.BytesIO(jpeg)).convert("RGBA"), "PNG"), "caption": cap},
        {"id": "mode-P", "jpeg": encoded(Image.open(io.BytesIO(jpeg)).convert("P"), "PNG"), "caption": cap},
        {"id": "mode-CMYK", "jpeg": encoded(Image.open(io.BytesIO(jpeg)).convert("CMYK"), "JPEG"), "caption": cap},
        {"id": "mode-I16", "jpeg": encoded(Image.fromarray(gradient16(160, 192)), "PNG"), "caption": cap},
    ]
    stream = good[:4] + bad[:4] + good[4:] + bad[4:] + converted
    write_demo_parquet(tmp_path / "in.parquet", stream)
    out = tmp_path / "out"
    assert convert(["--source", str(tmp_path / "in.parquet"), "--out", str(out), "--workers", "0",
                    "--shard-size", "5", "--max-pixels", "1000000"]) == 0

    rep = json.loads((out / "report.json").read_text())
    assert rep["skipped"] == {"corrupt_image": 1, "truncated_image": 1, "too_large": 2, "missing_image": 1,
                              "duplicate_id": 1, "empty_caption": 2}
    rows = [json.loads(x) for s in ("train", "val", "test") for x in (out / f"{s}.jsonl").read_text().splitlines()]
    assert rep["totals"] == {"input_rows": len(stream), "images": len(good) + len(converted),
                             "rows": len(rows), "skipped": 8}
    written = rep["images_written"]
    for mode in ("L", "RGBA", "P", "CMYK"):
        assert written.get(f"mode:{mode}") == 1, written
    assert sum(v for k, v in written.items() if k.startswith("mode:I")) == 1

    assert {r["id"] for r in rows} == {r["id"] for r in good + converted}
    rois = [json.loads(x) for x in (out / "rois.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rois] == list(dict.fromkeys(r["id"] for r in stream)), "one line per id, in order"
    by_id = {r["id"]: r for r in rois}
    assert "skipped:too_large" in by_id["bomb"]["flags"] and by_id["bomb"]["width"] == 60_000
    assert by_id["empty-caption"]["boxes"], "boxes are still recovered for rows skipped for their caption"

    i16 = next(r for r in rows if r["id"] == "mode-I16")
    img = np.asarray(Image.open(_image_of(i16)))
    assert img.ndim == 3 and img.shape[2] == 3 and img.min() == 0 and img.max() == 255
    assert not list((out / "images").rglob("*.tmp")), "no half-written image is left behind"


def _image_of(row: dict) -> str:
    imgs = row.get("images") or []
    first = imgs[0] if imgs else row["image"]
    return first["path"] if isinstance(first, dict) else first
