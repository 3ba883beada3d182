"""data_prep.inpaint.remove_strokes: no green stroke survives, nothing outside the (dilated) mask
changes, and the filled strokes look like the image before the box was drawn."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep.inpaint import remove_strokes
from data_prep.roi import detect_boxes
from data_prep.roi_scenes import GREENS, border_box, scene

DILATE = 2
SCENES = {
    "1px": dict(bg="xray", stroke=1),
    "4px": dict(bg="ct", stroke=4),
    "jpeg50": dict(bg="pathology", stroke=2, quality=50),
    "jpeg75_fundus": dict(bg="fundus", stroke=3, quality=75),
    "three_boxes": dict(bg="xray", stroke=2, n_boxes=3),
    "nested": dict(bg="text", stroke=2, boxes=[(60, 60, 450, 450), (140, 160, 300, 320)]),
    "crossing": dict(bg="ct", stroke=3, boxes=[(100, 100, 300, 300), (200, 200, 400, 400)]),
    "cut": dict(bg="xray", stroke=3, boxes=[border_box(np.random.default_rng(5), 512, 512, "corner")]),
    "green_cast": dict(bg="pathology", stroke=2, tint=0.4),
    "green_tissue": dict(bg="green_tissue", stroke=3),
}


def grown(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * DILATE + 1,) * 2, np.uint8)).astype(bool)


@pytest.mark.parametrize("name", list(SCENES))
@pytest.mark.parametrize("method", ["linear", "telea"])
def test_strokes_gone_and_rest_untouched(name: str, method: str) -> None:
    sc = scene(name, 40, **SCENES[name])
    found = detect_boxes(sc.image)
    assert len(found.boxes) == len(sc.boxes)
    out = remove_strokes(sc.image, found.mask, dilate=DILATE, method=method)
    assert out.shape == sc.image.shape and out.dtype == np.uint8
    assert detect_boxes(out).boxes == []
    outside = ~grown(found.mask)
    assert np.array_equal(out[outside], sc.image[outside])


@pytest.mark.parametrize("bg, mean_err", [("gradient", 1.0), ("xray", 6.0)])
@pytest.mark.parametrize("stroke", [1, 2, 4])
def test_fill_matches_the_unboxed_image_on_smooth_backgrounds(bg: str, mean_err: float, stroke: int) -> None:
    """On a smooth gradient the fill is near exact; the X-ray's film grain (sd ~5 levels) cannot
    be recovered, so there the error is about the grain."""
    sc = scene("smooth", 50 + stroke, bg=bg, stroke=stroke, n_boxes=2, color=GREENS["pure"])
    found = detect_boxes(sc.image)
    out = remove_strokes(sc.image, found.mask, dilate=DILATE)
    region = grown(found.mask)
    err = np.abs(out.astype(int) - sc.clean.astype(int))[region]
    was = np.abs(sc.image.astype(int) - sc.clean.astype(int))[region]
    assert err.mean() < mean_err, err.mean()
    assert err.mean() < was.mean() / 3


def test_fill_keeps_texture_close_on_ct() -> None:
    sc = scene("ct", 60, bg="ct", stroke=3, n_boxes=2)
    found = detect_boxes(sc.image)
    out = remove_strokes(sc.image, found.mask)
    err = np.abs(out.astype(int) - sc.clean.astype(int))[grown(found.mask)]
    assert err.mean() < 8.0


def test_no_green_pixels_left_where_the_strokes_were() -> None:
    sc = scene("green", 70, bg="pathology", stroke=3, n_boxes=2, quality=75)
    out = remove_strokes(sc.image, detect_boxes(sc.image).mask)
    drawn = (np.abs(sc.image.astype(int) - sc.clean.astype(int)).max(axis=2) > 40)
    g = out[..., 1].astype(int) - np.maximum(out[..., 0], out[..., 2]).astype(int)
    assert g[drawn].max() < 40


def test_empty_mask_returns_an_equal_copy() -> None:
    img = scene("none", 80, bg="ct", n_boxes=0).image
    out = remove_strokes(img, np.zeros(img.shape[:2], bool))
    assert out is not img and np.array_equal(out, img)


@pytest.mark.parametrize("method", ["linear", "telea"])
def test_in_place_fills_the_given_array(method: str) -> None:
    sc = scene("in_place", 90, bg="ct", stroke=2, n_boxes=2, quality=75)
    mask = detect_boxes(sc.image).mask
    copy = remove_strokes(sc.image, mask, method=method)
    work = sc.image.copy()
    assert remove_strokes(work, mask, method=method, in_place=True) is work
    assert np.array_equal(work, copy) and not np.array_equal(work, sc.image)


def test_stroke_on_the_image_edge_copies_its_one_neighbour() -> None:
    """A band cut by the border has one known side; a 0/255 uint8 mask fills like a bool one."""
    img = scene("edge", 91, bg="xray", n_boxes=0).image
    mask = np.zeros(img.shape[:2], bool)
    mask[0:3, 40:200] = True
    out = remove_strokes(img, mask, dilate=DILATE)
    assert np.array_equal(out[:5, 38:202], np.broadcast_to(img[5, 38:202], (5, 164, 3)))
    assert np.array_equal(out[5:], img[5:])
    assert np.array_equal(remove_strokes(img, mask.astype(np.uint8) * 255, dilate=DILATE), out)


def test_unknown_method_is_refused() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[10, 2:18] = True
    with pytest.raises(ValueError):
        remove_strokes(img, mask, method="magic")
