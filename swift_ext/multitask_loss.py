"""Loss math for locate / verify / diagnose: per-token losses, focal decision loss, learned task weights.

Pure torch (no swift imports) so it is tested on its own; `swift_ext.loss_type` feeds it the template's
per-label-token annotations. Task ids and IGNORE_INDEX are medvlm_vocab's.

Conventions shared by every function here:
- labels are aligned like transformers' causal-LM labels (the logit at position t predicts
  labels[t + 1]); annotations (task ids, token weights, decision targets) use the labels' alignment.
- Every term is a sum over samples divided by S, the samples of the whole gradient-accumulation
  window on all devices (the per-sample analogue of transformers' `num_items_in_batch`). The HF
  Trainer does not divide a custom loss by the accumulation steps, so only sums / a window-wide count
  make k micro-batches add up to the same loss and gradients as one batch of the same samples.
- Only label rows of the logits are read: positions are gathered first and log-softmax runs on those
  rows, so a [B, L, V] float copy or softmax is never made.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvlm_vocab import DIAGNOSE, IGNORE_INDEX, TASKS, VERIFY


@dataclass(frozen=True)
class LossConfig:
    """Knobs of the multi-task loss.

    focal_alpha: class balance of the verify decision, alpha for a "yes" target and 1 - alpha for "no"
        (RetinaNet convention); None turns class balancing off (alpha_t = 1).
    focal_gamma: focusing exponent; 0 gives plain (alpha-balanced) cross-entropy on the decision.
    false_accept_cost: multiplier of the decision loss when the target is "no" and p(yes) > p(no):
        accepting a region that does not show the finding is the costly clinical error.
    finding_weight: the weight the template writes into `token_weight` on finding/impression tokens of
        the report. The loss applies `token_weight` as given (never this value again), so the weight is
        applied exactly once; it lives here so one config describes the whole loss.
    verify_weight: fixed multiplier of the verify task's loss L_verify before the uncertainty weighting.
        A sample's verify loss is one decision among its answer tokens, so its gradient is small beside
        locate's and diagnose's; Kendall's weights would raise it (their optimum is 0.5 / L_i) but the
        log-variances move about lr per step, too slowly for a short run (docs/learning-ladder.md, rung h).
    """

    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    false_accept_cost: float = 10.0
    finding_weight: float = 2.0
    verify_weight: float = 1.0


class TaskUncertainty(nn.Module):
    """Kendall, Gal & Cipolla 2018 homoscedastic uncertainty weighting of the task losses.

    Combined loss: sum_i present_i * (0.5 * exp(-s_i) * L_i + 0.5 * s_i * reg_scale_i), with
    s_i = log sigma_i^2 one learnable scalar per task, initialised at 0 like the reference recipe.
    `reg_scale` spreads the regulariser over the micro-batches of an accumulation window (see
    `multitask_loss`); `task_present` makes an absent task contribute nothing, not even a gradient on s_i.
    """

    def __init__(self, n_tasks: int = len(TASKS)):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_tasks))

    def weights(self) -> torch.Tensor:
        """The per-task loss weights 0.5 * exp(-s_i)."""
        return 0.5 * torch.exp(-self.log_vars.float())

    def forward(self, task_losses: torch.Tensor, task_present: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
        s = self.log_vars.float()
        terms = self.weights() * task_losses.float() + 0.5 * s * reg_scale.float()
        return torch.where(task_present, terms, torch.zeros_like(terms)).sum()


def _label_rows(logits: torch.Tensor, labels: torch.Tensor,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift like transformers and gather only the logit rows that have a label.

    Returns (rows [n, V] float32, batch index [n], label position [n]); the logit row of label
    position p is logits[b, p - 1]. `keep` [B, L] (label alignment) further restricts the positions.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must share [B, L]")
    mask = labels[:, 1:] != IGNORE_INDEX
    if keep is not None:
        mask &= keep[:, 1:]
    b, t = mask.nonzero(as_tuple=True)
    return logits[b, t].float(), b, t + 1


def decision_loss(logits: torch.Tensor, target: torch.Tensor, yes_id: int, no_id: int,
                  config: LossConfig) -> torch.Tensor:
    """Per-row verify decision loss: focal loss on the full-vocabulary probability of the target answer.

    FL = -alpha_t * (1 - p_t)^gamma * log p_t, times `false_accept_cost` where the target is "no" and the
    model prefers "yes" (p(yes) > p(no)). logits [n, V]; target [n]: 1 for "yes", 0 for "no".
    """
    logp = logits.float().log_softmax(-1)
    logp_yes, logp_no = logp[:, yes_id], logp[:, no_id]
    is_yes = target == 1
    logp_t = torch.where(is_yes, logp_yes, logp_no)
    loss = -logp_t
    if config.focal_gamma:
        loss = loss * (-torch.expm1(logp_t)).pow(config.focal_gamma)
    if config.focal_alpha is not None:
        loss = loss * torch.where(is_yes, config.focal_alpha, 1.0 - config.focal_alpha)
    accepts_negative = ~is_yes & (logp_yes > logp_no)
    return loss * torch.where(accepts_negative, config.false_accept_cost, 1.0)


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor, task_map: torch.Tensor, token_weight: torch.Tensor,
                   decision_target: torch.Tensor, yes_id: int, no_id: int, *, uncertainty: TaskUncertainty,
                   config: LossConfig, samples_in_batch: torch.Tensor | int | None = None,
                   sample_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Uncertainty-weighted locate / verify / diagnose loss of one micro-batch.

    logits [B, L, V]; labels, task_map, decision_target [B, L] long; token_weight [B, L] float;
    sample_index [B, L] long (which sample of the micro-batch a position belongs to; default its row,
    pass it when samples are packed into one row); all annotations in label alignment.
    Per sample s and task i, the weighted mean over the sample's task-i label tokens:
      l_si = sum_t w_t * l_t / sum_t w_t,   l_t = focal decision loss at the verify decision, CE elsewhere,
                                            w_t = token_weight on report tokens, 1 elsewhere;
    then over the S samples of the optimiser step (`samples_in_batch`, see below):
      L_i = sum_s l_si / S,   P_i = (samples of this micro-batch with task i) / S,
      loss = sum_i 0.5*exp(-s_i)*c_i*L_i + 0.5*s_i*P_i   (tasks absent from the micro-batch add nothing;
                                                         c_i = config.verify_weight for verify, else 1).

    Why per-sample task means: every task pulls on the model in proportion to its loss, not to its token
    count. With one token sum over all label tokens a sample's single yes/no decision weighs ~1% against
    its ~26 box and ~60 report tokens, and the uncertainty weights cannot make up a factor of 100 in a
    few hundred steps. Kendall's L_i is a per-task mean, which this is, per sample.
    Why S and not this micro-batch's count: like the token count N of transformers, S is the whole
    gradient-accumulation window on all devices, so k micro-batches add up to the loss and gradients of
    one batch of the same samples, for any task mix. Over a window the regulariser totals
    0.5 * s_i * (samples with task i) / S, so its optimum is sigma_i^2 = the mean l_si over those samples.
    Default S: the samples of this micro-batch (evaluation, or no accumulation).
    Returns the loss and floats for logging: loss_* (L_i, before c_i), weight_* (0.5*exp(-s_i)), log_var_*.
    """
    for name, grid in (("task_map", task_map), ("token_weight", token_weight), ("decision_target", decision_target),
                       ("sample_index", labels if sample_index is None else sample_index)):
        if grid.shape != labels.shape:
            raise ValueError(f"{name} {tuple(grid.shape)} must have the labels' shape {tuple(labels.shape)}")
    rows, b, p = _label_rows(logits, labels, keep=task_map > 0)
    task_index = task_map[b, p] - 1
    sample = b if sample_index is None else sample_index[b, p]
    weight = torch.where(task_index == DIAGNOSE - 1, token_weight[b, p].float(), 1.0)
    per_token = F.cross_entropy(rows, labels[b, p], reduction="none")
    decision = decision_target[b, p]
    at_decision = (decision >= 0).nonzero(as_tuple=True)
    per_token = per_token.index_put(at_decision, decision_loss(rows[at_decision], decision[at_decision],
                                                               yes_id, no_id, config))
    n_tasks = len(TASKS)
    n_samples = int(sample.max()) + 1 if sample.numel() else 0
    cell = sample * n_tasks + task_index  # one (sample, task) cell per row of the result
    weighted_sum = per_token.new_zeros(n_samples * n_tasks).index_add(0, cell, weight * per_token)
    weight_sum = per_token.new_zeros(n_samples * n_tasks).index_add(0, cell, weight)
    has_task = weight_sum > 0
    sample_means = torch.where(has_task, weighted_sum / weight_sum.clamp(min=1e-12), 0.0).view(n_samples, n_tasks)
    samples_with_task = has_task.view(n_samples, n_tasks).sum(0).float()
    if samples_in_batch is None:
        samples_in_batch = int((has_task.view(n_samples, n_tasks).any(1)).sum())
    n = torch.as_tensor(samples_in_batch, dtype=torch.float32, device=labels.device).clamp(min=1)
    task_losses = sample_means.sum(0) / n
    scale = torch.ones_like(task_losses).index_fill(0, torch.tensor([VERIFY - 1], device=labels.device),
                                                    config.verify_weight)
    loss = uncertainty(task_losses * scale, samples_with_task > 0, samples_with_task / n)
    with torch.no_grad():
        values = torch.stack([task_losses, uncertainty.weights(), uncertainty.log_vars.float()]).tolist()
    logs = {f"{kind}_{task}": value
            for kind, row in zip(("loss", "weight", "log_var"), values) for task, value in zip(TASKS, row)}
    return loss, logs
