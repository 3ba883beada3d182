"""Learning check: does the multi-task recipe teach a tiny Qwen-VL to locate and verify, vs plain SFT?

Not a test: one command runs the whole experiment through the project's real entry points.

    python bench/learning_check.py [--images 1000 --steps 1200 --save-every 300 --out bench/results]

1. generates a lesion task (bench.lesion_task: bright "hemorrhage" / dark "cyst" ellipses with
   drawn green boxes) as 25M_demo parquet and converts it with `make data`;
2. trains `make sft` twice for the same steps and learning rate: recipes/sft/tiny-cpu-full.yaml
   (multi-task loss + verify negatives) and recipes/sft/plain-tiny-cpu-full.yaml (plain SFT), both
   fine-tuning the tiny model in full (LoRA does not learn the image: docs/learning-ladder.md);
3. evaluates the untrained base and every saved checkpoint on the held-out test conversations
   (bench.checkpoint_eval): ROI IoU / Acc@0.5 of the greedy locate answer (free, and held to the
   box grammar), verify accuracy and AUROC on each image's own finding (yes) vs another image's
   finding of the other kind (no); the IoU of always answering the mean training box is the bar a
   model must pass to have used the image;
4. writes <out>/learning_check.json and <out>/learning_check.png and prints a table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checkpoint_eval import (Evaluator, TestImage, apply_recipe_env, box_scores, image_sizes,  # noqa: E402
                                   load_test_images, verify_questions)
from bench.lesion_task import write_lesion_parquet  # noqa: E402
from data_prep.pixel_boxes import box_iou  # noqa: E402
from data_prep.tasks import multitask_row  # noqa: E402
from medvlm_vocab import TINY_FAMILIES, tiny_checkpoint_name  # noqa: E402

RECIPES = {"multitask": ROOT / "recipes/sft/tiny-cpu-full.yaml", "plain": ROOT / "recipes/sft/plain-tiny-cpu-full.yaml"}
SPLITS = ("train", "val", "test")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000,
                   help="generated images (>= 500 for the issue's check; about 5%% become the test split)")
    p.add_argument("--steps", type=int, default=1200, help="training steps of each run (same for both)")
    p.add_argument("--save-every", type=int, default=300, help="checkpoint (and evaluation) every K steps")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate of both runs (1e-2, the old default, learns and then collapses to a constant "
                        "answer: bench/text_probe.py, docs/learning-ladder.md)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results", help="where the JSON and PNG go")
    p.add_argument("--work", type=Path, default=Path("/tmp/medvlm-learning-check"),
                   help="data, checkpoints and logs")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--split-by", choices=("id", "group"), default="id",
                   help="`make data` DATA_SPLIT_BY. id (default): the generated images are independent draws, and "
                        "this is the held-out set of every ladder rung (43 images); group: the perceptual hash links "
                        "14.5%% of them as near-duplicates (they share a background) and holds out 28")
    p.add_argument("--reuse", action="store_true",
                   help="keep converted data and runs that already reached --steps (re-evaluate only)")
    p.add_argument("--only", choices=tuple(RECIPES),
                   help="train and evaluate this recipe alone (the report then lacks the other's curves)")
    p.add_argument("--init", type=Path, default=None,
                   help="start both runs from this full checkpoint instead of the untrained tiny model "
                        "(a curriculum: e.g. bench/learning_ladder.py --verify-only's checkpoint)")
    p.add_argument("--family", choices=TINY_FAMILIES, default="qwen2_vl",
                   help="tiny model family (models/tiny-<family>; --init must be of the same family)")
    p.add_argument("--train-images", type=int, default=60,
                   help="also score each run's last checkpoint on this many training images: a model that "
                        "fails held out but fits these memorises; one that fails both underfits (0: skip)")
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="locate answer budget (a Qwen2-VL box answer is about 26 tokens here)")
    return p


def model_dir(family: str) -> Path:
    """The tiny checkpoint `make tiny-model` writes for a family (the Makefile's MODEL default)."""
    return ROOT / "models" / tiny_checkpoint_name(family)


def run_logged(cmd: list[str], log: Path) -> float:
    """Run a command from the repo root, output to `log`; returns seconds, raises with the log tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}   (log: {log})", flush=True)
    started = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code:
        raise RuntimeError(f"{cmd[:2]} failed ({code}):\n" + "".join(log.read_text().splitlines(True)[-40:]))
    return time.perf_counter() - started


def prepare_data(args: argparse.Namespace) -> tuple[Path, dict, dict]:
    """Generate the parquet, convert it with `make data`; returns (data dir, truth boxes, notes)."""
    parquet = args.work / "lesions.parquet"
    data = args.work / ("data" if args.split_by == "id" else f"data-{args.split_by}")  # one folder per split
    truth_file, split_file = args.work / "truth.json", data / "split_by.txt"
    notes: dict = {"split_by": args.split_by}
    if args.reuse and (data / "test.jsonl").exists() and truth_file.exists() \
            and len(json.loads(truth_file.read_text())) == args.images \
            and split_file.exists() and split_file.read_text() == args.split_by:
        notes["data"] = "reused from an earlier run in --work (same generator and converter)"
    else:
        shutil.rmtree(data, ignore_errors=True)
        args.work.mkdir(parents=True, exist_ok=True)
        truth = write_lesion_parquet(parquet, args.images, args.seed)
        truth_file.write_text(json.dumps({k: {"box": v.box, "bright": v.bright} for k, v in truth.items()}))
        notes["make_data_s"] = round(run_logged(
            ["make", "data", f"DATA_SOURCE={parquet}", f"DATA={data}", f"DATA_SPLIT_BY={args.split_by}"],
            args.work / "logs/make_data.log"), 1)
        split_file.write_text(args.split_by)
    notes["multitask_rows"] = ensure_multitask(data)
    truth = json.loads(truth_file.read_text())
    return data, truth, notes


def ensure_multitask(data: Path) -> str:
    """`make sft` trains on *_multitask.jsonl; build them from the per-task rows if the converter did not.

    A marker file remembers that this script built them, so a --reuse run reports it truthfully.
    """
    marker = data / "multitask_built_by_bench.txt"
    if all((data / f"{s}_multitask.jsonl").exists() for s in SPLITS):
        return marker.read_text() if marker.exists() else "written by the converter"
    for split in SPLITS:
        rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
        lines = [json.dumps(multitask_row(list(g)), ensure_ascii=False) + "\n"
                 for _, g in groupby(rows, key=lambda r: r["id"])]
        (data / f"{split}_multitask.jsonl").write_text("".join(lines))
    note = "built by bench/learning_check.py from {train,val,test}.jsonl with data_prep.tasks.multitask_row"
    marker.write_text(note)
    return note


def prior_box_scores(data: Path, truth_boxes: dict, images: list[TestImage]) -> dict:
    """IoU of always answering the mean training box (relative coordinates): what ignoring the image reaches."""
    sizes = image_sizes(data / "rois.jsonl")
    train_ids = [json.loads(line)["id"] for line in (data / "train_multitask.jsonl").read_text().splitlines()]
    relative = [[c / sizes[i][k % 2] for k, c in enumerate(truth_boxes[i])] for i in train_ids]
    mean = [sum(column) / len(relative) for column in zip(*relative)]
    boxes = [tuple(c * (img.width, img.height)[k % 2] for k, c in enumerate(mean)) for img in images]
    return {**box_scores(boxes, images), "box": [round(c, 3) for c in mean]}


def sft_args(args: argparse.Namespace) -> str:
    """Overrides of both recipes: schedule, and weights-only checkpoints (no resume needed, and the
    optimizer state of the trained embeddings would double every checkpoint)."""
    keep = args.steps // args.save_every + 1
    return (f"--max_steps {args.steps} --save_steps {args.save_every} --save_total_limit {keep} "
            f"--learning_rate {args.lr} --logging_steps {min(5, args.save_every)} --save_only_model true")


def recipe_setting(recipe: Path, key: str):
    """One top-level value of a swift YAML recipe (None if unset), so the report states what ran."""
    return (yaml.safe_load(recipe.read_text()) or {}).get(key)


def train(name: str, data: Path, args: argparse.Namespace) -> tuple[Path, float | None]:
    """`make sft` with one recipe; returns the output dir and its wall seconds (None if reused)."""
    start = f"-init-{hashlib.sha1(str(args.init.resolve()).encode()).hexdigest()[:8]}" if args.init else ""
    family = "" if args.family == "qwen2_vl" else f"-{args.family}"
    split = "" if args.split_by == "id" else f"-{args.split_by}-split"
    out = args.work / "runs" / f"{name}{family}{split}{start}"  # --reuse never takes a run from another start
    if args.reuse and (out / f"checkpoint-{args.steps}").exists():
        return out, None
    shutil.rmtree(out, ignore_errors=True)
    model = [f"FAMILY={args.family}"] + ([f"MODEL={args.init}"] if args.init else [])
    seconds = run_logged(["make", "sft", "SFT_SETS=train_multitask", f"DATA={data}", f"OUTPUT={out}",
                          f"RECIPE={RECIPES[name]}", f"SFT_ARGS={sft_args(args)}", *model], args.work / "logs" / f"sft_{out.name}.log")
    return out, seconds


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(p.name.split("-")[1]), p) for p in run.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return sorted(found)


def training_log(run: Path) -> list[dict]:
    """Per logging step: loss, token accuracy and (multi-task) per-task losses and weights."""
    keep = ("loss", "token_acc", "learning_rate", "loss_locate", "loss_verify", "loss_diagnose",
            "weight_locate", "weight_verify", "weight_diagnose")
    out = []
    for line in (run / "logging.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry and "global_step/max_steps" in entry:
            step = int(entry["global_step/max_steps"].split("/")[0])
            out.append({"step": step, **{k: entry[k] for k in keep if k in entry}})
    return out


def train_runtime(run: Path) -> float | None:
    """swift's own training seconds (its final `train_runtime` entry), so a --reuse report keeps them."""
    entries = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    return next((round(e["train_runtime"], 1) for e in reversed(entries) if "train_runtime" in e), None)


def evaluate_runs(evaluator: Evaluator, runs: dict[str, Path], images: list[TestImage],
                  args: argparse.Namespace) -> dict:
    """Step 0 (the shared untrained base) and every checkpoint of every run."""
    questions = verify_questions(images)
    timed = _timed(evaluator, images, questions)
    base = timed(args.init)
    results: dict = {}
    for name, run in runs.items():
        results[name] = [{"step": 0, **base}]
        for step, ckpt in checkpoints(run):
            results[name].append({"step": step, **timed(ckpt)})
    return results


def _timed(evaluator: Evaluator, images: list[TestImage], questions: list) -> Callable[[Path | None], dict]:
    def evaluate(ckpt: Path | None) -> dict:
        started = time.perf_counter()
        result = evaluator.evaluate(ckpt, images, questions)
        result["eval_s"] = round(time.perf_counter() - started, 1)
        print(f"  evaluated {ckpt or 'base model'}: IoU {result['iou_mean']:.3f}, "
              f"verify acc {result['verify_acc']:.3f} ({result['eval_s']} s)", flush=True)
        return result
    return evaluate


def plot(results: dict, settings: dict, training: dict, path: Path) -> None:
    """Held-out ROI IoU (mean, Acc@0.5) and verify (accuracy, AUROC), and the token accuracy on the
    training batches (the one training figure both losses share), against step, both recipes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"multitask": "tab:blue", "plain": "tab:orange"}
    labels = {"multitask": "multi-task (tiny-cpu-full.yaml)", "plain": "plain SFT (plain-tiny-cpu-full.yaml)"}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 5.2))
    last = max(r["step"] for rows in results.values() for r in rows) or 1
    for k, (name, rows) in enumerate(results.items()):
        # equal values would hide one recipe behind the other: shift each recipe a little along x
        steps = [r["step"] + (k - 0.5) * 0.012 * last for r in rows]
        c, label = colors.get(name), labels.get(name, name)
        ax1.plot(steps, [r["iou_mean"] for r in rows], "o-", color=c, label=f"{label}: mean IoU")
        ax1.plot(steps, [r["acc_at_0.5"] for r in rows], "s--", color=c, alpha=0.7, label=f"{label}: Acc@0.5")
        ax1.plot(steps, [r["parse_rate"] for r in rows], "^:", color=c, alpha=0.5, label=f"{label}: box parsed")
        ax1.plot(steps, [r["grammar_iou_mean"] for r in rows], "d-.", color=c, alpha=0.6,
                 label=f"{label}: mean IoU, box grammar")
        ax2.plot(steps, [r["verify_acc"] for r in rows], "o-", color=c, label=f"{label}: accuracy")
        ax2.plot(steps, [r["verify_auroc"] if r["verify_auroc"] is not None else float("nan") for r in rows],
                 "s--", color=c, alpha=0.7, label=f"{label}: AUROC")
        # a constant answer also scores 50%: print the share answered "yes" along the bottom
        for x, r in zip(steps, rows):
            ax2.text(x, 0.12 - 0.06 * k, f"{100 * r['verify_yes_rate']:.0f}%", ha="center", fontsize=7.5, color=c)
    ax1.axhline(settings["prior_box"]["iou_mean"], color="grey", lw=1, ls=":",
                label="mean training box, every image (ignores the image): mean IoU")
    for name, log in training.items():
        ax3.plot([e["step"] for e in log], [e.get("token_acc", float("nan")) for e in log], "-",
                 color=colors.get(name), label=labels.get(name, name))
    ax3.set(title="Training batches: token accuracy (teacher-forced)", xlabel="training step",
            ylabel="token accuracy", ylim=(-0.02, 1.02))
    ax2.text(0.01, 0.19, 'share answered "yes":', transform=ax2.get_yaxis_transform(), fontsize=7.5, color="dimgrey")
    ax1.set(title=f"Locate: ROI IoU on {settings['n_test_images']} held-out images", xlabel="training step",
            ylabel="IoU / share of images", ylim=(-0.02, 1.02))
    ax2.axhline(0.5, color="grey", lw=1, ls=":", label="chance")
    ax2.set(title=f"Verify: {settings['n_verify_questions']} held-out yes/no questions", xlabel="training step",
            ylabel="accuracy / AUROC", ylim=(-0.02, 1.02))
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="best")
    start = f"from {settings['init']}" if settings.get("init") else "untrained"
    fig.suptitle(f"Tiny {settings['family']} ({start}), tuner {settings.get('tuner_type')}, "
                 f"lr {settings['learning_rate']}, batch {settings['per_device_train_batch_size']}, {settings['steps']} steps, "
                 f"{settings['images']} generated images split by {settings['split_by']} "
                 "(step 0 = the starting model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: dict) -> None:
    head = (f"{'run':10s} {'step':>5s} {'IoU':>6s} {'Acc@.5':>7s} {'parsed':>7s} {'g.IoU':>6s} {'g.Acc':>6s} "
            f"{'v.acc':>6s} {'AUROC':>6s} {'yes%':>5s}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, rows in results.items():
        for r in rows:
            auc = f"{r['verify_auroc']:.3f}" if r["verify_auroc"] is not None else "  -  "
            print(f"{name:10s} {r['step']:5d} {r['iou_mean']:6.3f} {r['acc_at_0.5']:7.3f} {r['parse_rate']:7.3f} "
                  f"{r['grammar_iou_mean']:6.3f} {r['grammar_acc_at_0.5']:6.3f} "
                  f"{r['verify_acc']:6.3f} {auc:>6s} {100 * r['verify_yes_rate']:5.0f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.save_every < 1 or args.steps < args.save_every:
        raise SystemExit("--steps must be >= --save-every >= 1")
    started = time.perf_counter()
    apply_recipe_env(RECIPES["multitask"])
    data, truth, notes = prepare_data(args)
    truth_boxes = {k: v["box"] for k, v in truth.items()}
    images = load_test_images(data / "test_multitask.jsonl", data / "rois.jsonl", truth_boxes)

    runs, train_s = {}, {}
    for name in [args.only] if args.only else RECIPES:
        runs[name], train_s[name] = train(name, data, args)
    eval_started = time.perf_counter()
    evaluator = Evaluator(model_dir(args.family), args.family, max_new_tokens=args.max_new_tokens,
                          batch_size=args.eval_batch)
    results = evaluate_runs(evaluator, runs, images, args)
    train_images = load_test_images(data / "train_multitask.jsonl", data / "rois.jsonl",
                                    truth_boxes)[:args.train_images]
    score_on_train = _timed(evaluator, train_images, verify_questions(train_images))
    last = {name: checkpoints(run)[-1] for name, run in runs.items()}
    on_train = {name: {"step": step, "n_images": len(train_images), **score_on_train(ckpt)}
                for name, (step, ckpt) in last.items()} if train_images else {}
    settings = {
        "images": args.images, "steps": args.steps, "save_every": args.save_every, "learning_rate": args.lr,
        "seed": args.seed, "sft_args": sft_args(args), "recipes": {k: str(v.relative_to(ROOT)) for k, v in RECIPES.items()},
        "family": args.family, "model": str(model_dir(args.family).relative_to(ROOT)),
        "init": args.init and str(args.init),
        "per_device_train_batch_size": recipe_setting(RECIPES["multitask"], "per_device_train_batch_size"),
        "modules_to_save": {k: recipe_setting(v, "modules_to_save") for k, v in RECIPES.items()},
        "recipe_env": {k: recipe_setting(v, "ENV") for k, v in RECIPES.items()},
        "tuner_type": recipe_setting(RECIPES["multitask"], "tuner_type"),
        "n_test_images": len(images), "n_verify_questions": len(verify_questions(images)),
        "test_findings": {f: sum(i.finding == f for i in images) for f in sorted({i.finding for i in images})},
        "detector_vs_truth_iou_test": round(sum(box_iou(i.verify_objects["bbox"][0], i.true_box)
                                                for i in images) / len(images), 3),
        "prior_box": prior_box_scores(data, truth_boxes, images),
        "work_dir": str(args.work), **notes,
    }
    report = {
        "settings": settings,
        "wall_time_s": {"total": round(time.perf_counter() - started, 1),
                        "train": {k: v and round(v, 1) for k, v in train_s.items()},
                        "swift_train_runtime": {name: train_runtime(run) for name, run in runs.items()},
                        "eval": round(time.perf_counter() - eval_started, 1)},
        "results": results,
        "last_checkpoint_on_train_images": on_train,
        "training_log": {name: training_log(run) for name, run in runs.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_check.json").write_text(json.dumps(report, indent=1))
    plot(results, settings, report["training_log"], args.out / "learning_check.png")
    print_table(results)
    for name, r in on_train.items():
        print(f"{name} step {r['step']} on {r['n_images']} training images: IoU {r['iou_mean']:.3f}, "
              f"{r['distinct_answers']} distinct locate answers, verify acc {r['verify_acc']:.3f}")
    prior = settings["prior_box"]
    print(f"mean training box on every test image: IoU {prior['iou_mean']:.3f}, Acc@0.5 {prior['acc_at_0.5']:.3f}")
    print(f"\nwall time {report['wall_time_s']}; wrote {args.out / 'learning_check.json'} and "
          f"{args.out / 'learning_check.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
