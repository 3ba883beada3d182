"""The learning ladder: one command per rung of issue 14's debugging ladder for the tiny model.

Each run trains `make sft` (the real recipe, plugin and collator) on a variant of the generated lesion
task and judges the verify *decisions* (sign of logit(yes) - logit(no) at the answer), never the loss
value, on the training conversations and on held-out images.

    python bench/learning_ladder.py --name a-default --rows fixed8 --steps 150
    python bench/learning_ladder.py --name b-text --rows text-kind --steps 300
    python bench/learning_ladder.py --name c-vision --train-vision --steps 300

Row variants (--rows):
  fixed8     rung a: 8 training conversations, 4 of them turned into fixed negatives (finding swapped for
             the other kind, answer "no"), collator negatives off; the batch is the whole set;
  text-kind  rung b: every verify question also states the lesion's density in words ("The lesion
             is hyperdense."), negatives fixed in the data by finding swap, so verify can be
             answered from the text alone: a control for the language model's part of the task;
  all        the converted training conversations, with the recipe's collator negatives.
Every result (settings, decisions on train and held-out, wall time) is appended to
<out>/ladder.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checkpoint_eval import (Evaluator, TestImage, VerifyQuestion, apply_recipe_env, image_sizes,  # noqa: E402
                                   objects_up_to, test_image, verify_questions)
from bench.learning_check import checkpoints, prepare_data, run_logged, training_log  # noqa: E402
from bench.lesion_task import KINDS  # noqa: E402
from eval.metrics import auroc  # noqa: E402

DENSITY = {finding: density for density, finding in KINDS.values()}  # "hemorrhage" -> "hyperdense"
OTHER = {a: b for a, b in (("hemorrhage", "cyst"), ("cyst", "hemorrhage"))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="label of this run in ladder.jsonl")
    p.add_argument("--rows", choices=("fixed8", "text-kind", "all"), default="all")
    p.add_argument("--images", type=int, default=1000, help="generated lesion images (as the learning check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch", type=int, default=None, help="per-device batch (default: the recipe's; fixed8: 8)")
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes/sft/tiny-cpu.yaml")
    p.add_argument("--model", type=Path, default=ROOT / "models/tiny-qwen2-vl")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (swift argument or ENV variable in upper case), repeatable")
    p.add_argument("--verify-only", action="store_true",
                   help="train only the verify answer (locate and diagnose turns stay in the conversation with "
                        "`loss: false`): isolates verify and puts ~2 tokens per sample through the LM head")
    p.add_argument("--train-eval", type=int, default=60, help="training images whose verify is also scored")
    p.add_argument("--work", type=Path, default=Path("/tmp/medvlm-ladder"))
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/ladder")
    return p


def swap_finding(row: dict) -> dict:
    """The same conversation asking about the other lesion kind, answered "no" (a fixed negative)."""
    finding, other = row["finding"], OTHER[row["finding"]]
    verify = 2 * row["tasks"].index("verify")
    messages = [dict(m) for m in row["messages"]]
    if messages[verify]["content"].count(finding) != 1:
        raise ValueError(f"{row['id']}: the finding must occur once in the verify question")
    messages[verify]["content"] = messages[verify]["content"].replace(finding, other)
    messages[verify + 1]["content"] = "no"
    return {**row, "id": row["id"] + "-neg", "messages": messages, "finding": other}


def state_density(row: dict, true_finding: str) -> dict:
    """Rung b: the verify question also says in words what the image shows."""
    verify = 2 * row["tasks"].index("verify")
    messages = [dict(m) for m in row["messages"]]
    messages[verify]["content"] = f"The lesion is {DENSITY[true_finding]}. " + messages[verify]["content"]
    return {**row, "messages": messages}


def verify_only(row: dict) -> dict:
    """The conversation up to the verify answer, only that answer trained (swift's per-message `loss`;
    swift always trains the last turn, so the turns after verify are left out)."""
    verify = 2 * row["tasks"].index("verify")
    messages = [dict(m) for m in row["messages"][:verify + 2]]
    for k in range(1, verify, 2):
        messages[k]["loss"] = False
    return {**row, "messages": messages, "tasks": ["verify"], "objects": objects_up_to(messages, row["objects"])}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def variant_rows(kind: str, rows: list[dict], seed: int, negative_share: float = 0.3) -> list[dict]:
    """Training rows of one --rows variant (see the module docstring)."""
    if kind == "fixed8":
        by_kind = {f: [r for r in rows if r["finding"] == f] for f in OTHER}
        chosen = [r for f in sorted(by_kind) for r in by_kind[f][:4]]
        return [swap_finding(r) if k % 2 else r for k, r in enumerate(chosen)]
    rng = random.Random(seed)
    out = []
    for row in rows:
        true_finding = row["finding"]
        if kind == "text-kind":
            row = swap_finding(row) if rng.random() < negative_share else row
            row = state_density(row, true_finding)
        out.append(row)
    return out


def variant_questions(kind: str, rows: list[dict], sizes: dict, truth: dict) -> list[VerifyQuestion]:
    """Verify questions on `rows`: the rows' own verify turns (fixed negatives included) for fixed rows,
    else each image's own finding (yes) and the other kind (no), as the learning check asks them."""
    def image(row: dict) -> TestImage:
        return test_image(row, sizes[row["id"].removesuffix("-neg")], truth[row["id"].removesuffix("-neg")]["box"])

    if kind == "all":
        return verify_questions([image(r) for r in rows])
    if kind == "fixed8":
        return [VerifyQuestion(img := image(r), img.verify_messages, int(not r["id"].endswith("-neg"))) for r in rows]
    questions = []
    for row in rows:
        true_finding = row["finding"]
        for label, asked in ((1, row), (0, swap_finding(row))):
            img = image(state_density(asked, true_finding))
            questions.append(VerifyQuestion(img, img.verify_messages, label))
    return questions


def recipe_variant(base: Path, overrides: list[str], lr: float, batch: int | None, out: Path) -> Path:
    """A copy of the recipe with swift arguments and ENV variables overridden (KEY=VALUE, ENV in upper case)."""
    recipe = yaml.safe_load(base.read_text())
    recipe["learning_rate"] = lr
    if batch:
        recipe["per_device_train_batch_size"] = batch
    for item in overrides:
        key, _, value = item.partition("=")
        if key.isupper():
            recipe.setdefault("ENV", {})[key] = value
        else:
            recipe[key] = yaml.safe_load(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out


def decisions(margins: list[float], labels: list[int]) -> dict:
    """Accuracy at the model's own threshold (margin > 0 is "yes"), AUROC, and the share answered yes."""
    correct = [(m > 0) == (y == 1) for m, y in zip(margins, labels)]
    return {"acc": round(sum(correct) / len(correct), 3), "auroc": auroc(labels, margins),
            "yes_rate": round(sum(m > 0 for m in margins) / len(margins), 3), "n": len(margins)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    data_args = argparse.Namespace(work=args.work / f"lesions{args.images}-s{args.seed}", images=args.images,
                                   seed=args.seed, reuse=True)
    data, truth, _ = prepare_data(data_args)
    sizes = image_sizes(data / "rois.jsonl")
    train_rows = read_rows(data / "train_multitask.jsonl")
    test_rows = read_rows(data / "test_multitask.jsonl")

    run_dir = args.work / "runs" / args.name
    rows = variant_rows(args.rows, train_rows, args.seed)
    trained = [verify_only(r) for r in rows] if args.verify_only else rows
    write_rows(run_dir / "data/train_multitask.jsonl", trained)
    write_rows(run_dir / "data/val_multitask.jsonl", trained[:8])
    batch = args.batch or (8 if args.rows == "fixed8" else None)
    overrides = list(args.set) + (["MEDVLM_NEGATIVE_RATIO=0"] if args.rows != "all" else [])
    recipe = recipe_variant(args.recipe, overrides, args.lr, batch, run_dir / "recipe.yaml")
    apply_recipe_env(recipe)
    sft_args = (f"--max_steps {args.steps} --save_steps {args.steps} --save_total_limit 1 "
                f"--logging_steps {min(10, args.steps)} --save_only_model true")
    env_overrides = {k: v for k, v in (yaml.safe_load(recipe.read_text()).get("ENV") or {}).items()}
    os.environ.update({k: str(v) for k, v in env_overrides.items()})
    train_s = run_logged(["make", "sft", "SFT_SETS=train_multitask", f"DATA={run_dir / 'data'}", f"OUTPUT={run_dir / 'out'}",
                          f"RECIPE={recipe}", f"MODEL={args.model}", f"SFT_ARGS={sft_args}"],
                         run_dir / "sft.log")

    evaluator = Evaluator(args.model, batch_size=16)
    step, ckpt = checkpoints(run_dir / "out")[-1]
    model = evaluator.load(ckpt)
    scored_train = rows if args.rows == "fixed8" else train_rows[:args.train_eval]
    sets = {"train": variant_questions(args.rows, scored_train, sizes, truth)}
    if args.rows != "fixed8":
        sets["test"] = variant_questions(args.rows, test_rows, sizes, truth)
    verdict = {name: decisions(evaluator.verify_margins(model, qs), [q.label for q in qs]) for name, qs in sets.items()}
    log = training_log(run_dir / "out")
    result = {"name": args.name, "rows": args.rows, "verify_only": args.verify_only, "steps": step, "lr": args.lr, "batch": batch,
              "model": str(args.model), "overrides": overrides, "verify": verdict,
              "last_log": log[-1] if log else None, "train_s": round(train_s, 1),
              "wall_s": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "ladder.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
