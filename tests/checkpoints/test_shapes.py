"""Checkpoints at the published Qwen-VL shapes: configs counted on the meta device, one small build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from checkpoints import shapes
from checkpoints.shapes import count_parameters, load_shape, recipe_image_tokens, shape_config, shape_names
from checkpoints.tiny import FIRST_SPECIAL_ID, PROMPT_SPECIALS, SPECIAL_TOKENS, random_model
from medvlm_vocab import get_family
from tests.conftest import ROOT, SAMPLE

PUBLISHED = ("qwen2-vl-2b", "qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen3-vl-2b", "qwen3-vl-8b")


def test_every_published_shape_has_a_file_and_a_gpu_recipe():
    assert set(PUBLISHED) <= set(shape_names())
    for name in PUBLISHED:
        assert load_shape(name)["recipe"] == f"recipes/sft/{name}.yaml"


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_matches_the_published_checkpoint(name):
    shape = load_shape(name)
    n = count_parameters(shape_config(shape))
    assert abs(n - shape["published_parameters"]) <= 0.01 * shape["published_parameters"], (n, shape)


@pytest.mark.parametrize("name", PUBLISHED)
def test_config_keeps_every_shape_field(name):
    """Fields that set only a code path (window blocks, DeepStack layers, mrope split) change no
    parameter count, so each is checked against the built config one by one."""
    shape = load_shape(name)
    config = shape_config(shape)
    for part in ("text_config", "vision_config"):
        built = getattr(config, part)
        for key, value in shape[part].items():
            if key == "rope_parameters":
                assert {k: built.rope_parameters[k] for k in value} == value, (part, key)
            else:
                assert getattr(built, key) == value, (part, key, getattr(built, key), value)
    assert config.tie_word_embeddings == shape["tie_word_embeddings"]
    assert (config.image_token_id, config.video_token_id) == (151655, 151656)
    assert (config.vision_start_token_id, config.vision_end_token_id) == (151652, 151653)


@pytest.mark.parametrize("name", PUBLISHED)
def test_processor_takes_the_recipe_pixel_limits(name):
    shape = load_shape(name)
    env = yaml.safe_load((ROOT / shape["recipe"]).read_text())["ENV"]
    tokens = recipe_image_tokens(shape, get_family(shape["family"]))
    assert tokens == 512 == int(env["IMAGE_MAX_TOKEN_NUM"]) == int(env["MAX_PIXELS"]) // 28**2


SMALL = {  # published structure, small widths: every code path of the family at test size
    "qwen2_5_vl": {"text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "num_key_value_heads": 1, "intermediate_size": 128,
                                   "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                       "mrope_section": [4, 6, 6]}},
                   "vision_config": {"depth": 4, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                                     "out_hidden_size": 64, "fullatt_block_indexes": [1, 3]}},
    "qwen3_vl": {"text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128,
                                 "rope_parameters": {"rope_type": "default", "rope_theta": 5e6,
                                                     "mrope_section": [6, 5, 5], "mrope_interleaved": True}},
                 "vision_config": {"depth": 4, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                                   "out_hidden_size": 64, "num_position_embeddings": 256,
                                   "deepstack_visual_indexes": [1, 2]}},
}


@pytest.mark.parametrize("family,published", [("qwen2_5_vl", "qwen2.5-vl-3b"), ("qwen3_vl", "qwen3-vl-2b")])
def test_written_checkpoint_loads_with_real_ids_and_recipe_limits(tmp_path, monkeypatch, family, published):
    """The writer end to end on a small shape: tokenizer ids, processor cap, weights, generation."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    shape = load_shape(published)
    for part in ("text_config", "vision_config"):
        shape[part].update(SMALL[family][part])
    shape_dir = tmp_path / "shapes"
    shape_dir.mkdir()
    (shape_dir / "small.yaml").write_text(yaml.safe_dump(shape))
    monkeypatch.setattr(shapes, "SHAPES_DIR", shape_dir)
    path = shapes.write_shape_checkpoint("small", tmp_path / "models", [SAMPLE])
    assert path == tmp_path / "models" / "shape-small"

    processor = AutoProcessor.from_pretrained(path)
    assert processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(151643, 151657))
    big = Image.new("RGB", (1600, 1200), "gray")
    grid = processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // 4 == pytest.approx(512, rel=0.1) and int(grid.prod()) // 4 <= 512

    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == get_family(family).hf_model_type
    for key, value in SMALL[family]["vision_config"].items():
        assert config["vision_config"][key] == value, key
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert next(model.parameters()).dtype == torch.bfloat16
    emb = model.get_input_embeddings().weight
    assert emb[151645].abs().sum() > 0 and emb[151655].abs().sum() == 0  # <|im_end|> live, <|image_pad|> zeroed
    assert all(emb[i].abs().sum() > 0 for i in (151644, 151652, 151653))  # the prompt specials live
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert all(t < FIRST_SPECIAL_ID or t in (151643, 151645) or 151646 <= t <= 151649
               for t in out[0, inputs["input_ids"].shape[1]:].tolist())


def test_big_shapes_refuse_without_the_memory(monkeypatch, capsys):
    monkeypatch.setattr(shapes, "available_memory_bytes", lambda: 4 * 2**30)
    monkeypatch.setattr(shapes, "write_shape_checkpoint", lambda *a, **k: pytest.fail("must not build"))
    assert shapes.main(["--shape", "qwen2.5-vl-7b", "--out", str(Path("/nonexistent"))]) == 2
    assert "GiB available" in capsys.readouterr().err


@pytest.mark.parametrize("live", [False, True])
def test_a_zero_prompt_token_row_makes_gradients_nan_at_published_depth(live):
    """qwen3-vl-2b's 28 text layers at test width. With <|im_start|>'s row zeroed the first token's
    hidden state is zero in every layer and each RMSNorm scales its gradient by rsqrt(eps): NaN by
    the bottom layers (the CPU rehearsal's SFT and DPO steps all had grad_norm nan). The shape writer
    keeps the prompt specials live, which keeps the gradients finite."""
    shape = load_shape("qwen3-vl-2b")
    for part in ("text_config", "vision_config"):
        shape[part].update({k: v for k, v in SMALL["qwen3_vl"][part].items() if k != "num_hidden_layers"})
    config = shape_config(shape)
    assert config.text_config.num_hidden_layers == 28
    im_start = FIRST_SPECIAL_ID + SPECIAL_TOKENS.index("<|im_start|>")
    live_ids = [FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(t) for t in PROMPT_SPECIALS] if live else []
    model = random_model(config, 0, list(range(1000)), live_ids=live_ids).float()
    ids = torch.tensor([[im_start, *range(10, 40)]])
    model(input_ids=ids, labels=ids).loss.backward()
    finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert finite is live
