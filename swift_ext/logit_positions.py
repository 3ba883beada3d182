"""Logits only where a loss reads them: the LM head on the supervised positions of a batch alone.

A causal LM's loss reads the logit at (row b, position t) only when label (b, t + 1) is supervised. On the
embedded default that is about a third of the positions, and the head over a 151,936-word vocabulary is
most of a training step on CPU. So the collator packs the supervised labels into one row and records
where their logits sit; the forward returns its final hidden states, the head runs on those (row,
position) pairs alone, and logits and labels reach the loss as one packed row. swift's own
`use_logits_to_keep` keeps a suffix (everything after the earliest answer in the batch), and an index
`logits_to_keep` would keep the union of the rows' positions: with rows of different layouts
(conversations beside single-task rows) both keep most of the batch.
"""
from __future__ import annotations

import torch

from medvlm_vocab import IGNORE_INDEX


def supervised_logit_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the logits a loss reads sit, and the labels packed to match.

    labels [B, L] (causal alignment: logit (b, t) predicts labels[b, t + 1]). Returns
    - rows [n], positions [n]: the n logits whose next label is supervised, in row-major order;
    - packed [1, n + 1]: IGNORE_INDEX, then those n labels. A logit tensor [1, n + 1, V] made of the n
      gathered logits plus any last row (never read) then pairs logit k with packed label k + 1 under the
      usual shift-by-one, exactly the (logit, label) pairs of the full [B, L] grid, as one packed row.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, length], got {tuple(labels.shape)}")
    rows, positions = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    packed = torch.cat([labels.new_full((1,), IGNORE_INDEX), labels[rows, positions + 1]])[None]
    return rows, positions, packed


def trim_to_supervised(batch: dict, label_aligned: tuple[str, ...] = ("loss_scale",)) -> dict:
    """A collated batch whose labels (and label-aligned tensors) are packed to the supervised logits.

    Adds `logits_at` [2, n] (rows, positions) for `supervised_logits`; input_ids and everything the
    forward needs stay whole, so the hidden states are computed exactly as before.
    """
    labels = batch.get("labels")
    if labels is None:
        return batch
    rows, positions, packed = supervised_logit_positions(labels)
    out = {**batch, "labels": packed, "logits_at": torch.stack([rows, positions])}
    for key in label_aligned:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.shape == labels.shape:
            out[key] = torch.cat([value.new_zeros((1,)), value[rows, positions + 1]])[None]
    return out


def supervised_logits(model: torch.nn.Module, inputs: dict, logits_at: torch.Tensor):
    """The model's outputs with logits [1, n + 1, V] only at `logits_at` (see supervised_logit_positions).

    The forward keeps one logit per row (`logits_to_keep=1`, what generation asks for) and returns its
    final-norm hidden states; the LM head then runs on the n gathered rows alone. Labels are not handed to
    the forward, so it computes no loss of its own.
    """
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "logits_to_keep")}
    outputs = model(**forward, logits_to_keep=1, output_hidden_states=True)
    rows, positions = logits_at
    hidden = outputs.hidden_states[-1][rows, positions]  # [n, H], after the final norm
    hidden = torch.cat([hidden, hidden[-1:]])  # [n + 1, H]: the last row pairs with no label
    head = model.get_output_embeddings()
    # The residual stream can be float32 (peft's adapters) while the head is bf16; the full forward
    # feeds the head under the trainer's autocast, which the gathered rows no longer see.
    outputs.logits = head(hidden.to(head.weight.dtype))[None]
    outputs.hidden_states = None
    return outputs


def packed_token_loss(logits: torch.Tensor, packed: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Plain SFT's token cross-entropy on packed logits: summed over the n labels, divided by
    num_items_in_batch when the trainer gives it (what swift's default SFT loss computes), else by n."""
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), packed[0, 1:], ignore_index=IGNORE_INDEX,
                                             reduction="sum")
    n = num_items_in_batch if num_items_in_batch is not None else (packed != IGNORE_INDEX).sum()
    return loss / torch.as_tensor(n, device=loss.device).clamp(min=1)
