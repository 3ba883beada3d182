"""Grounding answers per family: parsing (with/without special tokens, JSON, garbage) and mapping to
original pixels, checked against what ms-swift's own templates render for a training row."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from data_prep.captions import CaptionFields
from data_prep.pixel_boxes import box_iou
from data_prep.tasks import task_rows
from eval.family_boxes import (PixelLimits, coordinate_space, parse_boxes, pixel_limits, render_box, render_ref,
                               resized_size, to_image_space, to_model_space)
from eval.samples import render_prompt
from medvlm_vocab import FAMILIES, TINY_FAMILIES

QWEN2, QWEN25, QWEN3 = FAMILIES["qwen2_vl"], FAMILIES["qwen2_5_vl"], FAMILIES["qwen3_vl"]
W, H = 416, 398  # non-square
GT = [253, 94, 348, 151]
TINY_LIMITS = PixelLimits(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)  # MAX_PIXELS=50176, the tiny recipe


def test_qwen2_vl_answer_with_special_tokens():
    text = ("<|object_ref_start|>region of interest<|object_ref_end|><|box_start|>(608,236),(837,379)<|box_end|>")
    assert parse_boxes(text) == [(608.0, 236.0, 837.0, 379.0)]


def test_qwen2_vl_answer_with_special_tokens_stripped():
    assert parse_boxes("region of interest(608,236),(837,379)") == [(608.0, 236.0, 837.0, 379.0)]
    assert parse_boxes("region of interest ( 608, 236 ) , ( 837 , 379 )") == [(608.0, 236.0, 837.0, 379.0)]


def test_several_boxes_in_order():
    boxes = ([1, 2, 30, 40], [500, 600, 700, 800])
    text = "\n".join(f"{render_ref('region of interest')}{render_box(b)}" for b in boxes)
    assert parse_boxes(text) == [(1.0, 2.0, 30.0, 40.0), (500.0, 600.0, 700.0, 800.0)]
    assert parse_boxes("region of interest(1,2),(30,40)\nregion of interest(5,6),(70,80)") == [
        (1.0, 2.0, 30.0, 40.0), (5.0, 6.0, 70.0, 80.0)]


def test_json_and_list_forms():
    text = '```json\n[{"bbox_2d": [10, 20, 30.5, 40], "label": "lesion"}, {"bbox_2d": [1,1,2,2]}]\n```'
    assert parse_boxes(text) == [(10.0, 20.0, 30.5, 40.0), (1.0, 1.0, 2.0, 2.0)]
    assert parse_boxes("region of interest[608, 236, 837, 379]") == [(608.0, 236.0, 837.0, 379.0)]


def test_corners_in_any_order_are_normalised():
    assert parse_boxes("(837,379),(608,236)") == [(608.0, 236.0, 837.0, 379.0)]


@pytest.mark.parametrize("text", [None, "", "no abnormality", "(608,236),(837", "[1, 2, 3]", "<|box_start|><|box_end|>",
                                  "(a,b),(c,d)", "Modality: CT\nOrgan: brain"])
def test_garbage_has_no_box(text):
    assert parse_boxes(text) == []


@pytest.mark.parametrize("family", [QWEN2, QWEN3])
def test_norm1000_maps_back_to_original_pixels(family):
    assert coordinate_space(family, W, H, None) == (1000, 1000)
    model_box = to_model_space(GT, family, W, H, None)
    assert model_box == [608, 236, 837, 379]  # round(253 / 416 * 1000) = 608, ...
    x1, y1, x2, y2 = to_image_space(model_box, family, W, H, None)
    assert (x1, y1, x2, y2) == pytest.approx((608 / 1000 * W, 236 / 1000 * H, 837 / 1000 * W, 379 / 1000 * H))
    assert max(abs(a - b) for a, b in zip((x1, y1, x2, y2), GT)) <= 0.5 * max(W, H) / 1000


def test_qwen2_5_vl_uses_smart_resize_of_the_serving_limits():
    # smart_resize(398, 416, 28, max 50176): 392x420 = 164640 px is too many; beta = sqrt(416*398/50176) = 1.8165,
    # h = floor(398 / beta / 28) * 28 = 196, w = floor(416 / beta / 28) * 28 = 224.
    assert resized_size(W, H, 28, TINY_LIMITS) == (224, 196)
    assert coordinate_space(QWEN25, W, H, TINY_LIMITS) == (224, 196)
    model_box = to_model_space(GT, QWEN25, W, H, TINY_LIMITS)
    assert model_box == [136, 46, 187, 74]  # round(253 / 416 * 224) = 136, round(94 / 398 * 196) = 46, ...
    assert to_image_space(model_box, QWEN25, W, H, TINY_LIMITS) == pytest.approx(
        (136 / 224 * W, 46 / 196 * H, 187 / 224 * W, 74 / 196 * H))
    # The same answer read as 0-1000 would land far off: the family decides.
    assert box_iou(to_image_space(model_box, QWEN2, W, H, None), GT) < 0.1


def test_qwen2_5_vl_needs_limits():
    with pytest.raises(ValueError, match="pixel limits"):
        to_image_space([1, 2, 3, 4], QWEN25, W, H, None)


def test_out_of_range_answers_are_clipped():
    assert to_image_space([-50, 0, 1200, 1000], QWEN2, W, H, None) == (0.0, 0.0, W, H)


def test_pixel_limits_follow_swift_and_qwen_vl_utils():
    env = {"MAX_PIXELS": "50176"}
    assert pixel_limits(QWEN25, env=env).max_pixels == 50176
    assert pixel_limits(QWEN25, max_pixels=1_000_000, env={}).max_pixels == (1_000_000 // 784) * 784
    assert pixel_limits(QWEN25, env={"MAX_PIXELS": "50176", "IMAGE_MAX_TOKEN_NUM": "32"}).max_pixels == 32 * 784
    assert pixel_limits(QWEN25, min_pixels=3136 * 2, max_pixels=50176, env={}) == PixelLimits(6272, 50176)
    assert pixel_limits(QWEN3, env={"IMAGE_MAX_TOKEN_NUM": "64"}).max_pixels == 64 * 32 * 32
    assert pixel_limits(QWEN25, env={}).max_pixels == 16384 * 784  # qwen_vl_utils 0.0.14 default


def test_smart_resize_copy_matches_qwen_vl_utils():
    """eval.family_boxes carries a torch-free copy of smart_resize and the token defaults: same answers.

    The defaults are read in a fresh interpreter: swift overwrites qwen_vl_utils' module globals from the
    environment when it first loads a Qwen-VL model in a process, so an earlier in-process test that
    loaded one under a recipe's IMAGE_MAX_TOKEN_NUM leaves this session's copy changed.
    """
    import itertools

    from qwen_vl_utils import smart_resize as original

    from eval.family_boxes import QWEN_VL_UTILS_DEFAULTS, smart_resize

    names = list(QWEN_VL_UTILS_DEFAULTS)
    code = f"from qwen_vl_utils import vision_process as v; print(*[getattr(v, k) for k in {names!r}])"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert QWEN_VL_UTILS_DEFAULTS == dict(zip(names, map(int, fresh.stdout.split())))
    sizes = [1, 7, 27, 28, 29, 100, 223, 336, 398, 416, 432, 512, 1000, 1023, 2048, 4999]
    limits = [(3136, 50176), (4 * 784, 16384 * 784), (6272, 200_704), (50176, 50176), (4 * 1024, 64 * 1024)]
    for (h, w), (lo, hi), factor in itertools.product(itertools.product(sizes, sizes), limits, (28, 32)):
        if max(h, w) / min(h, w) > 200:
            continue
        assert smart_resize(h, w, factor, lo, hi) == original(h, w, factor=factor, min_pixels=lo, max_pixels=hi), \
            (h, w, factor, lo, hi)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("img") / "scan.png"
    Image.new("RGB", (W, H), (40, 40, 40)).save(path)
    fields = CaptionFields(modality="CT", organ="abdomen", texture="soft-tissue density", diagnosis="pancreatic mass")
    return task_rows(id="scan", image=str(path), width=W, height=H, boxes=[GT, [20, 30, 120, 300]], fields=fields)


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_matches_swift_template_rendering(family, rows, models_dir, monkeypatch):
    """Render the training rows with the family's swift template: our verify prompt is the text the
    model was trained on, and parsing its trained locate answer gives the boxes back in pixels."""
    monkeypatch.setenv("MAX_PIXELS", str(TINY_LIMITS.max_pixels))
    monkeypatch.setenv("IMAGE_MAX_TOKEN_NUM", "64")
    from swift import get_model_processor, get_template

    from swift_ext.templates import register_med_templates

    register_med_templates()
    fam = FAMILIES[family]
    _, processor = get_model_processor(str(models_dir / f"tiny-{family.replace('_', '-')}"),
                                       model_type=fam.swift_model_type, load_model=False)
    template = get_template(processor, template_type=f"med_{family}", remove_unused_columns=False)
    template.set_mode("train")
    limits = pixel_limits(fam) if fam.bbox_space == "resized_pixels" else None
    by_task = {r["task"]: r for r in rows}

    locate = template.encode(json.loads(json.dumps(by_task["locate"])))
    answer = template.tokenizer.decode([t for t, lab in zip(locate["input_ids"], locate["labels"]) if lab != -100])
    answer = answer.removesuffix("<|im_end|>").rstrip("\n").removesuffix("<|im_end|>")
    expected = "\n".join(render_ref("region of interest") + render_box(to_model_space(b, fam, W, H, limits))
                         for b in by_task["locate"]["objects"]["bbox"])
    assert answer == expected
    sx, sy = coordinate_space(fam, W, H, limits)
    for got, gt in zip(parse_boxes(answer), by_task["locate"]["objects"]["bbox"]):
        mapped = to_image_space(got, fam, W, H, limits)
        assert max(abs(a - b) for a, b in zip(mapped, gt)) <= 0.5 * max(W / sx, H / sy) + 1e-9

    verify = template.encode(json.loads(json.dumps(by_task["verify"])))
    prompt = render_prompt(by_task["verify"]["messages"][0]["content"], by_task["verify"]["objects"], fam, W, H, limits)
    assert prompt.removeprefix("<image>") in template.tokenizer.decode(verify["input_ids"])
