"""Random-weight checkpoints at the published Qwen-VL shapes (recipes/shapes/*.yaml).

No model hub is reachable here or on a lent GPU, yet the GPU recipes must load a model of their real
size before their memory and speed can be measured. A shape checkpoint has the published config in
every field that sets a tensor shape or a code path, the tiny checkpoints' tokenizer (specials at
their real ids; `checkpoints.tiny`), and the family's processor with the SFT recipe's pixel
limits, so swift and vLLM treat it exactly as the released model; only the weights are random.

    python -m checkpoints.shapes --list                    # shapes with config-counted parameters
    python -m checkpoints.shapes --shape qwen2-vl-2b       # -> models/shape-qwen2-vl-2b
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig, PretrainedConfig

from checkpoints.tiny import (EMITTABLE_SPECIALS, FIRST_SPECIAL_ID, PROMPT_SPECIALS, build_processor,
                              build_tokenizer, random_model, read_corpus, train_bpe)
from medvlm_vocab import Family, get_family

ROOT = Path(__file__).resolve().parent.parent
SHAPES_DIR = ROOT / "recipes" / "shapes"
TINY_SPEC = ROOT / "recipes" / "tiny-model.yaml"
MIN_IMAGE_TOKENS = 4  # the released processors' min_pixels (3136 = 4 tokens of 28x28 px)


def shape_names() -> list[str]:
    return sorted(p.stem for p in SHAPES_DIR.glob("*.yaml"))


def load_shape(name: str) -> dict:
    path = SHAPES_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(shape_names())}")
    return yaml.safe_load(path.read_text())


def shape_config(shape: dict) -> PretrainedConfig:
    """The family's transformers config with the shape's fields and the Qwen special-token ids."""
    family = get_family(shape["family"])
    tie = shape["tie_word_embeddings"]
    text = dict(shape["text_config"], bos_token_id=FIRST_SPECIAL_ID, eos_token_id=FIRST_SPECIAL_ID + 2,
                tie_word_embeddings=tie)
    return AutoConfig.for_model(
        family.hf_model_type, text_config=text, vision_config=dict(shape["vision_config"]),
        tie_word_embeddings=tie, image_token_id=FIRST_SPECIAL_ID + 12, video_token_id=FIRST_SPECIAL_ID + 13,
        vision_start_token_id=FIRST_SPECIAL_ID + 9, vision_end_token_id=FIRST_SPECIAL_ID + 10, dtype="bfloat16")


def count_parameters(config: PretrainedConfig) -> int:
    """Parameters of a model built from `config` on the meta device (no memory), tied weights once."""
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def recipe_image_tokens(shape: dict, family: Family) -> int:
    """Merged visual tokens per image the shape's SFT recipe allows (its ENV pixel limits)."""
    env = yaml.safe_load((ROOT / shape["recipe"]).read_text())["ENV"]
    if family.hf_model_type.startswith("qwen3_vl"):
        return int(env["IMAGE_MAX_TOKEN_NUM"])
    return int(env["MAX_PIXELS"]) // (2 * family.patch_size) ** 2


def write_shape_checkpoint(name: str, out_dir: Path, corpus_paths: list[Path], seed: int = 0,
                           device: str = "cpu") -> Path:
    """Build and save one shape checkpoint (random bf16 weights); returns its folder."""
    shape = load_shape(name)
    family = get_family(shape["family"])
    tiny = yaml.safe_load(TINY_SPEC.read_text())
    bpe_vocab, merges = train_bpe(read_corpus(corpus_paths), tiny["tokenizer"]["bpe_vocab_size"])
    tokenizer = build_tokenizer(bpe_vocab, merges, family)
    emittable = sorted(set(bpe_vocab.values()) | {tokenizer.convert_tokens_to_ids(t) for t in EMITTABLE_SPECIALS})
    config = shape_config(shape)
    live = [tokenizer.convert_tokens_to_ids(t) for t in PROMPT_SPECIALS]
    model = random_model(config, seed, emittable, init_dtype=torch.bfloat16, device=device, live_ids=live)
    model.generation_config = GenerationConfig(
        bos_token_id=FIRST_SPECIAL_ID, pad_token_id=FIRST_SPECIAL_ID,
        eos_token_id=[FIRST_SPECIAL_ID + 2, FIRST_SPECIAL_ID], do_sample=False)
    target = out_dir / f"shape-{name}"
    target.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(target)
    del model
    processor_spec = {"processor": {"min_image_tokens": MIN_IMAGE_TOKENS,
                                    "max_image_tokens": recipe_image_tokens(shape, family)}}
    build_processor(family, tokenizer, processor_spec).save_pretrained(target)
    return target


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checkpoints.shapes", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="append", default=[], help=f"one of {', '.join(shape_names())}")
    parser.add_argument("--list", action="store_true", help="print each shape's parameter count and exit")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--corpus", type=Path, nargs="*", default=[ROOT / "data/sample/medtrinity_sample.parquet"],
                        help="parquet (caption column) or text files to learn the BPE from, as for checkpoints.tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn (cuda is faster)")
    parser.add_argument("--force", action="store_true", help="build even if MemAvailable looks too small")
    args = parser.parse_args(argv)
    if args.list or not args.shape:
        print(f"{'shape':<16}{'family':<12}{'parameters':>16}{'published':>16}{'diff':>9}")
        for name in shape_names():
            shape = load_shape(name)
            n, published = count_parameters(shape_config(shape)), shape["published_parameters"]
            print(f"{name:<16}{shape['family']:<12}{n:>16,}{published:>16,}{(n - published) / published:>9.3%}")
        return 0
    for name in args.shape:
        n = count_parameters(shape_config(load_shape(name)))
        need = int(n * 2 * 1.15)  # bf16 weights plus the largest tensors' init temporaries
        if args.device == "cpu" and need > available_memory_bytes() and not args.force:
            print(f"{name}: needs about {need / 2**30:.1f} GiB of RAM, {available_memory_bytes() / 2**30:.1f} "
                  "GiB available; --force to try anyway", file=sys.stderr)
            return 2
        path = write_shape_checkpoint(name, args.out, args.corpus, args.seed, args.device)
        size_gb = sum(f.stat().st_size for f in path.iterdir()) / 2**30
        print(f"{path}  ({n:,} parameters, {size_gb:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
