"""Recipe values that must agree: the image size the model is trained at is the one it is served and
evaluated at, and the GPU recipes carry the loss knobs the code defaults to."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swift_ext.multitask_loss import LossConfig
from tests.conftest import ROOT

RECIPES = ROOT / "recipes"
GPU_SFT = sorted((RECIPES / "sft").glob("qwen*.yaml"))
TINY = [RECIPES / "sft" / "tiny-cpu.yaml", RECIPES / "sft" / "plain-tiny-cpu.yaml", RECIPES / "dpo" / "tiny-cpu.yaml"]
IMAGE_SIZE = ("MAX_PIXELS", "IMAGE_MAX_TOKEN_NUM")


def env(recipe: Path) -> dict[str, str]:
    return yaml.safe_load(recipe.read_text()).get("ENV") or {}


@pytest.mark.parametrize("recipes,serve", [(GPU_SFT, "gpu.yaml"), (TINY, "tiny-cpu.yaml")])
def test_training_and_serving_see_images_at_one_size(recipes, serve):
    served = {k: env(RECIPES / "serve" / serve)[k] for k in IMAGE_SIZE}
    assert recipes
    assert {r.name: {k: env(r)[k] for k in IMAGE_SIZE} for r in recipes} == {r.name: served for r in recipes}


def test_gpu_recipes_carry_the_default_loss_knobs():
    defaults = LossConfig()
    expected = {"MEDVLM_NEGATIVE_RATIO": "0.3", "MEDVLM_FOCAL_ALPHA": str(defaults.focal_alpha),
                "MEDVLM_FOCAL_GAMMA": str(defaults.focal_gamma),
                "MEDVLM_FALSE_ACCEPT_COST": f"{defaults.false_accept_cost:g}",
                "MEDVLM_FINDING_WEIGHT": str(defaults.finding_weight),
                "MEDVLM_VERIFY_WEIGHT": str(defaults.verify_weight)}
    for recipe in GPU_SFT:
        assert {k: v for k, v in env(recipe).items() if k.startswith("MEDVLM_")} == expected, recipe.name
