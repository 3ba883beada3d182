"""Tiny random-weight Qwen-VL checkpoints, built offline, for CPU runs and tests.

There is no model hub here, so `make tiny-model` writes one checkpoint per family that loads
with AutoProcessor / AutoModelForImageTextToText and that swift accepts like a real one:
- a byte-level BPE tokenizer trained on local text, with the Qwen special tokens at their real
  ids (151643-151656): swift hard-codes image_token_id 151655, and a tokenizer with the specials
  elsewhere makes it silently skip image-token expansion;
- the official chat template of the family and a processor with a small max_pixels;
- random weights from a fixed seed, with the embedding/LM-head rows of ids that no text maps to
  zeroed, so greedy decoding of an untrained model still emits real tokens.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoModelForImageTextToText, GenerationConfig, PreTrainedModel,
                          ProcessorMixin, Qwen2Tokenizer)

from medvlm_vocab import TINY_FAMILIES, Family, get_family, tiny_checkpoint_name

FIRST_SPECIAL_ID = 151643
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# Specials a trained model must be able to emit: the stop tokens and the grounding markup.
EMITTABLE_SPECIALS = ("<|endoftext|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                      "<|box_start|>", "<|box_end|>")
# In every prompt the chat template writes, never in an answer: their rows stay live in the
# published-shape checkpoints (random_model's live_ids; checkpoints.shapes).
PROMPT_SPECIALS = ("<|im_start|>", "<|vision_start|>", "<|vision_end|>")
ANSWER_WORDS = ("yes", "no")
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
_BUILTIN_CORPUS = (
    "You are a helpful assistant. Locate the region of interest. Does this region show the finding? "
    "yes no. Modality: CT MR MRI X-ray ultrasound pathology. Findings: Impression: Region: Organ: "
    "0 1 2 3 4 5 6 7 8 9 (12,345),(678,901) left right upper lower central"
)


def read_corpus(paths: Iterable[Path]) -> Iterator[str]:
    """Text to learn the BPE from: the `caption` column of parquet files, or lines of text files."""
    yield _BUILTIN_CORPUS
    yield from ANSWER_WORDS * 4  # verify answers must be single tokens (the decision loss reads one logit)
    for path in paths:
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(columns=["caption"], batch_size=256):
                yield from (c for c in batch.column("caption").to_pylist() if c)
        else:
            yield from path.read_text(encoding="utf-8").splitlines()


def train_bpe(corpus: Iterable[str], bpe_vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a Qwen-style byte-level BPE (same pre-tokenizer regex, digits split one by one)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_qwen_pretokenize_regex()), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _qwen_pretokenize_regex() -> str:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    return PRETOKENIZE_REGEX


def full_vocab(bpe_vocab: dict[str, int], family: Family) -> dict[str, int]:
    """BPE vocab padded with never-produced fillers so the specials land on their real ids."""
    if len(bpe_vocab) > FIRST_SPECIAL_ID:
        raise ValueError("BPE vocabulary overlaps the special-token range")
    vocab = dict(bpe_vocab)
    vocab.update({f"<|unused_{i}|>": i for i in range(len(bpe_vocab), FIRST_SPECIAL_ID)})
    for offset, token in enumerate(SPECIAL_TOKENS + family.extra_tokens):
        vocab[token] = FIRST_SPECIAL_ID + offset
    return vocab


def build_tokenizer(bpe_vocab: dict[str, int], merges: list[tuple[str, str]], family: Family) -> Qwen2Tokenizer:
    """A Qwen2Tokenizer whose specials and the family's extra tokens keep their real ids."""
    tokenizer = Qwen2Tokenizer(vocab=full_vocab(bpe_vocab, family), merges=merges, unk_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", errors="replace",
                               model_max_length=32768, clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.extra_tokens])
    tokenizer.chat_template = (TEMPLATE_DIR / family.chat_template).read_text(encoding="utf-8")
    return tokenizer


def scaled_mrope_section(real: tuple[int, int, int], head_dim: int) -> list[int]:
    """Scale a released model's (t, h, w) rotary split (for head_dim 128) to `head_dim`."""
    section = [v * head_dim // 128 for v in real]
    section[0] += head_dim // 2 - sum(section)
    return section


def build_config(family: Family, spec: dict):
    """The family's transformers config scaled down to `spec` (recipes/tiny-model.yaml)."""
    text, vision = spec["text"], spec["vision"]
    head_dim = text["head_dim"]
    if family.hf_model_type != "qwen3_vl" and text["hidden_size"] != text["num_attention_heads"] * head_dim:
        # Qwen2-VL and Qwen2.5-VL attention take hidden_size // heads, their rotary takes head_dim: a mismatch
        # builds, then fails in the first forward pass with a shape error.
        raise ValueError(f"{family.name}: text hidden_size ({text['hidden_size']}) must equal num_attention_heads "
                         f"({text['num_attention_heads']}) x head_dim ({head_dim})")
    text_cfg = {k: text[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size")}
    text_cfg.update(max_position_embeddings=32768, bos_token_id=FIRST_SPECIAL_ID,
                    eos_token_id=FIRST_SPECIAL_ID + 2, tie_word_embeddings=text["tie_word_embeddings"])
    merge = 2
    if family.hf_model_type == "qwen2_vl":
        text_cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0,
                                       "mrope_section": scaled_mrope_section((16, 24, 24), head_dim)}
        vision_cfg = {"depth": vision["depth"], "embed_dim": vision["hidden_size"],
                      "num_heads": vision["num_heads"], "mlp_ratio": vision["intermediate_size"] // vision["hidden_size"],
                      "hidden_size": text["hidden_size"], "patch_size": family.patch_size,
                      "spatial_merge_size": merge, "temporal_patch_size": 2}
    elif family.hf_model_type == "qwen2_5_vl":
        text_cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0,
                                       "mrope_section": scaled_mrope_section((16, 24, 24), head_dim)}
        vision_cfg = {"depth": vision["depth"], "hidden_size": vision["hidden_size"],
                      "intermediate_size": vision["intermediate_size"], "num_heads": vision["num_heads"],
                      "out_hidden_size": text["hidden_size"], "patch_size": family.patch_size,
                      "spatial_merge_size": merge, "temporal_patch_size": 2, "window_size": 112,
                      "fullatt_block_indexes": [vision["depth"] - 1], "hidden_act": "silu"}
    else:
        text_cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 5_000_000.0,
                                       "mrope_section": scaled_mrope_section((24, 20, 20), head_dim),
                                       "mrope_interleaved": True}
        vision_cfg = {"depth": vision["depth"], "hidden_size": vision["hidden_size"],
                      "intermediate_size": vision["intermediate_size"], "num_heads": vision["num_heads"],
                      "out_hidden_size": text["hidden_size"], "patch_size": family.patch_size,
                      "spatial_merge_size": merge, "temporal_patch_size": 2,
                      "num_position_embeddings": 256, "deepstack_visual_indexes": [0]}
    return AutoConfig.for_model(
        family.hf_model_type, text_config=text_cfg, vision_config=vision_cfg,
        tie_word_embeddings=text["tie_word_embeddings"], image_token_id=FIRST_SPECIAL_ID + 12,
        video_token_id=FIRST_SPECIAL_ID + 13, vision_start_token_id=FIRST_SPECIAL_ID + 9,
        vision_end_token_id=FIRST_SPECIAL_ID + 10, dtype="bfloat16")


def build_processor(family: Family, tokenizer: Qwen2Tokenizer, spec: dict) -> ProcessorMixin:
    """The family's processor with small pixel limits, so a CPU step sees tens of image tokens."""
    import transformers

    token_px = (2 * family.patch_size) ** 2
    size = {"shortest_edge": spec["processor"]["min_image_tokens"] * token_px,
            "longest_edge": spec["processor"]["max_image_tokens"] * token_px}
    common = dict(size=size, patch_size=family.patch_size, merge_size=2, temporal_patch_size=2)
    if family.hf_model_type == "qwen3_vl":
        image_processor = transformers.Qwen2VLImageProcessor(
            **common, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
        video_processor = transformers.Qwen3VLVideoProcessor(**common)
        cls = transformers.Qwen3VLProcessor
    else:
        image_processor = transformers.Qwen2VLImageProcessor(**common)
        video_processor = transformers.Qwen2VLVideoProcessor(**common)
        cls = (transformers.Qwen2_5_VLProcessor if family.hf_model_type == "qwen2_5_vl"
               else transformers.Qwen2VLProcessor)
    return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
               chat_template=tokenizer.chat_template)


def random_model(config, seed: int, emittable_ids: list[int], init_dtype: torch.dtype = torch.float32,
                 device: str = "cpu", live_ids: Sequence[int] = ()) -> PreTrainedModel:
    """Random bf16 weights from `seed`; zero the embedding rows of every id outside `emittable_ids`
    and `live_ids`.

    The tiny checkpoints draw in float32 (their bytes stay reproducible); real-shape ones
    (checkpoints.shapes) draw in bfloat16, since a float32 copy of a 2B model would not fit beside it.
    `live_ids` are prompt tokens that must keep a row: a zero input row gives the conversation's first
    token (<|im_start|>) an all-zero hidden state in every layer, where each RMSNorm scales its gradient
    by rsqrt(eps) = 1e3; at a published depth (28 layers) that overflows to NaN gradients, at the tiny
    checkpoints' 2 layers it stays finite (their rows are left as the tiny recipes were tuned on).
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=init_dtype)
    keep = torch.zeros(config.text_config.vocab_size, dtype=torch.bool, device=device)
    keep[list(emittable_ids) + list(live_ids)] = True
    with torch.no_grad():
        for weight in {id(w): w for w in (model.get_input_embeddings().weight,
                                          model.get_output_embeddings().weight)}.values():
            weight[~keep] = 0.0
    return model.to(torch.bfloat16)


def write_checkpoint(family: Family, out_dir: Path, spec: dict, corpus_paths: list[Path]) -> Path:
    """Build and save one tiny checkpoint; returns its folder."""
    bpe_vocab, merges = train_bpe(read_corpus(corpus_paths), spec["tokenizer"]["bpe_vocab_size"])
    tokenizer = build_tokenizer(bpe_vocab, merges, family)
    emittable = sorted(set(bpe_vocab.values()) | {tokenizer.convert_tokens_to_ids(t) for t in EMITTABLE_SPECIALS})
    model = random_model(build_config(family, spec), spec["seed"], emittable)
    model.generation_config = GenerationConfig(
        bos_token_id=FIRST_SPECIAL_ID, pad_token_id=FIRST_SPECIAL_ID,
        eos_token_id=[FIRST_SPECIAL_ID + 2, FIRST_SPECIAL_ID], do_sample=False)
    target = out_dir / tiny_checkpoint_name(family.name)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    build_processor(family, tokenizer, spec).save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checkpoints.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--config", type=Path, default=Path("recipes/tiny-model.yaml"))
    parser.add_argument("--families", default=",".join(TINY_FAMILIES))
    parser.add_argument("--corpus", type=Path, nargs="*", default=[],
                        help="parquet files (caption column) or text files to learn the BPE from")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.config.read_text())
    for name in args.families.split(","):
        path = write_checkpoint(get_family(name.strip()), args.out, spec, args.corpus)
        size_mb = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        print(f"{path}  ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
