"""Training with the med template + med_multitask loss: accumulation, learned weights, resume, infer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from swift_ext.loss_type import label_grids, samples_per_step
from swift_ext.multitask_loss import LossConfig, multitask_loss
from tests.conftest import ROOT, run_make
from tests.swift_ext.test_med_template import make_template, sample_rows  # noqa: F401  (fixture)



def med_loss(template, model, batch: dict, samples_in_batch: int) -> torch.Tensor:
    """The training loss exactly as the trainer computes it, without a trainer."""
    inputs = dict(batch)
    labels = inputs.pop("labels")
    outputs = template.compute_sft_loss(model, inputs)
    grids = label_grids(outputs["med"], labels)
    loss, _ = multitask_loss(outputs.logits, labels, grids["med_task"], grids["med_weight"], grids["med_decision"],
                             template.answer_token_id("yes"), template.answer_token_id("no"),
                             uncertainty=model.med_task_uncertainty, config=LossConfig(),
                             samples_in_batch=samples_in_batch, sample_index=grids["med_sample"])
    return loss


def test_grad_accumulation_matches_full_batch(sample_rows, models_dir, monkeypatch):  # noqa: F811
    from swift import get_model_processor

    from swift_ext.models import register_med_models

    register_med_models()
    template = make_template("qwen2_vl", models_dir, monkeypatch, 0.0)
    model, _ = get_model_processor(str(models_dir / "tiny-qwen2-vl"), model_type="med_qwen2_vl",
                                   torch_dtype=torch.float32)
    template.model = model
    template.register_post_encode_hook([model])
    with torch.no_grad():
        model.med_task_uncertainty.log_vars.copy_(torch.tensor([0.3, -0.5, 0.8]))
    encoded = [template.encode(r) for r in sample_rows]
    watched = {"lm_head": model.lm_head.weight, "log_vars": model.med_task_uncertainty.log_vars,
               "vision": model.model.visual.blocks[0].attn.qkv.weight}

    def grads(batches: list[list[dict]]) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        total = 0.0
        for micro in batches:
            loss = med_loss(template, model, template.data_collator([dict(e) for e in micro]), len(encoded))
            loss.backward()
            total += loss.item()
        return total, {k: v.grad.clone() for k, v in watched.items()}

    loss_full, grad_full = grads([encoded])
    loss_accum, grad_accum = grads([[e] for e in encoded])
    template.remove_post_encode_hook()
    assert loss_accum == pytest.approx(loss_full, rel=1e-5)
    for name in watched:
        torch.testing.assert_close(grad_accum[name], grad_full[name], rtol=1e-4, atol=1e-7, msg=name)
    assert grad_full["log_vars"].abs().min() > 0


@pytest.mark.parametrize("num_items, accepts, across_devices, expected", [
    (120, True, True, 4 * 3 * 2),   # the window on both devices: transformers multiplies the loss by 2
    (120, True, False, 4 * 3),      # tokens not averaged across devices: DDP averages, S is this device's
    (None, True, True, None),       # evaluation: this micro-batch
    (120, False, True, None),       # transformers divides by the accumulation steps itself
])
def test_samples_per_step_follows_the_trainers_loss_scaling(num_items, accepts, across_devices, expected):
    trainer = SimpleNamespace(model_accepts_loss_kwargs=accepts, current_gradient_accumulation_steps=3,
                              args=SimpleNamespace(per_device_train_batch_size=4, world_size=2,
                                                   average_tokens_across_devices=across_devices))
    assert samples_per_step(trainer, num_items) == expected


def log_vars(checkpoint: Path) -> torch.Tensor:
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as f:
        return f.get_tensor(next(k for k in f.keys() if k.endswith("med_task_uncertainty.log_vars")))


@pytest.mark.slow
def test_make_sft_resume_and_infer(tmp_path):
    data, out = tmp_path / "data", tmp_path / "sft"
    run_make("data", f"DATA={data}")
    fast = "--learning_rate 0.05 --lr_scheduler_type constant --warmup_ratio 0 --logging_steps 1 --save_steps 2"
    run_make("sft", f"DATA={data}", f"OUTPUT={out}", f"SFT_ARGS=--max_steps 2 {fast}")
    logs = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    step_logs = [entry for entry in logs if "loss_locate" in entry]
    assert step_logs and all(k in step_logs[0] for k in
                             ("loss_verify", "loss_diagnose", "weight_locate", "weight_verify", "weight_diagnose"))
    assert list((out / "runs").rglob("events.out.tfevents*")), "per-task losses go to TensorBoard too"
    s2 = log_vars(out / "checkpoint-2")
    assert (s2 != 0).all(), "the task weights are learned and saved with the adapter"

    first_run = len(logs)
    run_make("sft", f"DATA={data}", f"OUTPUT={out}", "RESUME=1", f"SFT_ARGS=--max_steps 4 {fast}")
    resumed = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()[first_run:]]
    steps = [int(str(e["global_step/max_steps"]).split("/")[0]) for e in resumed
             if "loss_locate" in e and "train_runtime" not in e]
    assert steps == [3, 4], f"the resumed run logs from step 3 on, not from 1: {steps}"
    s4 = log_vars(out / "checkpoint-4")
    # Adam moves each s_i by about lr per step in a steady direction: restored weights keep going,
    # weights reset to 0 on resume would end near s2 instead.
    moved = (s4 - s2).abs()
    assert (moved > 0.5 * s2.abs()).all() and ((s4.abs() - s2.abs()) > 0.05).any(), (s2, s4)

    result = tmp_path / "infer.jsonl"
    env = {**os.environ, "MAX_PIXELS": "50176"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "swift"), "infer", "--adapters", str(out / "checkpoint-4"),
         "--val_dataset", str(data / "test.jsonl"), "--max_new_tokens", "12", "--infer_backend", "transformers",
         "--result_path", str(result), "--max_batch_size", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in result.read_text().splitlines()]
    assert answers and all(isinstance(a["response"], str) for a in answers)
    assert any(a["response"].strip() for a in answers)


@pytest.mark.slow
def test_make_sft_deepspeed_zero2_smoke(tmp_path):
    """The DeepSpeed path of `make sft` (ZeRO-2, one CPU process): trains and saves the task weights."""
    data, out = tmp_path / "data", tmp_path / "sft"
    run_make("data", f"DATA={data}")
    run_make("sft", f"DATA={data}", f"OUTPUT={out}", "DEEPSPEED=zero2",
             "SFT_ARGS=--max_steps 2 --save_steps 2 --lr_scheduler_type constant --warmup_ratio 0")
    args = json.loads((out / "args.json").read_text())
    assert args["deepspeed"]["zero_optimization"]["stage"] == 2
    assert (log_vars(out / "checkpoint-2") != 0).all()
