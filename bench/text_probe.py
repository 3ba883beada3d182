"""Text probe: can the tiny language model learn the verify comparison at all, and at which learning rate?

Rung e of the learning ladder (bench/learning_ladder.py), in-process and image-free so one run takes a
minute or two: verify-style questions that state the lesion's density in words, answered from the logit
of "yes" against "no" at the answer position (the same readout as the ladder), trained with LoRA r8 on
all linear layers plus embed_tokens/lm_head in full, as recipes/sft/tiny-cpu.yaml does.

    python bench/text_probe.py --task xnor --lr 1e-3 --steps 600

Tasks: `single` (yes iff the lesion is hyperdense: one word decides) and `xnor` (yes iff the stated
density matches the asked finding, hyperdense <-> hemorrhage, hypodense <-> cyst: what verify asks).
Held-out accuracy on 256 fresh questions every 100 steps is appended to
bench/results/ladder/text_probe.jsonl.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
QUESTION = ("<|im_start|>user\nThe lesion is {density}. Does the region <|box_start|>({x1},{y1}),({x2},{y2})"
            "<|box_end|> of this CT image of the abdomen show {finding}? Answer yes or no.<|im_end|>\n"
            "<|im_start|>assistant\n")


def question(rng: random.Random, task: str) -> tuple[str, int]:
    """One question and its answer (1 = yes)."""
    bright, asks_hemorrhage = rng.random() < 0.5, rng.random() < 0.5
    x1, y1 = rng.randint(100, 600), rng.randint(100, 600)
    text = QUESTION.format(density="hyperdense" if bright else "hypodense", x1=x1, y1=y1, x2=x1 + 90, y2=y1 + 77,
                           finding="hemorrhage" if asks_hemorrhage else "cyst")
    return text, int(bright == asks_hemorrhage if task == "xnor" else bright)


def batch(tokenizer, rng: random.Random, task: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded token ids [n, L], attention mask [n, L] and answers [n]."""
    items = [question(rng, task) for _ in range(n)]
    encoded = [tokenizer.encode(text, add_special_tokens=False) for text, _ in items]
    length = max(map(len, encoded))
    ids = torch.full((n, length), tokenizer.pad_token_id or 0)
    mask = torch.zeros((n, length), dtype=torch.long)
    for i, row in enumerate(encoded):
        ids[i, length - len(row):], mask[i, length - len(row):] = torch.tensor(row), 1
    return ids, mask, torch.tensor([y for _, y in items])


def decision_step(model: torch.nn.Module, inputs: dict, answers: torch.Tensor, yes_no: tuple[int, int],
                  optimizer: torch.optim.Optimizer) -> float:
    """One optimizer step of cross-entropy on the answer token alone ("yes" for answers == 1, else "no")."""
    logits = model(**inputs, logits_to_keep=1).logits[:, -1]
    loss = torch.nn.functional.cross_entropy(logits, torch.where(answers == 1, *yes_no))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("single", "xnor"), default="xnor")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--model", type=Path, default=ROOT / "models/tiny-qwen2-vl")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/ladder")
    args = p.parse_args(argv)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear",
                                             modules_to_save=["embed_tokens", "lm_head"]))
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr, weight_decay=0.0)
    held_out = batch(tokenizer, random.Random(1), args.task, 256)
    curve, started = [], time.perf_counter()
    for step in range(args.steps + 1):
        if step % 100 == 0:
            with torch.no_grad():
                logits = model(input_ids=held_out[0], attention_mask=held_out[1], logits_to_keep=1).logits[:, -1]
            said_yes = logits[:, yes] > logits[:, no]
            curve.append({"step": step, "acc": round((said_yes.long() == held_out[2]).float().mean().item(), 3),
                          "yes_rate": round(said_yes.float().mean().item(), 3)})
            print(curve[-1], flush=True)
        if step == args.steps:
            break
        ids, mask, answers = batch(tokenizer, rng, args.task, args.batch)
        decision_step(model, {"input_ids": ids, "attention_mask": mask}, answers, (yes, no), optimizer)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "text_probe.jsonl").open("a") as f:
        f.write(json.dumps({"task": args.task, "lr": args.lr, "batch": args.batch, "steps": args.steps,
                            "model": str(args.model), "curve": curve,
                            "wall_s": round(time.perf_counter() - started, 1)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
