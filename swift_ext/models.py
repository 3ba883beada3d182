"""med_qwen2_vl / med_qwen2_5_vl / med_qwen3_vl model types: swift's Qwen-VL loaders plus a
`med_task_uncertainty` submodule holding the learned task log-variances s_i.

Why a model type: the s_i must be trained with the adapter, saved with it and restored on resume.
Registering them as a submodule of the model lets PEFT do all three through `--modules_to_save
med_task_uncertainty`, with no trainer or optimizer hooks. Serving does not need them: after
merging, the checkpoint is loaded as the plain family (`medvlm_vocab`).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from swift.model import MODEL_MAPPING
from swift.model.register import register_model

from medvlm_vocab import FAMILIES, TASKS
from swift_ext.multitask_loss import TaskUncertainty

UNCERTAINTY_MODULE = "med_task_uncertainty"


def med_model_type(family_model_type: str) -> str:
    return f"med_{family_model_type}"


def _loader_with_uncertainty(base_loader: type) -> type:
    """Subclass a swift loader so every model it builds carries the task log-variances."""

    def get_model(self, model_dir, *args, **kwargs):
        model = base_loader.get_model(self, model_dir, *args, **kwargs)
        device = next(model.parameters()).device
        model.add_module(UNCERTAINTY_MODULE, TaskUncertainty(len(TASKS)).to(device=device, dtype=torch.float32))
        return model

    return type(f"Med{base_loader.__name__}", (base_loader,), {"get_model": get_model})


def register_med_models() -> None:
    """Register one med model type per family, mirroring swift's own registration of the family."""
    for family in FAMILIES.values():
        base = MODEL_MAPPING[family.swift_model_type]
        register_model(replace(base, model_type=med_model_type(family.swift_model_type), model_groups=[],
                               loader=_loader_with_uncertainty(base.loader), architectures=[],
                               template=f"med_{family.swift_template}",
                               # registration turns the arch name into its keys object; hand the name back
                               model_arch=base.model_arch and base.model_arch.arch_name),
                       exist_ok=True)
