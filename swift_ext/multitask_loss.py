"""Loss math for locate / verify / diagnose: per-token losses, focal decision loss, learned task weights.

Pure torch (no swift imports) so it is tested on its own; `swift_ext.loss` feeds it the template's
per-label-token annotations.

Conventions shared by every function here:
- labels are aligned like transformers' causal-LM labels (the logit at position t predicts
  labels[t + 1]); annotations (task ids, token weights, decision targets) use the labels' alignment.
- Every term is a sum over label tokens divided by `num_items_in_batch` (N: the label tokens of the
  whole gradient-accumulation window on all devices, as transformers counts them). The HF Trainer does
  not divide a custom loss by the accumulation steps, so only sums over tokens / N make k micro-batches
  add up to the same loss and gradients as one batch of the same samples.
- Only label rows of the logits are read: positions are gathered first and log-softmax runs on those
  rows, so a [B, L, V] float copy or softmax is never made.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
TASKS = ("locate", "verify", "diagnose")
LOCATE, VERIFY, DIAGNOSE = 1, 2, 3  # task ids in the token map; 0 = a position without loss


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
    """

    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    false_accept_cost: float = 10.0
    finding_weight: float = 2.0


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


def _normaliser(num_items_in_batch: torch.Tensor | int | None, labels: torch.Tensor) -> torch.Tensor:
    """N as a float tensor: the caller's window-wide count, else this micro-batch's shifted label count."""
    if num_items_in_batch is None:
        num_items_in_batch = (labels[:, 1:] != IGNORE_INDEX).sum()
    return torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=labels.device).clamp(min=1)


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


def plain_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                     num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Standard causal-LM loss: sum of token cross-entropies / N (the plain-SFT baseline)."""
    rows, b, p = _label_rows(logits, labels)
    return F.cross_entropy(rows, labels[b, p], reduction="sum") / _normaliser(num_items_in_batch, labels)


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
                   config: LossConfig, num_items_in_batch: torch.Tensor | int | None,
                   task_items_in_batch: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Uncertainty-weighted locate / verify / diagnose loss of one micro-batch.

    logits [B, L, V]; labels, task_map, decision_target [B, L] long; token_weight [B, L] float; all
    annotations in label alignment. Per task, over its label tokens of this micro-batch, divided by N:
      L_locate   = sum CE
      L_verify   = sum decision_loss at decision positions (decision_target >= 0) + CE elsewhere
      L_diagnose = sum token_weight * CE
    Combined with `uncertainty`: sum_i 0.5*exp(-s_i)*L_i + 0.5*s_i*r_i, where r_i = n_i / D_i (n_i: this
    micro-batch's label tokens of task i).

    Why r_i = n_i / D_i: like every other term it is a sum over tokens divided by a window-wide count,
    so accumulation (and data parallelism) give exactly the loss and gradients of one big batch, for any
    task mix, and a task with no tokens gets no regulariser and no gradient on s_i.
    - Default D_i = N: over a window the regulariser adds up to (N_i / N) * 0.5 * s_i, i.e. Kendall's
      objective applied per token; its optimum is sigma_i^2 = the mean token loss of task i, whatever the
      tasks' token shares. This is the only exact choice when only N is known.
    - `task_items_in_batch` [3] given (task i's label tokens over the window and devices, counted like N):
      D_i = N_i, the regulariser adds up to exactly 0.5 * s_i per optimiser step for every task present
      in the window (Kendall's formula verbatim: every task's weighted loss is pulled to the same level).
    Returns the loss and floats for logging: loss_* (unweighted L_i), weight_* (0.5*exp(-s_i)), log_var_*.
    """
    for name, grid in (("task_map", task_map), ("token_weight", token_weight), ("decision_target", decision_target)):
        if grid.shape != labels.shape:
            raise ValueError(f"{name} {tuple(grid.shape)} must have the labels' shape {tuple(labels.shape)}")
    rows, b, p = _label_rows(logits, labels, keep=task_map > 0)
    task_index = task_map[b, p] - 1
    per_token = F.cross_entropy(rows, labels[b, p], reduction="none")
    per_token = per_token * torch.where(task_index == DIAGNOSE - 1, token_weight[b, p].float(), 1.0)
    decision = decision_target[b, p]
    at_decision = (decision >= 0).nonzero(as_tuple=True)
    per_token = per_token.index_put(at_decision, decision_loss(rows[at_decision], decision[at_decision],
                                                               yes_id, no_id, config))
    n_tasks = len(TASKS)
    sums = per_token.new_zeros(n_tasks).index_add(0, task_index, per_token)
    counts = torch.bincount(task_index, minlength=n_tasks).float()
    n_items = _normaliser(num_items_in_batch, labels)
    task_losses = sums / n_items
    denominators = n_items if task_items_in_batch is None else task_items_in_batch.to(counts).clamp(min=1)
    loss = uncertainty(task_losses, counts > 0, counts / denominators)
    with torch.no_grad():
        values = torch.stack([task_losses, uncertainty.weights(), uncertainty.log_vars.float()]).tolist()
    logs = {f"{kind}_{task}": value
            for kind, row in zip(("loss", "weight", "log_var"), values) for task, value in zip(TASKS, row)}
    return loss, logs

