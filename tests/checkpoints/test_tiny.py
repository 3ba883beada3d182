"""The tiny offline checkpoints behave like real Qwen-VL ones where it matters to swift and vLLM."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from checkpoints.tiny import EMITTABLE_SPECIALS, FIRST_SPECIAL_ID, SPECIAL_TOKENS, build_config, write_checkpoint
from medvlm_vocab import FAMILIES, TINY_FAMILIES, get_family
from tests.conftest import ROOT, SAMPLE

IMAGE_TOKEN_ID = 151655
FAMILY_DIRS = {name: f"tiny-{name.replace('_', '-')}" for name in TINY_FAMILIES}


def sample_image(index: int = 0) -> Image.Image:
    """A real image from the bundled MedTrinity-shaped sample."""
    table = pq.read_table(SAMPLE, columns=["image"]).slice(index, 1)
    return Image.open(io.BytesIO(table.column("image")[0].as_py()["bytes"])).convert("RGB")


def learned_ids(path: Path) -> set[int]:
    """Ids of the BPE tokens learned from text (not fillers, not specials)."""
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    return {i for t, i in vocab.items() if i < FIRST_SPECIAL_ID and not t.startswith("<|unused_")}


@pytest.fixture(scope="module", params=list(TINY_FAMILIES))
def checkpoint(request, models_dir: Path) -> tuple[str, Path]:
    return request.param, models_dir / FAMILY_DIRS[request.param]


def test_special_tokens_at_real_ids(checkpoint):
    from transformers import AutoTokenizer

    _, path = checkpoint
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == list(range(151643, 151657))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == 151643
    # Digits are single tokens, as in Qwen's tokenizer, so box coordinates tokenize the same way.
    assert tokenizer.tokenize("(123,45)") == ["(", "1", "2", "3", ",", "4", "5", ")"]
    assert tokenizer.decode(tokenizer("Locate the lesion in the CT scan.")["input_ids"]) == \
        "Locate the lesion in the CT scan."


def test_config_shape_fits_vllm_cpu(checkpoint):
    family, path = checkpoint
    config = json.loads((path / "config.json").read_text())
    text = config["text_config"]
    assert config["model_type"] == FAMILIES[family].hf_model_type
    assert text.get("head_dim", text["hidden_size"] // text["num_attention_heads"]) >= 32
    assert config["image_token_id"] == IMAGE_TOKEN_ID and text["vocab_size"] > FIRST_SPECIAL_ID + 13
    assert sum(f.stat().st_size for f in path.iterdir()) < 40 * 2**20


def test_loads_and_generates_real_tokens(checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, path = checkpoint
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text and text.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[sample_image()], return_tensors="pt")
    assert (inputs["input_ids"] == IMAGE_TOKEN_ID).sum() > 1
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    emittable = learned_ids(path) | set(processor.tokenizer.convert_tokens_to_ids(list(EMITTABLE_SPECIALS)))
    assert new and set(new) <= emittable
    assert processor.tokenizer.decode(new, skip_special_tokens=True) != ""


def test_unused_vocab_rows_are_zero(checkpoint):
    from safetensors import safe_open

    _, path = checkpoint
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        name = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))
        emb = f.get_tensor(name).float()
    live = torch.zeros(emb.shape[0], dtype=torch.bool)
    live[sorted(learned_ids(path))] = True
    norms = emb.norm(dim=1)
    assert (norms[live] > 0).all() and (norms[:FIRST_SPECIAL_ID][~live[:FIRST_SPECIAL_ID]] == 0).all()
    assert live.sum() > 1000 and (norms[FIRST_SPECIAL_ID + 14:] == 0).all()
    assert norms[151645] > 0 and norms[151655] == 0  # <|im_end|> can be emitted, <|image_pad|> cannot


def test_swift_template_expands_image_tokens(checkpoint, monkeypatch):
    """The silent failure mode: with wrong token ids swift leaves one image token per image."""
    monkeypatch.setenv("MAX_PIXELS", str(64 * 28 * 28))
    monkeypatch.setenv("IMAGE_MAX_TOKEN_NUM", "64")
    from swift import get_processor, get_template

    family, path = checkpoint
    fam = FAMILIES[family]
    processor = get_processor(str(path), model_type=fam.swift_model_type, download_model=False)
    template = get_template(processor, template_type=fam.swift_template)
    template.set_mode("train")
    image = sample_image(1)
    encoded = template.encode({
        "messages": [{"role": "user", "content": "<image>Where is <ref-object>?"},
                     {"role": "assistant", "content": "<bbox>"}],
        "images": [image],
        "objects": {"ref": ["the lesion"], "bbox": [[10, 20, 110, 90]], "bbox_type": "real"},
    })
    n_image_tokens = encoded["input_ids"].count(IMAGE_TOKEN_ID)
    expected = int(encoded["image_grid_thw"].prod()) // 4
    assert n_image_tokens == expected > 1
    labelled = [t for t, lab in zip(encoded["input_ids"], encoded["labels"]) if lab != -100]
    answer = processor.decode(labelled)
    assert answer.startswith("<|box_start|>(") and "<|box_end|>" in answer


def test_checkpoints_are_deterministic(tmp_path, models_dir):
    spec = yaml.safe_load((ROOT / "recipes" / "tiny-model.yaml").read_text())
    rebuilt = write_checkpoint(FAMILIES["qwen2_vl"], tmp_path, spec, [SAMPLE])
    for name in ("model.safetensors", "tokenizer.json"):
        digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (rebuilt, models_dir / "tiny-qwen2-vl")]
        assert digest[0] == digest[1], name


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_a_head_dim_the_attention_ignores_is_rejected(family):
    spec = yaml.safe_load((ROOT / "recipes/tiny-model.yaml").read_text())
    spec["text"].update(num_attention_heads=8, head_dim=16)  # attention would take 64 // 8 = 8, rotary 16
    with pytest.raises(ValueError, match=r"hidden_size \(64\) must equal num_attention_heads \(8\) x head_dim \(16\)"):
        build_config(get_family(family), spec)
    spec["text"].update(num_attention_heads=4)
    assert build_config(get_family(family), spec).text_config.head_dim == 16
