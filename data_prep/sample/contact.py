"""A contact sheet of generated rows, for checking windowing and box placement by eye."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw


def contact_sheet(jpegs: Sequence[bytes], labels: Sequence[str], path: Path, columns: int = 5,
                  tile: int = 320) -> None:
    """Tile decoded JPEGs (letterboxed to `tile` px) with a one-line label under each."""
    rows = -(-len(jpegs) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (data, label) in enumerate(zip(jpegs, labels, strict=True)):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image.thumbnail((tile, tile))
        x, y = (i % columns) * tile, (i // columns) * (tile + 14)
        sheet.paste(image, (x, y))
        draw.text((x + 2, y + tile), label[:52], fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def pick_rows(sources: Sequence[str], count: int) -> list[int]:
    """The first row of each source (up to `count`), so the sheet shows every source once."""
    first: dict[str, int] = {}
    for index, source in enumerate(sources):
        first.setdefault(source, index)
    return sorted(first.values())[:count]
