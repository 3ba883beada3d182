"""Image probe: which trainable set lets the tiny Qwen2-VL read the lesion kind from the pixels?

Rung f of the learning ladder (docs/learning-ladder.md), in-process so one run takes 2-3 minutes: verify
questions about the generated lesion images (bench/lesion_task.py), half of them asking the other kind's
finding, answered from logit("yes") - logit("no") at the answer position and trained with cross-entropy
on that decision alone. The trainable set is the variable:

  lora         LoRA r8 on the language model's linear layers, embed_tokens/lm_head in full (tiny-cpu.yaml)
  lora64       the same at rank 64 (full rank at width 64)
  lora-vis     lora + the whole vision tower and merger trained in full (peft modules_to_save)
  lora64-vis   lora64 + the vision tower and merger in full
  full-lm      every language-model weight, vision tower and merger frozen
  full         every weight

    python bench/image_probe.py --mode full --steps 600

Held-out (the last 20% of the images) and training accuracy/AUROC every 100 steps are appended to
bench/results/ladder/image_probe.jsonl.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lesion_task import lesions  # noqa: E402
from bench.text_probe import decision_step  # noqa: E402
from eval.metrics import auroc  # noqa: E402

QUESTION = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Does the region <|box_start|>"
            "({x1},{y1}),({x2},{y2})<|box_end|> of this CT image of the abdomen show {finding}? Answer yes or no."
            "<|im_end|>\n<|im_start|>assistant\n")
LM_LINEAR = r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
MODES = ("lora", "lora64", "lora-vis", "lora64-vis", "full-lm", "full")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, default="full")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=600, help="generated lesion images (80%% train, 20%% held out)")
    p.add_argument("--model", type=Path, default=ROOT / "models/tiny-qwen2-vl")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/ladder")
    return p


def trainable(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The model with `mode`'s trainable set (see the module docstring)."""
    if mode.startswith("lora"):
        from peft import LoraConfig, get_peft_model
        rank = 64 if mode.startswith("lora64") else 8
        extra = ["visual"] if mode.endswith("-vis") else []
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=32 if rank == 8 else 64, lora_dropout=0.0,
                                                target_modules=LM_LINEAR,
                                                modules_to_save=["embed_tokens", "lm_head", *extra]))
    for name, param in model.named_parameters():
        param.requires_grad = mode == "full" or "visual" not in name
    return model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(args.model)
    tokenizer = processor.tokenizer
    items = list(lesions(args.images, 0))
    images = [Image.open(io.BytesIO(item.jpeg)).convert("RGB") for item in items]
    encoded = processor.image_processor(images=images, return_tensors="pt")
    n_patches = encoded["pixel_values"].shape[0] // len(items)
    pixels = encoded["pixel_values"].view(len(items), n_patches, -1)  # [images, patches, 1176]
    grid = encoded["image_grid_thw"][0]
    n_image_tokens = n_patches // 4  # 2x2 merge
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))

    def batch(indices: list[int], rng: random.Random) -> tuple[dict, torch.Tensor]:
        """Left-padded questions about `indices` (a random finding each) and their answers [n] (1 = yes)."""
        rows, answers = [], []
        for i in indices:
            finding = rng.choice(["hemorrhage", "cyst"])
            x1, y1, x2, y2 = (round(v * 1000 / 224) for v in items[i].box)
            text = QUESTION.format(x1=x1, y1=y1, x2=x2, y2=y2, finding=finding)
            rows.append(tokenizer.encode(text.replace("<|image_pad|>", "<|image_pad|>" * n_image_tokens),
                                         add_special_tokens=False))
            answers.append(int((finding == "hemorrhage") == items[i].bright))
        length = max(map(len, rows))
        ids = torch.full((len(rows), length), tokenizer.pad_token_id or 0)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, length - len(row):], mask[r, length - len(row):] = torch.tensor(row), 1
        return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == image_pad).long(),
                    pixel_values=pixels[indices].reshape(-1, pixels.shape[-1]),
                    image_grid_thw=grid.repeat(len(indices), 1)), torch.tensor(answers)

    model = trainable(AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32), args.mode)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    n_train = int(len(items) * 0.8)
    held_out = batch(list(range(n_train, len(items))), random.Random(1))
    train_scored = batch(list(range(min(120, n_train))), random.Random(2))

    @torch.no_grad()
    def score(inputs: dict, answers: torch.Tensor) -> tuple[float, float, float]:
        """Accuracy at margin > 0, the share answered yes, AUROC of the margin."""
        logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        margin = logits[:, yes] - logits[:, no]
        said_yes = margin > 0
        return (round((said_yes.long() == answers).float().mean().item(), 3), round(said_yes.float().mean().item(), 3),
                round(auroc(answers.tolist(), margin.tolist()), 3))

    rng, curve, started = random.Random(0), [], time.perf_counter()
    for step in range(args.steps + 1):
        if step % 100 == 0:
            (test_acc, test_yes, test_auroc), (train_acc, _, train_auroc) = score(*held_out), score(*train_scored)
            curve.append({"step": step, "test_acc": test_acc, "test_yes": test_yes, "test_auroc": test_auroc,
                          "train_acc": train_acc, "train_auroc": train_auroc,
                          "s": round(time.perf_counter() - started)})
            print(curve[-1], flush=True)
        if step == args.steps:
            break
        decision_step(model, *batch(rng.sample(range(n_train), args.batch), rng), (yes, no), optimizer)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "image_probe.jsonl").open("a") as f:
        f.write(json.dumps({"mode": args.mode, "lr": args.lr, "batch": args.batch, "steps": args.steps,
                            "images": args.images, "trainable_params": sum(p.numel() for p in params),
                            "model": str(args.model), "curve": curve}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
