"""The Qwen-VL families medvlm supports, with the names swift and transformers use for each.

Local checkpoints need both --model_type and --template (swift's auto-detection is ambiguous for
local folders), so every make target looks them up here by FAMILY.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str            # FAMILY= value in the Makefile
    swift_model_type: str
    swift_template: str
    hf_model_type: str   # config.json "model_type"
    patch_size: int      # ViT patch; one merged visual token covers (2 * patch_size)^2 pixels
    bbox_space: str      # how swift renders grounding boxes: "norm1000" or "resized_pixels"
    chat_template: str   # file under swift_ext/chat_templates/
    extra_tokens: tuple[str, ...]  # added tokens after the shared specials (ids from 151657 on)


_QWEN25_EXTRA = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                 "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")

_QWEN3_EXTRA = _QWEN25_EXTRA + ("<tool_response>", "</tool_response>", "<think>", "</think>")

FAMILIES: dict[str, Family] = {
    f.name: f for f in (
        Family("qwen2_vl", "qwen2_vl", "qwen2_vl", "qwen2_vl", 14, "norm1000", "qwen2_vl.jinja", ()),
        Family("qwen2_5_vl", "qwen2_5_vl", "qwen2_5_vl", "qwen2_5_vl", 14, "resized_pixels",
               "qwen2_vl.jinja", _QWEN25_EXTRA),
        Family("qwen3_vl", "qwen3_vl", "qwen3_vl", "qwen3_vl", 16, "norm1000", "qwen3_vl.jinja", _QWEN3_EXTRA),
        Family("qwen3_vl_moe", "qwen3_vl_moe", "qwen3_vl", "qwen3_vl_moe", 16, "norm1000", "qwen3_vl.jinja",
               _QWEN3_EXTRA),
    )
}
# Families with a tiny offline checkpoint (`make tiny-model`); the MoE shares Qwen3-VL's code paths.
TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def get_family(name: str) -> Family:
    """Look a family up by name, with an error that lists the valid ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown FAMILY {name!r}; choose one of {', '.join(FAMILIES)}") from None
