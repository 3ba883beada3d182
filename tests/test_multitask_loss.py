"""The multi-task loss math against hand-computed values, plus accumulation and gradient properties."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from swift_ext.multitask_loss import (DIAGNOSE, IGNORE_INDEX, LOCATE, TASKS, VERIFY, LossConfig, TaskUncertainty,
                                      decision_loss, multitask_loss, plain_token_loss)

V, YES, NO = 11, 3, 4
UNIT_LOG_VAR = -math.log(2.0)  # 0.5 * exp(-s) == 1: the uncertainty weighting becomes the identity


def make_sample(*answers: tuple[int, int, int], prompt: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """One chat sample as 1-row grids: answers are (task id, n answer tokens, decision 1 yes / 0 no / -1).

    A verify answer starts with its decision token; prompt tokens (no loss) precede every answer.
    """
    gen = torch.Generator().manual_seed(seed)
    labels, task, weight, decision = [], [], [], []
    for task_id, n, dec in answers:
        labels += [IGNORE_INDEX] * prompt
        task += [0] * prompt
        weight += [1.0] * prompt
        decision += [-1] * prompt
        tokens = torch.randint(5, V, (n,), generator=gen).tolist()
        if dec >= 0:
            tokens[0] = YES if dec else NO
        labels += tokens
        task += [task_id] * n
        weight += [2.0 if task_id == DIAGNOSE and k % 3 == 1 else 1.0 for k in range(n)]
        decision += [dec] + [-1] * (n - 1)
    length = len(labels)
    return {"logits": torch.randn(1, length, V, generator=gen), "labels": torch.tensor([labels]),
            "task_map": torch.tensor([task]), "token_weight": torch.tensor([weight]),
            "decision_target": torch.tensor([decision])}


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample, like a collator: padded positions carry no loss."""
    length = max(s["labels"].shape[1] for s in samples)
    fills = {"logits": 0.0, "labels": IGNORE_INDEX, "task_map": 0, "token_weight": 1.0, "decision_target": -1}
    out = {}
    for key, fill in fills.items():
        rows = []
        for s in samples:
            pad = length - s[key].shape[1]
            shape = (1, pad, V) if key == "logits" else (1, pad)
            rows.append(torch.cat([s[key], torch.full(shape, fill, dtype=s[key].dtype)], dim=1))
        out[key] = torch.cat(rows)
    return out


def run(batch: dict[str, torch.Tensor], uncertainty: TaskUncertainty, config: LossConfig = LossConfig(),
        num_items_in_batch=None, task_items_in_batch=None):
    return multitask_loss(batch["logits"], batch["labels"], batch["task_map"], batch["token_weight"],
                          batch["decision_target"], YES, NO, uncertainty=uncertainty, config=config,
                          num_items_in_batch=num_items_in_batch, task_items_in_batch=task_items_in_batch)


def uncertainty_with(*log_vars: float) -> TaskUncertainty:
    module = TaskUncertainty()
    with torch.no_grad():
        module.log_vars.copy_(torch.tensor(log_vars))
    return module


def label_count(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def decision_batch(yes_logit: float, no_logit: float, target: int, vocab: int = 2) -> dict[str, torch.Tensor]:
    """Prompt token then the decision: labels [-100, answer], so logit row 0 predicts the decision."""
    yes_id, no_id = 0, 1
    logits = torch.zeros(1, 2, vocab)
    logits[0, 0, yes_id], logits[0, 0, no_id] = yes_logit, no_logit
    return {"logits": logits, "labels": torch.tensor([[IGNORE_INDEX, yes_id if target else no_id]]),
            "task_map": torch.tensor([[0, VERIFY]]), "token_weight": torch.ones(1, 2),
            "decision_target": torch.tensor([[-1, target]])}


def test_plain_token_loss_is_the_shifted_causal_lm_loss():
    batch = collate([make_sample((LOCATE, 4, -1), seed=1), make_sample((DIAGNOSE, 7, -1), prompt=5, seed=2)])
    logits, labels = batch["logits"], batch["labels"]
    # transformers' ForCausalLMLoss: full-vocab CE of logit t against label t + 1, summed, / N.
    summed = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="sum")
    assert plain_token_loss(logits, labels, 40).item() == pytest.approx(summed.item() / 40, rel=1e-6)
    assert plain_token_loss(logits, labels, None).item() == pytest.approx(summed.item() / 11, rel=1e-6)


# Two-token vocabulary, logits (ln 3, 0): p(yes) = 0.75, p(no) = 0.25. alpha = 0.25, gamma = 2.
# yes target: 0.25 * (1 - 0.75)^2 * -ln 0.75 = 0.015625 * 0.2876821 = 0.0044950
# no target:  0.75 * (1 - 0.25)^2 * -ln 0.25 = 0.421875 * 1.3862944 = 0.5848429, and x10 (accepts a negative)
@pytest.mark.parametrize("target, expected", [(1, 0.0044950324), (0, 5.848429)])
def test_focal_loss_hand_values(target, expected):
    logits = torch.tensor([[math.log(3.0), 0.0]])
    got = decision_loss(logits, torch.tensor([target]), 0, 1, LossConfig())
    assert got.item() == pytest.approx(expected, rel=1e-5)
    batch = decision_batch(math.log(3.0), 0.0, target)
    _, logs = multitask_loss(batch["logits"], batch["labels"], batch["task_map"], batch["token_weight"],
                             batch["decision_target"], 0, 1, uncertainty=TaskUncertainty(), config=LossConfig(),
                             num_items_in_batch=4)
    assert logs["loss_verify"] == pytest.approx(expected / 4, rel=1e-5)


@pytest.mark.parametrize("target, yes_logit, no_logit, penalised", [
    (0, 2.0, 0.0, True),    # negative pair accepted: the costly error
    (0, 0.0, 2.0, False),   # negative pair rejected
    (1, 2.0, 0.0, False),   # positive pair accepted
    (1, 0.0, 2.0, False),   # positive pair rejected: a miss, not a false accept
])
def test_false_accept_cost_only_on_accepted_negatives(target, yes_logit, no_logit, penalised):
    logits = torch.tensor([[yes_logit, no_logit, 0.5]])
    costly = decision_loss(logits, torch.tensor([target]), 0, 1, LossConfig(false_accept_cost=10.0))
    neutral = decision_loss(logits, torch.tensor([target]), 0, 1, LossConfig(false_accept_cost=1.0))
    assert (costly / neutral).item() == pytest.approx(10.0 if penalised else 1.0)


def test_finding_tokens_count_double_in_the_report_only():
    # Zero logits: every token's CE is ln V. Report weights [1, 2, 1] -> 4 ln V; the locate token's 2 is ignored.
    batch = {"logits": torch.zeros(1, 6, V), "labels": torch.tensor([[IGNORE_INDEX, 5, 6, 7, IGNORE_INDEX, 8]]),
             "task_map": torch.tensor([[0, DIAGNOSE, DIAGNOSE, DIAGNOSE, 0, LOCATE]]),
             "token_weight": torch.tensor([[1.0, 1.0, 2.0, 1.0, 1.0, 2.0]]),
             "decision_target": torch.full((1, 6), -1)}
    _, logs = run(batch, TaskUncertainty())
    assert logs["loss_diagnose"] == pytest.approx(4 * math.log(V) / 4, rel=1e-6)
    assert logs["loss_locate"] == pytest.approx(math.log(V) / 4, rel=1e-6)
    assert logs["loss_verify"] == 0.0


def test_uncertainty_combination_formula():
    s = (0.3, -0.7, 1.2)
    module = uncertainty_with(*s)
    got = module(torch.tensor([1.5, 0.2, 3.0]), torch.tensor([True, False, True]), torch.tensor([0.25, 0.5, 0.5]))
    expected = 0.5 * math.exp(-0.3) * 1.5 + 0.5 * 0.3 * 0.25 + 0.5 * math.exp(-1.2) * 3.0 + 0.5 * 1.2 * 0.5
    assert got.item() == pytest.approx(expected, rel=1e-6)

    sample = make_sample((LOCATE, 5, -1), (VERIFY, 2, 0), (DIAGNOSE, 9, -1), seed=3)
    loss, logs = run(sample, module, num_items_in_batch=30)
    counts = {LOCATE: 5, VERIFY: 2, DIAGNOSE: 9}
    expected = sum(0.5 * math.exp(-s_i) * logs[f"loss_{name}"] + 0.5 * s_i * counts[i] / 30
                   for i, (name, s_i) in enumerate(zip(TASKS, s), start=1))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    for name, s_i in zip(TASKS, s):
        assert logs[f"weight_{name}"] == pytest.approx(0.5 * math.exp(-s_i), rel=1e-6)
        assert logs[f"log_var_{name}"] == pytest.approx(s_i, rel=1e-6)


def test_reduces_to_plain_token_loss():
    # gamma 0, no alpha balancing, no false-accept cost, unit token weights and unit task weights: plain CE.
    samples = [make_sample((LOCATE, 4, -1), (VERIFY, 2, 0), (DIAGNOSE, 6, -1), seed=4),
               make_sample((VERIFY, 2, 1), prompt=6, seed=5)]
    samples[0]["logits"][0, 3 + 4 + 3 - 1, YES] += 8.0  # the negative is accepted: the cost must be neutral
    for s in samples:
        s["token_weight"] = torch.ones_like(s["token_weight"])
    batch = collate(samples)
    logits = batch["logits"].requires_grad_()
    config = LossConfig(focal_alpha=None, focal_gamma=0.0, false_accept_cost=1.0, finding_weight=1.0)
    uncertainty = uncertainty_with(UNIT_LOG_VAR, UNIT_LOG_VAR, UNIT_LOG_VAR)
    loss, _ = run(batch, uncertainty, config, num_items_in_batch=50)
    n = label_count(batch)
    regulariser = 0.5 * UNIT_LOG_VAR * n / 50
    plain = plain_token_loss(logits, batch["labels"], 50)
    assert (loss - regulariser).item() == pytest.approx(plain.item(), rel=1e-6)
    grad_multi, = torch.autograd.grad(loss, logits)
    grad_plain, = torch.autograd.grad(plain, logits)
    assert torch.allclose(grad_multi, grad_plain, atol=1e-7)


def accumulation_samples() -> list[dict[str, torch.Tensor]]:
    """Different lengths and task mixes: full sample, a negative (verify only), no verify, no locate."""
    samples = [make_sample((LOCATE, 5, -1), (VERIFY, 2, 1), (DIAGNOSE, 12, -1), seed=10),
               make_sample((VERIFY, 2, 0), prompt=9, seed=11),
               make_sample((LOCATE, 3, -1), (DIAGNOSE, 20, -1), prompt=4, seed=12),
               make_sample((VERIFY, 2, 1), (DIAGNOSE, 7, -1), prompt=2, seed=13)]
    samples[1]["logits"][0, 8, YES] += 5.0  # the negative is accepted: the x10 path is exercised
    return samples


@pytest.mark.parametrize("exact_kendall", [False, True])
def test_gradient_accumulation_matches_one_batch(exact_kendall):
    samples = accumulation_samples()
    batch = collate(samples)
    n_items = torch.tensor(label_count(batch))
    per_task = torch.bincount(batch["task_map"][:, 1:][batch["labels"][:, 1:] != IGNORE_INDEX] - 1, minlength=3)
    task_items = per_task if exact_kendall else None
    s = (0.4, -0.3, 0.9)

    whole = uncertainty_with(*s)
    logits = batch["logits"].clone().requires_grad_()
    loss_whole, _ = run({**batch, "logits": logits}, whole, num_items_in_batch=n_items, task_items_in_batch=task_items)
    loss_whole.backward()

    accumulated = uncertainty_with(*s)
    loss_sum = 0.0
    for k, sample in enumerate(samples):
        micro_logits = sample["logits"].clone().requires_grad_()
        loss, _ = run({**sample, "logits": micro_logits}, accumulated, num_items_in_batch=n_items,
                      task_items_in_batch=task_items)
        loss.backward()
        loss_sum += loss.item()
        length = sample["labels"].shape[1]
        assert torch.allclose(micro_logits.grad[0], logits.grad[k, :length], atol=1e-5)
    assert loss_sum == pytest.approx(loss_whole.item(), abs=1e-5)
    assert torch.allclose(accumulated.log_vars.grad, whole.log_vars.grad, atol=1e-5)

    # d/ds_i = -0.5 exp(-s_i) L_i + 0.5 R_i: the regulariser's window total R_i is N_i / N, or exactly 1.
    _, logs = run(batch, whole, num_items_in_batch=n_items, task_items_in_batch=task_items)
    task_losses = torch.tensor([logs[f"loss_{name}"] for name in TASKS])
    window_reg = 2 * (whole.log_vars.grad + 0.5 * torch.exp(-torch.tensor(s)) * task_losses)
    expected = torch.ones(3) if exact_kendall else per_task / n_items
    assert torch.allclose(window_reg, expected, atol=1e-5)


def test_log_vars_learn_with_sgd():
    uncertainty = TaskUncertainty()
    optimizer = torch.optim.SGD(uncertainty.parameters(), lr=0.5)
    loss, _ = run(collate(accumulation_samples()), uncertainty)
    loss.backward()
    optimizer.step()
    assert (uncertainty.log_vars.detach() != 0).all()


def test_absent_task_gets_no_gradient():
    uncertainty = TaskUncertainty()
    optimizer = torch.optim.SGD(uncertainty.parameters(), lr=0.5)
    batch = collate([make_sample((LOCATE, 4, -1), (VERIFY, 2, 1), seed=20), make_sample((VERIFY, 2, 0), seed=21)])
    loss, logs = run(batch, uncertainty)
    loss.backward()
    optimizer.step()
    grad = uncertainty.log_vars.grad
    assert grad[DIAGNOSE - 1] == 0 and (grad[:DIAGNOSE - 1] != 0).all()
    assert uncertainty.log_vars[DIAGNOSE - 1].item() == 0.0
    assert logs["loss_diagnose"] == 0.0


class LargestAllocation(TorchDispatchMode):
    """Records the largest new storage any aten op allocates (views of an input are free)."""

    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.nbytes = max(self.nbytes, t.untyped_storage().nbytes())
        return out


def test_only_label_rows_are_read():
    length, vocab = 4096, 151936
    logits = torch.empty(1, length, vocab, dtype=torch.bfloat16)  # never initialised: only label rows may be read
    labels = torch.full((1, length), IGNORE_INDEX)
    task_map = torch.zeros(1, length, dtype=torch.long)
    decision = torch.full((1, length), -1)
    for pos, task in ((1000, LOCATE), (3000, VERIFY), (4095, DIAGNOSE)):
        logits[0, pos - 1] = torch.randn(vocab).to(torch.bfloat16)
        labels[0, pos], task_map[0, pos] = 7, task
    labels[0, 3000], decision[0, 3000] = YES, 1
    with LargestAllocation() as seen:
        loss, _ = multitask_loss(logits, labels, task_map, torch.ones(1, length), decision, YES, NO,
                                 uncertainty=TaskUncertainty(), config=LossConfig(), num_items_in_batch=None)
        plain = plain_token_loss(logits, labels)
    assert torch.isfinite(loss) and torch.isfinite(plain)
    assert seen.nbytes <= 3 * vocab * 4  # the three label rows in float32, never [L, V]
