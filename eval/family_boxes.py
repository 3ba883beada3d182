"""Grounding boxes between original-image pixels and the coordinates each Qwen-VL family speaks.

ms-swift 4.6 writes an `objects` box (`bbox_type: "real"`, original pixels) as
`<|box_start|>(x1,y1),(x2,y2)<|box_end|>` (swift/template/templates/qwen.py `replace_bbox`, legacy
QWENVL_BBOX_FORMAT) after `Template.normalize_bbox` rescaled it with `int(round(x / width * S))`:
S = 1000 for Qwen2-VL and Qwen3-VL (`norm_bbox = 'norm1000'`), S = the size of the image after
qwen_vl_utils' smart_resize for Qwen2.5-VL (`norm_bbox = 'none'`). medvlm_vocab records which
(`bbox_space`). Prompts are rendered here the same way, and answers are mapped back with the inverse,
so IoU is measured in original pixels.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from data_prep.pixel_boxes import Box, clip_box
from medvlm_vocab import BOX_END, BOX_START, NORM, REF_END, REF_START, SPATIAL_MERGE_SIZE, Family

# qwen_vl_utils 0.0.14 vision_process constants (checked against it in tests/eval/test_family_boxes.py).
QWEN_VL_UTILS_DEFAULTS = {"IMAGE_MIN_TOKEN_NUM": 4, "IMAGE_MAX_TOKEN_NUM": 16384}
MAX_RATIO = 200

_NUM = r"(-?\d+(?:\.\d+)?)"
# Two points "(x1,y1),(x2,y2)" (swift's legacy form, with or without the special tokens around it),
# or four numbers in brackets/parentheses ("[x1, y1, x2, y2]": JSON bbox_2d, QWENVL_BBOX_FORMAT=new).
_BOX_RE = re.compile(
    rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)"
    rf"|[\[(]\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*[\])]")


@dataclass(frozen=True)
class PixelLimits:
    """The pixel range qwen_vl_utils resizes an image into (what the server and training used)."""

    min_pixels: int
    max_pixels: int


def image_factor(family: Family) -> int:
    """Side of the pixel square one merged visual token covers: 28 for Qwen2/2.5-VL, 32 for Qwen3-VL."""
    return family.patch_size * SPATIAL_MERGE_SIZE


def _tokens(explicit: int | None, tokens_var: str, pixels_var: str, factor: int, env: Mapping[str, str]) -> int:
    if explicit is not None:
        return explicit // factor**2
    if env.get(tokens_var):
        return int(env[tokens_var])
    if env.get(pixels_var):
        return int(env[pixels_var]) // factor**2
    return QWEN_VL_UTILS_DEFAULTS[tokens_var]


def pixel_limits(family: Family, max_pixels: int | None = None, min_pixels: int | None = None,
                 env: Mapping[str, str] | None = None) -> PixelLimits:
    """The limits a server started with MAX_PIXELS=max_pixels (MIN_PIXELS=min_pixels) resizes to.

    swift turns MAX_PIXELS into IMAGE_MAX_TOKEN_NUM = MAX_PIXELS // factor^2 unless that is set
    (swift/model/models/qwen.py `compat_qwen_vl_utils`), and qwen_vl_utils 0.0.14 resizes to at most
    IMAGE_MAX_TOKEN_NUM * factor^2 pixels; the same rounding is applied here. Explicit values win over
    the environment (MAX_PIXELS, MIN_PIXELS, IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM), which wins
    over qwen_vl_utils' defaults.
    """
    env = os.environ if env is None else env
    f = image_factor(family)
    hi = _tokens(max_pixels, "IMAGE_MAX_TOKEN_NUM", "MAX_PIXELS", f, env)
    lo = _tokens(min_pixels, "IMAGE_MIN_TOKEN_NUM", "MIN_PIXELS", f, env)
    return PixelLimits(min_pixels=lo * f**2, max_pixels=hi * f**2)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen_vl_utils 0.0.14 `smart_resize`, line for line: (height, width) divisible by `factor`, within
    [min_pixels, max_pixels], aspect ratio kept. A copy because importing qwen_vl_utils imports torch and
    torchvision, which the review app's venv does not have; tests/eval/test_family_boxes.py checks it against
    the original over a grid of sizes and limits."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, "
                         f"got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@lru_cache(maxsize=4096)
def resized_size(width: int, height: int, factor: int, limits: PixelLimits) -> tuple[int, int]:
    """(width, height) of the image the model sees (qwen_vl_utils' smart_resize)."""
    h, w = smart_resize(height, width, factor=factor, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    return w, h


def coordinate_space(family: Family, width: int, height: int, limits: PixelLimits | None) -> tuple[int, int]:
    """(Sx, Sy): the extent of the coordinates the family reads and writes for this image."""
    if family.bbox_space == "norm1000":
        return NORM, NORM
    if family.bbox_space == "resized_pixels":
        if limits is None:
            raise ValueError(f"{family.name} answers in resized-image pixels: pixel limits are needed")
        return resized_size(width, height, image_factor(family), limits)
    raise ValueError(f"unknown bbox_space {family.bbox_space!r} for {family.name}")


def to_model_space(box: Sequence[float], family: Family, width: int, height: int,
                   limits: PixelLimits | None) -> list[int]:
    """An original-pixel box in the family's coordinates, rounded exactly as swift's normalize_bbox."""
    sx, sy = coordinate_space(family, width, height, limits)
    x1, y1, x2, y2 = box
    return [int(round(x1 / width * sx)), int(round(y1 / height * sy)),
            int(round(x2 / width * sx)), int(round(y2 / height * sy))]


def to_image_space(box: Sequence[float], family: Family, width: int, height: int,
                   limits: PixelLimits | None) -> Box:
    """A box the model wrote, in original-image pixels (clipped to the image)."""
    sx, sy = coordinate_space(family, width, height, limits)
    x1, y1, x2, y2 = box
    return clip_box((x1 / sx * width, y1 / sy * height, x2 / sx * width, y2 / sy * height), width, height)


def render_box(model_box: Sequence[int]) -> str:
    """A box tag as swift renders it for every Qwen-VL family."""
    x1, y1, x2, y2 = model_box
    return f"{BOX_START}({x1},{y1}),({x2},{y2}){BOX_END}"


def render_ref(ref: str) -> str:
    """A `<ref-object>` tag as swift renders it for every Qwen-VL family."""
    return f"{REF_START}{ref}{REF_END}"


def parse_boxes(text: str | None) -> list[Box]:
    """Every box in a model answer, in order, as (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2.

    Accepts swift's `(x1,y1),(x2,y2)` with or without the special tokens (vLLM strips them unless
    asked not to), and `[x1, y1, x2, y2]` lists (JSON `bbox_2d`). Anything else yields no box.
    """
    boxes = []
    for m in _BOX_RE.finditer(text or ""):
        x1, y1, x2, y2 = (float(v) for v in m.groups() if v is not None)
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return boxes
