"""Logits only where the loss reads them: the same losses and gradients as full logits, fewer positions."""
from __future__ import annotations

import pytest
import torch

from medvlm_vocab import IGNORE_INDEX, KEEP_KEY, MED_BATCH_KEYS
from swift_ext.logit_positions import (packed_token_loss, supervised_logit_positions, supervised_logits,
                                       trim_to_supervised)
from swift_ext.loss_type import label_grids
from swift_ext.multitask_loss import LossConfig, TaskUncertainty, multitask_loss
from tests.swift_ext.test_med_template import make_template, sample_rows  # noqa: F401  (fixture)

IGNORE = IGNORE_INDEX


def test_positions_and_labels_by_hand():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE, IGNORE],
                           [IGNORE, IGNORE, IGNORE, IGNORE, 7, IGNORE]])
    rows, positions, packed = supervised_logit_positions(labels)
    # logit (0, 1) predicts label 5, (0, 2) label 6, (1, 3) label 7
    assert rows.tolist() == [0, 0, 1] and positions.tolist() == [1, 2, 3]
    assert packed.tolist() == [[IGNORE, 5, 6, 7]]


def test_a_batch_without_labels_keeps_no_position():
    rows, positions, packed = supervised_logit_positions(torch.full((2, 4), IGNORE))
    assert rows.numel() == positions.numel() == 0 and packed.tolist() == [[IGNORE]]


def test_label_aligned_tensors_follow_the_labels():
    labels = torch.tensor([[IGNORE, 4, IGNORE, 8]])
    scale = torch.tensor([[0.0, 2.0, 0.0, 3.0]])
    out = trim_to_supervised({"labels": labels, "loss_scale": scale, "input_ids": torch.arange(4)[None]})
    assert out["logits_at"].tolist() == [[0, 0], [0, 2]]
    assert out["labels"].tolist() == [[IGNORE, 4, 8]] and out["loss_scale"].tolist() == [[0.0, 2.0, 3.0]]
    assert out["input_ids"].tolist() == [[0, 1, 2, 3]]  # the forward still sees every token


def _multitask(logits, labels, med, template):
    grids = label_grids(med, labels)
    torch.manual_seed(0)
    uncertainty = TaskUncertainty()
    loss, _ = multitask_loss(logits, labels, grids["med_task"], grids["med_weight"], grids["med_decision"],
                             template.answer_token_id("yes"), template.answer_token_id("no"),
                             uncertainty=uncertainty, config=LossConfig(), sample_index=grids["med_sample"])
    return loss


def _loss_and_grads(model, template, batch: dict, loss_kind: str):
    batch = dict(batch)
    med = {k: batch.pop(k) for k in MED_BATCH_KEYS}
    logits_at = batch.pop(KEEP_KEY, None)
    labels = batch.pop("labels")
    model.zero_grad()
    if logits_at is not None:
        out = supervised_logits(model, batch, logits_at)
        loss = packed_token_loss(out.logits, labels) if loss_kind == "plain" else _multitask(out.logits, labels, med,
                                                                                             template)
    elif loss_kind == "plain":
        out = model(**batch, labels=labels)
        loss = out.loss
    else:
        out = model(**batch)
        loss = _multitask(out.logits, labels, med, template)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, out.logits.shape[0] * out.logits.shape[1]


@pytest.mark.parametrize("loss_kind", ["multitask", "plain"])
def test_same_loss_and_gradients_as_full_logits(loss_kind, sample_rows, models_dir, monkeypatch):  # noqa: F811
    """A padded batch of 4 conversations with verify negatives (locate/diagnose masked in those rows):
    the head on the supervised positions alone gives the full-logit loss and every parameter's gradient
    to 1e-5 relative."""
    template = make_template("qwen2_vl", models_dir, monkeypatch, negative_ratio=0.5)
    model = template.model.float()
    encoded = [template.encode(r) for r in sample_rows]
    results = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("MEDVLM_SUPERVISED_LOGITS", mode)
        template.init_env_args()  # same negative draws: the collate counter restarts at 0
        batch = template.data_collator([dict(e) for e in encoded])
        results[mode] = _loss_and_grads(model, template, batch, loss_kind)
    (full_loss, full_grads, full_rows), (loss, grads, kept_rows) = results["0"], results["1"]
    assert kept_rows < full_rows * 0.5  # the head ran on far fewer positions
    assert torch.isfinite(full_loss) and abs(loss - full_loss) <= 1e-5 * abs(full_loss)
    assert grads.keys() == full_grads.keys() and len(grads) > 10
    for name, g in full_grads.items():
        assert (grads[name] - g).norm() <= 1e-5 * g.norm() + 1e-12, name


def test_packed_row_gives_the_same_multitask_loss():
    """Two samples already packed in one row (sample_index tells them apart): gathered == full."""
    torch.manual_seed(0)
    length, vocab = 24, 11
    labels = torch.full((1, length), IGNORE)
    task = torch.zeros((1, length), dtype=torch.long)
    labels[0, 3:6], task[0, 3:6] = torch.tensor([1, 2, 3]), 1
    labels[0, 7], task[0, 7] = 4, 2
    labels[0, 15:18], task[0, 15:18] = torch.tensor([5, 6, 7]), 3
    labels[0, 20], task[0, 20] = 9, 2
    decision = torch.full((1, length), -1)
    decision[0, 7], decision[0, 20] = 1, 0
    sample = torch.zeros((1, length), dtype=torch.long)
    sample[0, 12:] = 1
    weight = torch.ones((1, length))
    hidden = torch.randn(1, length, 8, requires_grad=True)
    head = torch.randn(8, vocab)

    def loss(logits, lab, grids):
        return multitask_loss(logits, lab, grids["task"], grids["weight"], grids["decision"], 4, 9,
                              uncertainty=TaskUncertainty(), config=LossConfig(), sample_index=grids["sample"])[0]

    grids = {"task": task, "weight": weight, "decision": decision, "sample": sample}
    full = loss(hidden @ head, labels, grids)
    rows, positions, packed = supervised_logit_positions(labels)
    gathered = torch.cat([hidden[rows, positions], hidden[0, -1:]]) @ head
    packed_grids = {k: torch.cat([v[:, :1], v[rows, positions + 1][None]], 1) for k, v in grids.items()}
    trimmed = loss(gathered[None], packed, packed_grids)
    assert rows.numel() == 8 and torch.allclose(trimmed, full, rtol=1e-6)
    g_full, = torch.autograd.grad(full, hidden)
    g_trim, = torch.autograd.grad(trimmed, hidden)
    assert (g_trim - g_full).norm() <= 1e-5 * g_full.norm()
