"""Logits only where a loss reads them: which positions of a padded batch need the LM head.

A causal LM's loss reads the logit at position t only when label t + 1 is supervised. On the
embedded default that is about a third of the positions, and the head over a 151,936-word
vocabulary is most of a training step on CPU, so the collator keeps only those positions
(`logits_to_keep` as an index tensor, which transformers' Qwen-VL forwards accept) and trims the
labels to match. swift's own `use_logits_to_keep` keeps a suffix for batches of several rows
(everything after the earliest answer in the batch); this keeps the union of the rows' supervised
positions, so a padded batch computes the head on little more than its answer tokens.
"""
from __future__ import annotations

import torch

from swift_ext.spans import IGNORE


def supervised_logit_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions whose logits some row's loss reads, and the labels aligned to those logits.

    labels [B, L] (causal alignment: logit t predicts labels[:, t + 1]). Returns
    - keep [K + 1] long: the K positions t where any row has a label at t + 1, then L - 1 (its logit is
      never read, as in swift: it keeps the trimmed sequence one longer than its labels so the usual
      shift-by-one still pairs logit k with label k + 1);
    - kept_labels [B, K + 1]: IGNORE, then labels[:, keep[:K] + 1].
    Column k of the model's logits (computed with logits_to_keep=keep) then predicts kept_labels[:, k + 1],
    so every loss that shifts like transformers reads the same (logit, label) pairs as on the full grid.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, length], got {tuple(labels.shape)}")
    length = labels.shape[1]
    positions = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)
    keep = torch.cat([positions, positions.new_tensor([length - 1])])
    kept = torch.cat([labels.new_full((labels.shape[0], 1), IGNORE), labels[:, positions + 1]], dim=1)
    return keep, kept


def trim_to_supervised(batch: dict, label_aligned: tuple[str, ...] = ("loss_scale",)) -> dict:
    """A collated batch whose labels (and label-aligned tensors) are cut to the supervised logits.

    Adds `logits_to_keep` [K + 1] for the model's forward; input_ids and everything the forward needs
    stay whole, so the hidden states are computed exactly as before.
    """
    labels = batch.get("labels")
    if labels is None:
        return batch
    keep, kept = supervised_logit_positions(labels)
    out = {**batch, "labels": kept, "logits_to_keep": keep}
    for key in label_aligned:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.shape == labels.shape:
            out[key] = torch.cat([value.new_zeros((value.shape[0], 1)), value[:, keep[:-1] + 1]], dim=1)
    return out
