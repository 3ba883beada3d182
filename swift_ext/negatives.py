"""On-the-fly verify negatives: turn an encoded positive into a "no" sample using a batch partner.

A negative either shows the partner's image (its image tokens and pixels) or asks about the
partner's finding. Either way its answers no longer describe what is shown, so only the verify
decision is trained ("no"); every locate and diagnose label is masked.
"""
from __future__ import annotations

from copy import copy
from typing import Any, Literal

import torch

from medvlm_vocab import IGNORE_INDEX, NO_TASK, VERIFY
from swift_ext.spans import shift, splice

Mode = Literal["image", "finding"]
# Per-position arrays of an encoded sample and the value a newly inserted prompt token gets.
_PROMPT_FILL = {"labels": IGNORE_INDEX, "task": NO_TASK, "weight": 1.0, "decision": -1, "loss_scale": 0.0}


def negative_modes(sample: dict[str, Any], partner: dict[str, Any]) -> list[Mode]:
    """Which swaps can turn `sample` into a negative with this partner."""
    med, other = sample["med"], partner["med"]
    if med["verify_pos"] is None or med["finding_key"] == other["finding_key"]:
        return []
    modes: list[Mode] = []
    if med["image"] and other["image"] and partner.get("pixel_values") is not None:
        modes.append("image")
    if med["finding"] and other["finding_ids"]:
        modes.append("finding")
    return modes


def make_negative(sample: dict[str, Any], partner: dict[str, Any], mode: Mode, *, no_id: int,
                  image_token_id: int) -> dict[str, Any]:
    """A new encoded sample: `sample` with the partner's image or finding, answered "no"."""
    med = sample["med"]
    arrays = {"input_ids": list(sample["input_ids"]), "labels": list(sample["labels"]),
              "task": list(med["task"]), "weight": list(med["weight"]), "decision": list(med["decision"])}
    if isinstance(sample.get("loss_scale"), list):
        arrays["loss_scale"] = list(sample["loss_scale"])
    out = copy(sample)
    if mode == "image":
        start, n_old = med["image"]
        n_new = partner["med"]["image"][1]
        new_ids = [image_token_id] * n_new
        out["pixel_values"] = partner["pixel_values"]
        out["image_grid_thw"] = partner["image_grid_thw"]
        end = start + n_old
    else:
        start, end = med["finding"]
        new_ids = list(partner["med"]["finding_ids"])
    for key, values in arrays.items():
        fill = new_ids if key == "input_ids" else [_PROMPT_FILL[key]] * len(new_ids)
        arrays[key] = splice(values, start, end, fill)
    delta = len(new_ids) - (end - start)
    verify_pos = shift(med["verify_pos"], end, delta)

    for pos, task in enumerate(arrays["task"]):
        if task != VERIFY:
            arrays["labels"][pos] = IGNORE_INDEX
            arrays["task"][pos] = 0
            arrays["weight"][pos] = 1.0
            if "loss_scale" in arrays:
                arrays["loss_scale"][pos] = 0.0
    arrays["input_ids"][verify_pos] = no_id
    arrays["labels"][verify_pos] = no_id
    arrays["decision"][verify_pos] = 0

    out["input_ids"], out["labels"] = arrays["input_ids"], arrays["labels"]
    if "loss_scale" in arrays:
        out["loss_scale"] = arrays["loss_scale"]
    if "mm_token_type_ids" in sample:
        out["mm_token_type_ids"] = (torch.tensor(arrays["input_ids"]) == image_token_id).long()
    if "length" in sample:
        out["length"] = len(arrays["input_ids"])
    if mode == "image":
        spans = {"image": (start, len(new_ids)),
                 "finding": med["finding"] and tuple(shift(p, end, delta) for p in med["finding"])}
    else:
        spans = {"finding": (start, start + len(new_ids)), "finding_ids": new_ids,
                 "finding_key": partner["med"]["finding_key"]}
    out["med"] = {**med, **spans, "task": arrays["task"], "weight": arrays["weight"],
                  "decision": arrays["decision"], "verify_pos": verify_pos, "negative": mode}
    return out
