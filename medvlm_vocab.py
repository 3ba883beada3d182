"""The words every medvlm stage shares, defined once: tasks, label and batch keys, report labels, model
families and their box conventions, and the serving defaults.

Data flows data_prep -> swift_ext (training) -> serve -> eval / review, and no stage imports a later
one. This module sits below all of them and imports nothing from the project (nor torch or swift), so
each stage, the review venv and the Makefile (`python -m medvlm_vocab ...`) read the same values.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

# --- tasks -----------------------------------------------------------------------------------------
TASKS = ("locate", "verify", "diagnose")
# Task ids in the per-token task map; 0 is a position without loss.
NO_TASK = 0
LOCATE, VERIFY, DIAGNOSE = 1, 2, 3
TASK_IDS = {"locate": LOCATE, "verify": VERIFY, "diagnose": DIAGNOSE}

# A label position no loss reads (transformers' and swift's ignore_index).
IGNORE_INDEX = -100

# The structured report's line labels, in report order (data_prep writes them, eval and pairs parse them).
REPORT_LABELS = {
    "modality": "Modality", "organ": "Organ", "region": "Region", "findings": "Findings",
    "relation": "Relation", "impression": "Impression",
}

# --- batch annotations (swift_ext.templates -> swift_ext.loss_type) --------------------------------
# Per-label-token annotations the template adds to a training batch, with the value a position
# without that annotation takes when they are scattered back onto the label grid.
MED_BATCH_FILL = {"med_task": NO_TASK, "med_weight": 1.0, "med_decision": -1, "med_sample": 0}
MED_BATCH_KEYS = tuple(MED_BATCH_FILL)
KEEP_KEY = "med_logits_at"  # swift_ext.logit_positions: (rows, positions) of the logits a loss reads

# --- model families and their box conventions ------------------------------------------------------
NORM1000 = "norm1000"              # boxes in 0-1000 of the image side (Qwen2-VL, Qwen3-VL)
RESIZED_PIXELS = "resized_pixels"  # boxes in pixels of the image after smart_resize (Qwen2.5-VL)
NORM = 1000
SPATIAL_MERGE_SIZE = 2  # qwen_vl_utils: one merged visual token covers (patch_size * 2)^2 pixels
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"


@dataclass(frozen=True)
class Family:
    """A Qwen-VL family with the names swift and transformers use for it.

    Local checkpoints need both --model_type and --template (swift's auto-detection is ambiguous for
    local folders), so every stage looks them up here by FAMILY.
    """

    name: str            # FAMILY= value in the Makefile
    swift_model_type: str
    swift_template: str
    hf_model_type: str   # config.json "model_type"
    patch_size: int      # ViT patch; one merged visual token covers (2 * patch_size)^2 pixels
    bbox_space: str      # how swift renders grounding boxes: NORM1000 or RESIZED_PIXELS
    chat_template: str   # file under checkpoints/chat_templates/
    extra_tokens: tuple[str, ...]  # added tokens after the shared specials (ids from 151657 on)


_QWEN25_EXTRA = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                 "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")

_QWEN3_EXTRA = _QWEN25_EXTRA + ("<tool_response>", "</tool_response>", "<think>", "</think>")

FAMILIES: dict[str, Family] = {
    f.name: f for f in (
        Family("qwen2_vl", "qwen2_vl", "qwen2_vl", "qwen2_vl", 14, NORM1000, "qwen2_vl.jinja", ()),
        Family("qwen2_5_vl", "qwen2_5_vl", "qwen2_5_vl", "qwen2_5_vl", 14, RESIZED_PIXELS,
               "qwen2_vl.jinja", _QWEN25_EXTRA),
        Family("qwen3_vl", "qwen3_vl", "qwen3_vl", "qwen3_vl", 16, NORM1000, "qwen3_vl.jinja", _QWEN3_EXTRA),
        Family("qwen3_vl_moe", "qwen3_vl_moe", "qwen3_vl", "qwen3_vl_moe", 16, NORM1000, "qwen3_vl.jinja",
               _QWEN3_EXTRA),
    )
}
# Families with a tiny offline checkpoint (`make tiny-model`); the MoE shares Qwen3-VL's code paths.
TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def tiny_checkpoint_name(family: str) -> str:
    """Folder of a family's tiny checkpoint under models/ (the Makefile's MODEL default spells it alike)."""
    return f"tiny-{family.replace('_', '-')}"


def get_family(name: str) -> Family:
    """Look a family up by name, with an error that lists the valid ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown FAMILY {name!r}; choose one of {', '.join(FAMILIES)}") from None


# --- serving ---------------------------------------------------------------------------------------
API_KEY_ENV = "MEDVLM_API_KEY"  # the bearer token the gateway requires and every client sends
MAX_REQUEST_MB = 16             # the gateway's default request body limit
MAX_IMAGE_PIXELS = 40_000_000   # the gateway's default image size limit (review rejects larger uploads)
MAX_N = 8                       # the gateway's default bound on `n`, the choices one request may ask for
_ANY_ADDRESS = ("0.0.0.0", "::")


def client_host(host: str) -> str:
    """The address a client on this machine dials for a server bound to `host` (not the wildcard)."""
    return "127.0.0.1" if host in _ANY_ADDRESS else host


def main(argv: list[str] | None = None) -> None:
    """The Makefile's lookups, so it repeats no mapping of its own."""
    parser = argparse.ArgumentParser(description="print one medvlm vocabulary value")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("template", help="swift template of FAMILY").add_argument("family")
    url = sub.add_parser("url", help="http URL a local client uses for a server on HOST:PORT")
    url.add_argument("host")
    url.add_argument("port")
    args = parser.parse_args(argv)
    if args.what == "template":
        try:
            print(get_family(args.family).swift_template)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        print(f"http://{client_host(args.host)}:{args.port}")


if __name__ == "__main__":
    main()
