"""Logits only where the loss reads them: s/step and peak RSS of `make sft` on the tiny default, three ways.

    python bench/logits_bench.py [--steps 30 --out bench/results]

1. full: every position gets its 151,936-wide logits (swift's `--use_logits_to_keep false`, ours off);
2. swift: swift's own `use_logits_to_keep` (a suffix from the batch's earliest answer; ours off);
3. medvlm: the supervised (row, position) pairs alone (swift_ext.logit_positions, the default).
Each recipe in turn (multi-task tiny-cpu.yaml and plain SFT plain-tiny-cpu.yaml) on the bundled sample.
s/step is the time from step WARMUP to the last step over those steps, from swift's logging.jsonl
(elapsed_time has whole seconds, so the figure is +- 1 s over the steps; the first steps also load
and encode the first batches, about a minute on this machine); peak RSS is the training process
tree's, polled every 0.2 s.
It also counts, on the sample's training batches, how many positions each way computes, and from
that the logit memory one batch would need at the Qwen2-VL-2B GPU recipe's settings (computed, not
measured: no GPU here).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = {  # name -> (swift's use_logits_to_keep, MEDVLM_SUPERVISED_LOGITS)
    "full": ("false", "0"),
    "swift": ("true", "0"),
    "medvlm": ("true", "1"),
}
RECIPES = {"multitask": "recipes/sft/tiny-cpu.yaml", "plain": "recipes/sft/plain-tiny-cpu.yaml"}
GPU_RECIPE = ROOT / "recipes/sft/qwen2-vl-2b.yaml"
VOCAB = 151936
WARMUP = 10  # steps left out of s/step


def run_sft(recipe: str, mode: str, steps: int, data: Path, out: Path) -> dict:
    """One `make sft` run; returns mean s/step after warm-up and the process tree's peak RSS."""
    use_keep, ours = MODES[mode]
    shutil.rmtree(out, ignore_errors=True)  # swift appends to an existing logging.jsonl
    args = (f"--max_steps {steps} --logging_steps 1 --save_steps {steps + 1} --use_logits_to_keep {use_keep} "
            f"--save_strategy no")
    env = {**os.environ, "MEDVLM_SUPERVISED_LOGITS": ours, "PYTHONUNBUFFERED": "1"}
    cmd = ["make", "sft", f"RECIPE={recipe}", f"DATA={data}", f"OUTPUT={out}", f"SFT_ARGS={args}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode})")
    rows = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    elapsed = [_seconds(r["elapsed_time"]) for r in rows if "loss" in r and "elapsed_time" in r]
    runtime = next(float(r["train_runtime"]) for r in rows if "train_runtime" in r)
    return {"s_per_step": round((elapsed[-1] - elapsed[WARMUP - 1]) / (steps - WARMUP), 3),
            "resolution_s_per_step": round(1 / (steps - WARMUP), 3),
            "train_runtime_s": runtime, "peak_rss_gib": round(peak / 2**30, 2)}


def _seconds(text: str) -> float:
    """swift's elapsed_time ('1m 5s', '58s', '1h 2m 3s'), whole seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(part[:-1]) * units[part[-1]] for part in text.split()))


def position_counts(data: Path, batch: int) -> dict:
    """Positions per training batch of the sample that each mode puts through the LM head."""
    import torch

    import swift_ext.plugin  # noqa: F401
    from swift import get_model_processor, get_template
    from swift_ext.logit_positions import supervised_logit_positions

    _, processor = get_model_processor(str(ROOT / "models/tiny-qwen2-vl"), model_type="med_qwen2_vl",
                                       load_model=False)
    template = get_template(processor, template_type="med_qwen2_vl")
    template.set_mode("train")
    rows = [json.loads(line) for line in (data / "train_multitask.jsonl").read_text().splitlines()]
    totals = {"full": 0, "swift": 0, "medvlm": 0, "supervised": 0, "tokens": 0}
    for start in range(0, len(rows) - batch + 1, batch):
        labels = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(template.encode(r)["labels"]) for r in rows[start:start + batch]],
            batch_first=True, padding_value=-100)
        first = int((labels != -100).int().argmax(-1).min())
        totals["full"] += labels.numel()
        totals["swift"] += labels.shape[0] * (labels.shape[1] - first + 1)
        totals["medvlm"] += len(supervised_logit_positions(labels)[0])
        totals["supervised"] += int((labels != -100).sum())
    return totals


def gpu_logit_memory(counts: dict) -> dict:
    """Logit bytes of one micro-batch at the GPU recipe's max_length and batch, scaled by the sample's
    share of positions each mode keeps (bf16 logits + the float32 copy cross-entropy makes)."""
    recipe = yaml.safe_load(GPU_RECIPE.read_text())
    positions = recipe["per_device_train_batch_size"] * recipe["max_length"]
    per_position = VOCAB * (2 + 4)
    gib = {mode: round(positions * counts[mode] / counts["full"] * per_position / 2**30, 2)
           for mode in ("full", "swift", "medvlm")}
    return {"label": "computed from the sample's position shares, not measured",
            "recipe": str(GPU_RECIPE.relative_to(ROOT)), "positions_per_batch": positions,
            "bytes_per_position": per_position, "logit_gib": gib,
            "saved_vs_full_gib": round(gib["full"] - gib["medvlm"], 2),
            "saved_vs_swift_gib": round(gib["swift"] - gib["medvlm"], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--data", type=Path, default=ROOT / "output/data")
    p.add_argument("--work", type=Path, default=Path("/tmp/medvlm-logits-bench"))
    p.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = p.parse_args(argv)
    if not (args.data / "train_multitask.jsonl").exists():
        subprocess.run(["make", "data", f"DATA={args.data}"], cwd=ROOT, check=True)
    counts = position_counts(args.data, batch=4)
    results: dict = {}
    for recipe_name, recipe in RECIPES.items():
        for mode in MODES:
            results.setdefault(recipe_name, {})[mode] = run_sft(recipe, mode, args.steps, args.data,
                                                                 args.work / f"{recipe_name}-{mode}")
            print(recipe_name, mode, results[recipe_name][mode], flush=True)
        timing = results[recipe_name]
        timing["speedup_vs_full"] = round(timing["full"]["s_per_step"] / timing["medvlm"]["s_per_step"], 2)
        timing["speedup_vs_swift"] = round(timing["swift"]["s_per_step"] / timing["medvlm"]["s_per_step"], 2)
    report = {"steps": args.steps, "cpu_count": os.cpu_count(), "positions_per_epoch": counts,
              "timing": results, "gpu_qwen2_vl_2b": gpu_logit_memory(counts)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logits_bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
