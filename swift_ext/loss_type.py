"""`--loss_type med_multitask`: the uncertainty-weighted locate / verify / diagnose loss.

The template attaches its per-label-token annotations to the model outputs (`outputs["med"]`,
compact: one entry per label token in row-major order, which survives swift's logits_to_keep
trimming); this loss scatters them back onto the label grid and calls the pure loss math.
"""
from __future__ import annotations

import torch
from swift.loss import BaseLoss
from swift.utils import get_env_args

from medvlm_vocab import IGNORE_INDEX, MED_BATCH_FILL
from swift_ext.models import UNCERTAINTY_MODULE
from swift_ext.multitask_loss import LossConfig, multitask_loss


def loss_config_from_env() -> LossConfig:
    """Loss knobs from the recipe's ENV block (swift's convention for plugin options); the template reads
    finding_weight from here too, so one place reads each variable."""
    defaults = LossConfig()
    return LossConfig(
        focal_alpha=get_env_args("MEDVLM_FOCAL_ALPHA", float, defaults.focal_alpha),
        focal_gamma=get_env_args("MEDVLM_FOCAL_GAMMA", float, defaults.focal_gamma),
        false_accept_cost=get_env_args("MEDVLM_FALSE_ACCEPT_COST", float, defaults.false_accept_cost),
        finding_weight=get_env_args("MEDVLM_FINDING_WEIGHT", float, defaults.finding_weight),
        verify_weight=get_env_args("MEDVLM_VERIFY_WEIGHT", float, defaults.verify_weight),
    )


def find_uncertainty(model: torch.nn.Module) -> torch.nn.Module:
    """The (PEFT-wrapped, when training an adapter) task log-variance module of the model."""
    modules = [(name, m) for name, m in model.named_modules() if name.split(".")[-1] == UNCERTAINTY_MODULE]
    if not modules:
        raise ValueError(f"--loss_type med_multitask needs a med_* --model_type (the model has no "
                         f"{UNCERTAINTY_MODULE} module); see recipes/sft/")
    module = min(modules, key=lambda item: len(item[0]))[1]
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(f"{UNCERTAINTY_MODULE} is frozen: add `--modules_to_save {UNCERTAINTY_MODULE}`")
    return module


def label_grids(med: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scatter the template's per-label-token annotations back onto the [B, L] label grid."""
    mask = labels != IGNORE_INDEX
    grids = {}
    for key, fill in MED_BATCH_FILL.items():
        values = med[key].to(labels.device)
        grid = torch.full(labels.shape, fill, dtype=values.dtype, device=labels.device)
        grid[mask] = values
        grids[key] = grid
    return grids


def samples_per_step(trainer, num_items_in_batch) -> int | None:
    """S of `multitask_loss`: the samples of one optimiser step on all devices, when the trainer treats
    the loss like a `num_items_in_batch`-normalised one (no division by the accumulation steps; times the
    processes when tokens are averaged across devices); None (this micro-batch) otherwise.

    Counted from the trainer's arguments, so in an epoch's last, short micro-batch each sample keeps the
    weight 1/S every other sample of the run has.
    """
    if num_items_in_batch is None or not trainer.model_accepts_loss_kwargs:
        return None
    args = trainer.args
    devices = args.world_size if args.average_tokens_across_devices else 1
    return args.per_device_train_batch_size * trainer.current_gradient_accumulation_steps * devices


class MedMultitaskLoss(BaseLoss):
    def __init__(self, args, trainer):
        super().__init__(args, trainer)
        self.config = loss_config_from_env()
        self._uncertainty = None

    def __call__(self, outputs, labels, *, num_items_in_batch=None, loss_scale=None, **kwargs) -> torch.Tensor:
        med = outputs.get("med")
        if med is None:
            raise ValueError("--loss_type med_multitask needs a med_* --template (no task annotations found)")
        if self._uncertainty is None:
            self._uncertainty = find_uncertainty(self.trainer.model)
        grids = label_grids(med, labels)
        template = self.trainer.template
        loss, logs = multitask_loss(
            outputs.logits, labels, grids["med_task"], grids["med_weight"], grids["med_decision"],
            template.answer_token_id("yes"), template.answer_token_id("no"),
            uncertainty=self._uncertainty, config=self.config,
            samples_in_batch=samples_per_step(self.trainer, num_items_in_batch), sample_index=grids["med_sample"])
        metrics = self.trainer.custom_metrics["train" if self.trainer.model.training else "eval"]
        for name, value in logs.items():
            metrics[name].update(torch.tensor(value))
        return loss
