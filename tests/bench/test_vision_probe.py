"""bench/vision_probe.py: the readout token under the lesion, and a probe that can both succeed and fail."""
from __future__ import annotations

import torch

from bench.lesion_task import Lesion, lesions
from bench.vision_probe import centre_token, probe_accuracy, visual_tokens


def lesion_at(box: tuple[int, int, int, int]) -> Lesion:
    return Lesion("x", box, True, b"", "")


def test_centre_token_is_the_merged_patch_under_the_box_centre():
    # 224 px on an 8 x 8 merged grid: 28 px per token
    assert centre_token(lesion_at((0, 0, 20, 20)), 8, 8, (224, 224)) == 0
    assert centre_token(lesion_at((60, 100, 80, 130)), 8, 8, (224, 224)) == 4 * 8 + 2  # centre (70, 115)
    assert centre_token(lesion_at((200, 200, 224, 224)), 8, 8, (224, 224)) == 63  # centre on the last row/column


def test_probe_separates_separable_data_and_not_random_labels():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=gen)
    y = (x[:, 3] > 0).float()
    assert probe_accuracy(x[:300], y[:300], x[300:], y[300:]) >= 0.95
    noise = (torch.rand(400, generator=gen) > 0.5).float()
    assert 0.3 <= probe_accuracy(x[:300], noise[:300], x[300:], noise[300:]) <= 0.7


def test_visual_tokens_are_the_merged_grid_the_language_model_sees(models_dir):
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    path = models_dir / "tiny-qwen2-vl"
    model = Qwen2VLForConditionalGeneration.from_pretrained(path, torch_dtype=torch.float32).eval()
    items = list(lesions(2, seed=0))
    tokens, grid_h, grid_w = visual_tokens(model, AutoProcessor.from_pretrained(path), items)
    assert (grid_h, grid_w) == (8, 8)  # 224 px / 14 px patches / 2x2 merge
    assert [tuple(t.shape) for t in tokens] == [(64, model.config.text_config.hidden_size)] * 2
    assert not torch.equal(tokens[0], tokens[1])
