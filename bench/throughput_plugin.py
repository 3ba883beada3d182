"""Per-step measurements inside `swift sft`, for bench/train_throughput.py (`--external_plugins` this file).

swift's own log gives iterations/s, not how many real (non-pad) tokens a step trained on nor the
memory before the first step, which the batch-size probe needs. This wraps the trainer's
training_step to count what each micro-batch holds and adds a callback that appends one JSON line
per optimiser step to $MEDVLM_BENCH_LOG:

  step, t (wall clock at the step's end, after the optimiser), samples, real_tokens, padded_tokens,
  supervised_tokens, image_patches, model_flops (the work a step needs, see `step_flops`),
  peak_mem_bytes (GPU: max allocated; CPU: the process's peak RSS), peak_reserved_bytes (GPU),
  static_mem_bytes (memory held when the first step began: weights, adapter, buffers).
"""
from __future__ import annotations

import json
import os
import resource
import time

import torch
from swift.trainers import Seq2SeqTrainer
from transformers import TrainerCallback

LOG_ENV = "MEDVLM_BENCH_LOG"
IGNORE = -100


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _memory() -> tuple[int, int, int]:
    """(current, peak, peak reserved) bytes: GPU allocator figures, or this process's RSS on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return current, peak, peak


def parameter_groups(model: torch.nn.Module) -> dict[str, int]:
    """Weights of matrix multiplies by part, adapters excluded: language-model linears (no embedding),
    the LM head (its rows x columns), the vision tower with its merger."""
    groups = {"lm_linear": 0, "lm_head": 0, "vision": 0}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen or p.dim() < 2 or "lora_" in name or "modules_to_save" in name:
            continue
        seen.add(id(p))
        if "visual" in name:
            groups["vision"] += p.numel()
        elif "lm_head" in name:
            groups["lm_head"] += p.numel()
        elif "embed_tokens" not in name:
            groups["lm_linear"] += p.numel()
    return groups


def sequence_lengths(inputs: dict) -> list[int]:
    """Real tokens of each sample: attention-mask rows, or the packed row's segments (padding_free)."""
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return [int(n) for n in mask.sum(1).tolist()]
    ids = inputs["input_ids"]
    position = inputs.get("text_position_ids", inputs.get("position_ids"))
    if position is None:
        return [ids.shape[-1]] * ids.shape[0]
    row = position.reshape(-1, position.shape[-1])[0]
    starts = (row == 0).nonzero().squeeze(1).tolist() + [row.shape[0]]
    return [b - a for a, b in zip(starts, starts[1:])]


def step_flops(groups: dict[str, int], config, lengths: list[int], supervised: int, patches: int) -> float:
    """Model FLOPs a LoRA step needs (the MFU numerator), counted on real tokens only.

    Language model: forward (2 FLOPs per weight per token) and the backward to activations (2 more);
    frozen base weights get no weight gradient, and the adapter's own work (<1%) and the forward that
    gradient checkpointing recomputes are not counted, as usual for MFU. Causal attention: 3 x 2 s^2 h
    per layer. The LM head only where a loss reads it (supervised positions): logits elsewhere are
    waste. The frozen vision tower: forward only, on its patches (full attention as an upper bound).
    """
    text = config.text_config if hasattr(config, "text_config") else config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    heads_dim = text.num_attention_heads * head_dim
    tokens = sum(lengths)
    flops = 4.0 * groups["lm_linear"] * tokens + 4.0 * groups["lm_head"] * supervised
    flops += 6.0 * text.num_hidden_layers * heads_dim * sum(n * n for n in lengths)
    vision = getattr(config, "vision_config", None)
    if vision is not None and patches:
        v_dim = getattr(vision, "embed_dim", None) or vision.hidden_size
        per_image = patches / max(1, len(lengths))  # one image per sample
        flops += 2.0 * groups["vision"] * patches + 4.0 * vision.depth * v_dim * patches * per_image
    return flops


class _StepLog(TrainerCallback):
    def __init__(self, path: str, state: dict):
        self.path, self.state = path, state

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        _, peak, reserved = _memory()
        counts = self.state.pop("pending", {})
        record = {"step": state.global_step, "t": time.perf_counter(), "t_first_start": self.state.get("t_first"),
                  "static_mem_bytes": self.state.get("static"), "peak_mem_bytes": peak,
                  "peak_reserved_bytes": reserved, **counts}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _count(inputs: dict, groups: dict[str, int], config) -> dict:
    lengths = sequence_lengths(inputs)
    labels = inputs.get("labels")
    supervised = int((labels != IGNORE).sum()) if isinstance(labels, torch.Tensor) else 0
    pixels = inputs.get("pixel_values")
    patches = int(pixels.shape[0]) if isinstance(pixels, torch.Tensor) else 0
    return {"samples": len(lengths), "real_tokens": sum(lengths), "padded_tokens": int(inputs["input_ids"].numel()),
            "supervised_tokens": supervised, "image_patches": patches,
            "model_flops": step_flops(groups, config, lengths, supervised, patches)}


def install(path: str) -> None:
    """Wrap Seq2SeqTrainer.training_step (counts, first-step memory) and register the step logger."""
    original = Seq2SeqTrainer.training_step
    state: dict = {}

    def training_step(self, model, inputs, *args, **kwargs):
        if "groups" not in state:
            _sync()
            state["t_first"] = time.perf_counter()
            state["static"] = _memory()[0]
            state["groups"] = parameter_groups(model)
            self.add_callback(_StepLog(path, state))
        counts = _count(inputs, state["groups"], self.template.get_base_model(self.model).config)
        pending = state.setdefault("pending", {})
        for key, value in counts.items():
            pending[key] = pending.get(key, 0) + value
        return original(self, model, inputs, *args, **kwargs)

    Seq2SeqTrainer.training_step = training_step


if os.environ.get(LOG_ENV):
    install(os.environ[LOG_ENV])
