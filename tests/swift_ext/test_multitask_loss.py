"""The multi-task loss math against hand-computed values, plus accumulation and gradient properties."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from medvlm_vocab import DIAGNOSE, IGNORE_INDEX, LOCATE, TASKS, VERIFY
from swift_ext.multitask_loss import LossConfig, TaskUncertainty, decision_loss, multitask_loss

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


def pack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """All samples in one row, like a padding-free collator, with the sample index of every position."""
    out = {key: torch.cat([s[key] for s in samples], dim=1) for key in samples[0]}
    out["sample_index"] = torch.cat([torch.full_like(s["labels"], k) for k, s in enumerate(samples)], dim=1)
    return out


def run(batch: dict[str, torch.Tensor], uncertainty: TaskUncertainty, config: LossConfig = LossConfig(),
        samples_in_batch=None):
    return multitask_loss(batch["logits"], batch["labels"], batch["task_map"], batch["token_weight"],
                          batch["decision_target"], YES, NO, uncertainty=uncertainty, config=config,
                          samples_in_batch=samples_in_batch, sample_index=batch.get("sample_index"))


def uncertainty_with(*log_vars: float) -> TaskUncertainty:
    module = TaskUncertainty()
    with torch.no_grad():
        module.log_vars.copy_(torch.tensor(log_vars))
    return module


def decision_batch(yes_logit: float, no_logit: float, target: int, vocab: int = 2) -> dict[str, torch.Tensor]:
    """Prompt token then the decision: labels [-100, answer], so logit row 0 predicts the decision."""
    yes_id, no_id = 0, 1
    logits = torch.zeros(1, 2, vocab)
    logits[0, 0, yes_id], logits[0, 0, no_id] = yes_logit, no_logit
    return {"logits": logits, "labels": torch.tensor([[IGNORE_INDEX, yes_id if target else no_id]]),
            "task_map": torch.tensor([[0, VERIFY]]), "token_weight": torch.ones(1, 2),
            "decision_target": torch.tensor([[-1, target]])}


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
                             samples_in_batch=4)
    assert logs["loss_verify"] == pytest.approx(expected / 4, rel=1e-5)  # one sample of the step's four


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


def test_finding_tokens_count_double_in_the_report_mean_only():
    # Zero logits give CE ln V; the middle report token's row favours its label: CE c < ln V.
    logits = torch.zeros(1, 6, V)
    logits[0, 1, 6] = 3.0
    c = math.log(math.exp(3.0) + V - 1) - 3.0
    batch = {"logits": logits, "labels": torch.tensor([[IGNORE_INDEX, 5, 6, 7, IGNORE_INDEX, 8]]),
             "task_map": torch.tensor([[0, DIAGNOSE, DIAGNOSE, DIAGNOSE, 0, LOCATE]]),
             "token_weight": torch.tensor([[1.0, 1.0, 2.0, 1.0, 1.0, 2.0]]),
             "decision_target": torch.full((1, 6), -1)}
    _, logs = run(batch, TaskUncertainty())
    # report weights [1, 2, 1]: (ln V + 2c + ln V) / 4; the locate token's 2 is ignored: its mean is ln V.
    assert logs["loss_diagnose"] == pytest.approx((2 * math.log(V) + 2 * c) / 4, rel=1e-6)
    assert logs["loss_locate"] == pytest.approx(math.log(V), rel=1e-6)
    assert logs["loss_verify"] == 0.0


def test_uncertainty_combination_formula():
    s = (0.3, -0.7, 1.2)
    module = uncertainty_with(*s)
    got = module(torch.tensor([1.5, 0.2, 3.0]), torch.tensor([True, False, True]), torch.tensor([0.25, 0.5, 0.5]))
    expected = 0.5 * math.exp(-0.3) * 1.5 + 0.5 * 0.3 * 0.25 + 0.5 * math.exp(-1.2) * 3.0 + 0.5 * 1.2 * 0.5
    assert got.item() == pytest.approx(expected, rel=1e-6)

    sample = make_sample((LOCATE, 5, -1), (VERIFY, 2, 0), (DIAGNOSE, 9, -1), seed=3)
    loss, logs = run(sample, module, samples_in_batch=3)
    expected = sum(0.5 * math.exp(-s_i) * logs[f"loss_{name}"] + 0.5 * s_i / 3 for name, s_i in zip(TASKS, s))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    for name, s_i in zip(TASKS, s):
        assert logs[f"weight_{name}"] == pytest.approx(0.5 * math.exp(-s_i), rel=1e-6)
        assert logs[f"log_var_{name}"] == pytest.approx(s_i, rel=1e-6)


def test_verify_weight_scales_only_the_verify_term():
    s = (0.3, -0.7, 1.2)
    sample = make_sample((LOCATE, 5, -1), (VERIFY, 2, 0), (DIAGNOSE, 9, -1), seed=3)
    loss, logs = run(sample, uncertainty_with(*s), LossConfig(verify_weight=7.0), samples_in_batch=3)
    scale = {"locate": 1.0, "verify": 7.0, "diagnose": 1.0}
    expected = sum(0.5 * math.exp(-s_i) * scale[name] * logs[f"loss_{name}"] + 0.5 * s_i / 3
                   for name, s_i in zip(TASKS, s))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    _, unscaled = run(sample, uncertainty_with(*s), samples_in_batch=3)
    assert logs == pytest.approx(unscaled)  # the logged L_i are before the weight


def test_tasks_pull_by_loss_not_by_token_count():
    # One sample: 4 box tokens, 1 verify decision, 40 report tokens, every token at the same loss ln V
    # (zero logits; plain CE on the decision). Each task is a per-sample mean, so all three losses are
    # ln V, and a token's gradient is 1 / (its task's token count): the decision pulls 40x a report token.
    sample = make_sample((LOCATE, 4, -1), (VERIFY, 1, 1), (DIAGNOSE, 40, -1), seed=4)
    sample["token_weight"] = torch.ones_like(sample["token_weight"])
    logits = torch.zeros_like(sample["logits"]).requires_grad_()
    config = LossConfig(focal_alpha=None, focal_gamma=0.0, false_accept_cost=1.0, finding_weight=1.0)
    loss, logs = run({**sample, "logits": logits}, uncertainty_with(UNIT_LOG_VAR, UNIT_LOG_VAR, UNIT_LOG_VAR), config)
    for name in TASKS:
        assert logs[f"loss_{name}"] == pytest.approx(math.log(V), rel=1e-6)
    assert loss.item() == pytest.approx(3 * math.log(V) + 3 * 0.5 * UNIT_LOG_VAR, rel=1e-6)
    grad, = torch.autograd.grad(loss, logits)
    row_norm = grad[0].norm(dim=-1)
    positions = {task: (sample["task_map"][0] == task).nonzero().flatten() - 1 for task in (LOCATE, VERIFY, DIAGNOSE)}
    report = row_norm[positions[DIAGNOSE]]
    assert torch.allclose(report, report[0].expand_as(report))
    assert (row_norm[positions[VERIFY]] / report[0]).item() == pytest.approx(40.0, rel=1e-5)
    assert (row_norm[positions[LOCATE]] / report[0]).tolist() == pytest.approx([10.0] * 4, rel=1e-5)


def accumulation_samples() -> list[dict[str, torch.Tensor]]:
    """Different lengths and task mixes: full sample, a negative (verify only), no verify, no locate."""
    samples = [make_sample((LOCATE, 5, -1), (VERIFY, 2, 1), (DIAGNOSE, 12, -1), seed=10),
               make_sample((VERIFY, 2, 0), prompt=9, seed=11),
               make_sample((LOCATE, 3, -1), (DIAGNOSE, 20, -1), prompt=4, seed=12),
               make_sample((VERIFY, 2, 1), (DIAGNOSE, 7, -1), prompt=2, seed=13)]
    samples[1]["logits"][0, 8, YES] += 5.0  # the negative is accepted: the x10 path is exercised
    return samples


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_gradient_accumulation_matches_one_batch(layout):
    samples = accumulation_samples()
    batch = collate(samples) if layout == "padded" else pack(samples)
    s = (0.4, -0.3, 0.9)

    whole = uncertainty_with(*s)
    logits = batch["logits"].clone().requires_grad_()
    loss_whole, _ = run({**batch, "logits": logits}, whole, samples_in_batch=4)
    loss_whole.backward()

    accumulated = uncertainty_with(*s)
    loss_sum, offset = 0.0, 0
    for k, sample in enumerate(samples):
        micro_logits = sample["logits"].clone().requires_grad_()
        loss, _ = run({**sample, "logits": micro_logits}, accumulated, samples_in_batch=4)
        loss.backward()
        loss_sum += loss.item()
        length = sample["labels"].shape[1]
        expected = logits.grad[k, :length] if layout == "padded" else logits.grad[0, offset:offset + length]
        assert torch.allclose(micro_logits.grad[0], expected, atol=1e-6)
        offset += length
    assert loss_sum == pytest.approx(loss_whole.item(), abs=1e-5)
    assert torch.allclose(accumulated.log_vars.grad, whole.log_vars.grad, atol=1e-6)

    # d/ds_i = -0.5 exp(-s_i) L_i + 0.5 P_i: over the window P_i = (samples with task i) / S.
    _, logs = run(batch, whole, samples_in_batch=4)
    task_losses = torch.tensor([logs[f"loss_{name}"] for name in TASKS])
    window_reg = 2 * (whole.log_vars.grad + 0.5 * torch.exp(-torch.tensor(s)) * task_losses)
    assert torch.allclose(window_reg, torch.tensor([2 / 4, 3 / 4, 3 / 4]), atol=1e-6)


def test_packed_and_padded_batches_give_the_same_loss():
    samples = accumulation_samples()
    padded, _ = run(collate(samples), TaskUncertainty())
    packed, _ = run(pack(samples), TaskUncertainty())
    assert packed.item() == pytest.approx(padded.item(), rel=1e-6)
    # Without the sample index a packed row is one sample: the per-sample means differ.
    merged, _ = run({k: v for k, v in pack(samples).items() if k != "sample_index"}, TaskUncertainty())
    assert merged.item() != pytest.approx(padded.item(), rel=1e-3)


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
                                 uncertainty=TaskUncertainty(), config=LossConfig())
    assert torch.isfinite(loss)
    assert seen.nbytes <= 3 * vocab * 4  # the three label rows in float32, never [L, V]
