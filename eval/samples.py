"""The split's rows as the server must see them: prompts rendered as swift rendered them in training.

Prompts are not invented here: they are the rows data_prep wrote (DIR/{split}.jsonl), with the
`<ref-object>` / `<bbox>` tags filled in the way swift's template does before tokenising, because
an OpenAI-compatible request carries plain text and no `objects`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from eval.family_boxes import PixelLimits, render_box, render_ref, to_model_space
from medvlm_vocab import TASKS, Family

_TAG_RE = re.compile(r"(<ref-object>|<bbox>)")


class DataError(Exception):
    """The data folder or a row in it cannot be used; the message says what to fix."""


def load_split(data_dir: Path, split: str, limit: int | None = None) -> list[dict]:
    """Per-task rows of a split, images resolved to files, cut to the first `limit` images.

    Image paths in the rows are absolute when data_prep wrote them; relative ones are taken from
    the data folder, so a moved folder still works.
    """
    path = data_dir / f"{split}.jsonl"
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist (write one with `python -m data_prep convert`)")
    if not path.is_file():
        raise DataError(f"{path} not found: is {data_dir} a `python -m data_prep convert` output with a {split} split?")
    rows: list[dict] = []
    ids: set[str] = set()
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                id_, task, image = row["id"], row["task"], row["images"][0]
                if not isinstance(row["messages"][0]["content"], str):
                    raise TypeError("the user message is not text")
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise DataError(f"{path}:{n}: not a data_prep task row ({e})") from None
            if task not in TASKS:
                continue
            if id_ not in ids:
                if limit is not None and len(ids) >= limit:
                    break
                ids.add(id_)
            row["images"] = [str(_resolve(image, data_dir))]
            rows.append(row)
    return rows


def _resolve(image: str, data_dir: Path) -> Path:
    p = Path(image)
    for candidate in (p, data_dir / p, data_dir / "images" / p.parent.name / p.name):
        if candidate.is_file():
            return candidate
    raise DataError(f"image {image} not found (nor under {data_dir})")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def render_prompt(content: str, objects: dict | None, family: Family, width: int, height: int,
                  limits: PixelLimits | None) -> str:
    """`content` with its grounding tags filled as swift's `_pre_tokenize` does: each `<ref-object>`
    takes the next objects.ref, each `<bbox>` the next objects.bbox (two counters),
    rescaled to the family's coordinates; a tag with no entry left stays literal."""
    objects = objects or {}
    refs, boxes = list(objects.get("ref") or []), list(objects.get("bbox") or [])
    out, ref_i, box_i = [], 0, 0
    for part in _TAG_RE.split(content):
        if part == "<ref-object>" and ref_i < len(refs):
            out.append(render_ref(refs[ref_i]))
            ref_i += 1
        elif part == "<bbox>" and box_i < len(boxes):
            out.append(render_box(to_model_space(boxes[box_i], family, width, height, limits)))
            box_i += 1
        else:
            out.append(part)
    return "".join(out)


def group_by_image(rows: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """{id: {task: row}}, in file order."""
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        out.setdefault(row["id"], {})[row["task"]] = row
    return out
