"""Training throughput of three configurations on the same data, steps and run: stock swift vs ours.

    a. plain `swift sft`: the stock template, the default loss (cross-entropy on every answer token);
    b. our recipe (med template, multi-task loss) with the speed options off;
    c. our recipe with every speed option that applies here: logits only at supervised positions
       (MEDVLM_SUPERVISED_LOGITS), padding_free when flash-attn is installed, liger kernels where
       they compose with the multi-task loss (a GPU with liger-kernel; swift hands our loss the
       logits, so liger's fused cross-entropy never runs), and the batch size a memory probe finds.

Each configuration is a real `swift sft` run of the recipe (`--recipe`), measured by
bench/throughput_plugin.py: samples/s and real (non-pad) tokens/s over the steps after --warmup,
peak memory, and MFU (model FLOPs of the real tokens over the device's peak, see
throughput_plugin.step_flops). The data are the sample converted by `data_prep convert`, images
resized to 512x512 and the diagnose answer lengthened with the row's own caption so each
conversation's answers total a length drawn from 90-260 tokens.

    python bench/train_throughput.py --model models/tiny-qwen2-vl --family qwen2_vl --steps 3   # CPU, tiny
    python bench/train_throughput.py --model models/shape-qwen2-vl-2b --family qwen2_vl          # one GPU

Writes <out>/train_throughput-<name>.json and .md (a table).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swift_logs import nonfinite_grad_steps  # noqa: E402
from medvlm_vocab import get_family  # noqa: E402

PLUGINS = [str(ROOT / "swift_ext" / "plugin.py"), str(ROOT / "bench" / "throughput_plugin.py")]
SAMPLE = ROOT / "data" / "sample" / "medtrinity_sample.parquet"
IMAGE_SIDE = 512
ANSWER_TOKENS = (90, 260)
# bf16 dense peak per GPU (the MFU denominator), by a substring of torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
CONFIGS = ("a", "b", "c")
LABELS = {"a": "plain swift sft (stock template, default loss)", "b": "our recipe, speed options off",
          "c": "our recipe + speed options"}


# --- data ------------------------------------------------------------------------------------------

def convert_sample(source: Path, out: Path) -> Path:
    """The project's converter on the sample (reused when already there)."""
    if not (out / "train_multitask.jsonl").exists():
        subprocess.run([sys.executable, "-m", "data_prep", "convert", "--source", str(source), "--out", str(out),
                        "--workers", "1"], cwd=ROOT, check=True)
    return out / "train_multitask.jsonl"


def captions(source: Path) -> dict[str, str]:
    import pyarrow.parquet as pq
    table = pq.read_table(source, columns=["id", "caption"])
    return dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))


def answer_tokens(template, row: dict) -> int:
    """Supervised tokens of a row as swift encodes it (the answers of all its turns)."""
    encoded = template.encode(row)
    return sum(1 for label in encoded["labels"] if label != -100)


def build_bench_data(rows_path: Path, source: Path, model: Path, family: str, recipe_env: dict, out: Path,
                     seed: int = 0) -> dict:
    """512x512 images (boxes scaled with them) and answers lengthened to 90-260 tokens.

    The diagnose answer gets a `Details:` line cut from the row's MedTrinity caption (repeated when
    one caption is too short), so the text is the row's own. Returns the answer-length statistics.
    """
    out.mkdir(parents=True, exist_ok=True)
    target = out / "train.jsonl"
    stats_path = out / "stats.json"
    if target.exists() and stats_path.exists():
        return json.loads(stats_path.read_text())
    saved = {k: os.environ.get(k) for k in recipe_env}
    os.environ.update({k: str(v) for k, v in recipe_env.items()})  # the template reads its pixel limits here
    try:
        return _write_bench_rows(rows_path, source, model, family, out, target, stats_path, seed)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _write_bench_rows(rows_path: Path, source: Path, model: Path, family: str, out: Path, target: Path,
                      stats_path: Path, seed: int) -> dict:
    from PIL import Image
    from swift import get_processor, get_template

    fam = get_family(family)
    processor = get_processor(str(model), model_type=fam.swift_model_type, download_model=False)
    template = get_template(processor, template_type=fam.swift_template)
    template.set_mode("train")
    tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    text_of = captions(source)
    rng = random.Random(seed)
    (out / "images").mkdir(exist_ok=True)
    lengths = []
    with target.open("w") as f:
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            image = Image.open(row["images"][0]).convert("RGB")
            sx, sy = IMAGE_SIDE / image.width, IMAGE_SIDE / image.height
            path = out / "images" / f"{row['id']}.jpg"
            image.resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC).save(path, quality=92)
            row["images"] = [str(path)]
            if row.get("objects", {}).get("bbox_type") == "real":
                row["objects"]["bbox"] = [[round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)]
                                          for b in row["objects"]["bbox"]]
            goal = rng.randint(*ANSWER_TOKENS)
            words = (text_of.get(row["id"]) or "").split()
            have = answer_tokens(template, {**row, "images": [Image.open(path)]})
            if goal > have and words:
                pool = (words * (1 + 4 * goal // max(1, len(words))))
                need, extra = goal - have, []
                while pool and len(tokenizer.encode("\nDetails: " + " ".join(extra), add_special_tokens=False)) < need:
                    extra.append(pool.pop(0))
                row["messages"][-1]["content"] += "\nDetails: " + " ".join(extra)
            lengths.append(answer_tokens(template, {**row, "images": [Image.open(path)]}))
            f.write(json.dumps(row) + "\n")
    lengths.sort()
    stats = {"rows": len(lengths), "image_side": IMAGE_SIDE, "answer_tokens_min": lengths[0],
             "answer_tokens_median": lengths[len(lengths) // 2], "answer_tokens_max": lengths[-1],
             "answer_tokens_target": list(ANSWER_TOKENS)}
    stats_path.write_text(json.dumps(stats, indent=1))
    return stats


# --- configurations ---------------------------------------------------------------------------------

def speed_options(cuda: bool) -> tuple[dict, dict[str, str]]:
    """Flags of c beyond supervised logits, and why each option left out was left out."""
    flags, skipped = {}, {}
    if cuda and importlib.util.find_spec("flash_attn"):
        flags.update(padding_free=True, attn_impl="flash_attn")
    else:
        skipped["padding_free"] = ("flash-attn is not installed" if cuda else
                                   "needs flash-attn, which needs a CUDA GPU")
    if cuda and importlib.util.find_spec("liger_kernel"):
        flags["use_liger_kernel"] = True
    else:
        skipped["liger"] = "liger-kernel is not installed" if cuda else "liger kernels are Triton GPU kernels"
    return flags, skipped


def derived_recipe(recipe: dict, config: str) -> dict:
    """The recipe as configuration `config` runs it."""
    derived = json.loads(json.dumps(recipe))
    env = derived.setdefault("ENV", {})
    if config == "a":
        derived.pop("loss_type", None)
        derived["modules_to_save"] = [m for m in derived.get("modules_to_save", []) if m != "med_task_uncertainty"]
        if not derived["modules_to_save"]:
            derived.pop("modules_to_save")
        derived["remove_unused_columns"] = True  # the stock template uses no extra columns
        for key in [k for k in env if k.startswith("MEDVLM_")]:
            env.pop(key)
    else:
        env["MEDVLM_SUPERVISED_LOGITS"] = "1" if config == "c" else "0"
    return derived


def run_config(name: str, recipe: dict, flags: dict, work: Path, timeout_s: float) -> tuple[int, Path, Path]:
    """One `swift sft` run; returns (exit code, steps log, output log)."""
    run_dir = work / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    steps_log, out_log = run_dir / "steps.jsonl", run_dir / "swift.log"
    steps_log.unlink(missing_ok=True)
    recipe_path = work / "recipes" / f"{name}.yaml"  # not in output_dir: swift copies the recipe there
    recipe_path.parent.mkdir(exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "swift.cli.main", "sft", str(recipe_path)]  # works where pip --target left no script
    for key, value in flags.items():
        cmd += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    print(f"[{name}] swift sft ... (log: {out_log})", flush=True)
    env = {**os.environ, "MEDVLM_BENCH_LOG": str(steps_log), "PYTHONUNBUFFERED": "1"}
    with out_log.open("w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, steps_log, out_log


def summarize(steps_log: Path, warmup: int, peak_flops: float) -> dict:
    """Throughput over the steps after `warmup` (wall clock between step ends: data, forward,
    backward, optimiser and logging all count), peak memory over the whole run."""
    steps = [json.loads(line) for line in steps_log.read_text().splitlines()] if steps_log.exists() else []
    if len(steps) <= warmup:
        raise ValueError(f"{len(steps)} steps logged, need more than --warmup {warmup}")
    measured = steps[warmup:]
    seconds = measured[-1]["t"] - (steps[warmup - 1]["t"] if warmup else steps[0]["t_first_start"])
    total = {k: sum(s[k] for s in measured) for k in ("samples", "real_tokens", "padded_tokens", "model_flops")}
    gib = 2**30
    return {"steps_measured": len(measured), "seconds": round(seconds, 3),
            "samples_per_s": round(total["samples"] / seconds, 3),
            "real_tokens_per_s": round(total["real_tokens"] / seconds, 1),
            "padded_tokens_per_s": round(total["padded_tokens"] / seconds, 1),
            "pad_share": round(1 - total["real_tokens"] / total["padded_tokens"], 3),
            "peak_mem_gib": round(max(s["peak_mem_bytes"] for s in steps) / gib, 2),
            "peak_reserved_gib": round(max(s["peak_reserved_bytes"] for s in steps) / gib, 2),
            "static_mem_gib": round(steps[0]["static_mem_bytes"] / gib, 2),
            "mfu": round(total["model_flops"] / seconds / peak_flops, 4)}


def failure(rc: int, log: Path) -> dict:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    oom = any("out of memory" in line.lower() or "OutOfMemoryError" in line for line in lines)
    return {"status": "oom" if oom else "timeout" if rc == 124 else "failed", "rc": rc, "error_tail": lines[-15:]}


def probe_batch(per_sample_bytes: float, static_bytes: float, budget_bytes: float, start: int, cap: int) -> int:
    """The largest batch whose predicted peak (static + per-sample x batch) stays within the budget."""
    if per_sample_bytes <= 0:
        return start
    return max(1, min(cap, int((budget_bytes - static_bytes) // per_sample_bytes)))


# --- device -----------------------------------------------------------------------------------------

def device_info(dtype: str) -> dict:
    """The device and its peak FLOP/s: the table for known GPUs, a measured matmul rate on CPU."""
    import torch
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
        memory = torch.cuda.get_device_properties(0).total_memory
        return {"device": name, "cuda": True, "memory_gib": round(memory / 2**30, 1), "peak_tflops": peak,
                "peak_source": "bf16 dense datasheet figure" if peak else "unknown GPU: pass --peak-tflops"}
    # A CPU without bf16 units emulates bf16 matmuls (0.3 GFLOP/s here against 150 in fp32: one 2048^3 bf16
    # matmul takes a minute) while a step's small and mixed-precision kernels need not, so a bf16-only peak
    # gave MFU above 1. The peak is the best rate of either dtype over 3 tries (a shared CPU); bf16 at 512^3.
    sizes = {torch.float32: 2048, **({torch.bfloat16: 512} if dtype == "bfloat16" else {})}
    rate = max(_matmul_rate(dt, n) for dt, n in sizes.items() for _ in range(3))
    cpu = platform.processor() or platform.machine()
    source = "best measured matmul rate in this process, of " + " and ".join(f"{d} {n}^3" for d, n in sizes.items())
    return {"device": f"CPU {cpu} ({os.cpu_count()} cores, shared)", "cuda": False,
            "peak_tflops": round(rate / 1e12, 4), "peak_source": source,
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def _matmul_rate(dt, n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in dtype `dt` on this CPU (after one untimed warm-up)."""
    import torch
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started)


# --- report -----------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    dev = result["device"]
    lines = [f"Training throughput, {result['model_name']} ({result['family']}), {dev['device']}; "
             f"{result['steps']} measured steps after {result['warmup']} warm-up, data: {result['data']['rows']} "
             f"conversations, {IMAGE_SIDE}x{IMAGE_SIDE} images, answers {result['data']['answer_tokens_min']}-"
             f"{result['data']['answer_tokens_max']} tokens. MFU against {dev['peak_tflops']} TFLOP/s "
             f"({dev['peak_source']}).",
             "", "| config | batch | samples/s | real tokens/s | pad share | peak mem (GiB) | MFU | vs a | options |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = result["configs"].get("a", {}).get("samples_per_s")
    for name in CONFIGS:
        c = result["configs"].get(name)
        if c is None:
            continue
        if c.get("status") != "ok":
            lines.append(f"| {name}. {LABELS[name]} | {c.get('batch')} | **{c.get('status')}** | | | | | | |")
            continue
        speed = f"{c['samples_per_s'] / base:.2f}x" if base else ""
        options = ", ".join(c["options"]) or "-"
        if c.get("nonfinite_grad_steps"):
            options += f"; **gradient norm nan/inf at steps {c['nonfinite_grad_steps']}**"
        lines.append(f"| {name}. {LABELS[name]} | {c['batch']} | {c['samples_per_s']} | {c['real_tokens_per_s']} | "
                     f"{c['pad_share']} | {c['peak_mem_gib']} | {c['mfu']:.1%} | {speed} | {options} |")
    skipped = result["configs"].get("c", {}).get("not_applied", {})
    if skipped:
        lines += ["", "Not applied in c: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "."]
    if result.get("overrides"):
        lines += ["", "Overrides of the recipe in every configuration: " +
                  "; ".join(f"{k}={v[0]} ({v[1]})" for k, v in result["overrides"].items()) + "."]
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder (models/tiny-*, models/shape-*)")
    p.add_argument("--family", default="qwen2_vl")
    p.add_argument("--recipe", type=Path, help="SFT recipe (default: the family's 2B/3B GPU recipe)")
    p.add_argument("--source", type=Path, default=SAMPLE, help="25M_demo parquet to convert (captions too)")
    p.add_argument("--steps", type=int, default=10, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="steps run before measuring")
    p.add_argument("--batch", type=int, help="batch of a and b and the probe's start (default: the recipe's)")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--probe", choices=("on", "off"), default="on", help="c's batch from a memory probe")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--mem-budget-gib", type=float,
                   help="memory c may use (default: 85%% of the GPU; on CPU 8 GiB)")
    p.add_argument("--peak-tflops", type=float, help="override the MFU denominator")
    p.add_argument("--work", type=Path, default=Path("/tmp/medvlm-throughput"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--name", help="result file suffix (default: device kind + model folder name)")
    p.add_argument("--timeout-min", type=float, default=30, help="per swift run")
    return p


DEFAULT_RECIPES = {"qwen2_vl": "recipes/sft/qwen2-vl-2b.yaml", "qwen2_5_vl": "recipes/sft/qwen2.5-vl-3b.yaml",
                   "qwen3_vl": "recipes/sft/qwen3-vl-2b.yaml"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe_path = args.recipe or ROOT / DEFAULT_RECIPES[args.family]
    recipe = yaml.safe_load(recipe_path.read_text())
    dev = device_info(recipe.get("torch_dtype", "bfloat16"))
    if args.peak_tflops:
        dev.update(peak_tflops=args.peak_tflops, peak_source="--peak-tflops")
    peak_flops = (dev["peak_tflops"] or float("nan")) * 1e12
    cuda = dev["cuda"]
    work = args.work.resolve()
    fam = get_family(args.family)

    rows = convert_sample(args.source, work / "converted")
    data = build_bench_data(rows, args.source, args.model, args.family, recipe.get("ENV", {}), work / "bench-data")
    steps = args.warmup + args.steps
    batch = args.batch or recipe["per_device_train_batch_size"]
    # Overrides of the recipe shared by a, b and c (recorded in the result).
    overrides = {"max_steps": (steps, "warm-up + measured steps"),
                 "gradient_accumulation_steps": (1, "one micro-batch per step, so each step is measured"),
                 "save_strategy": ("no", "a bench saves nothing"), "eval_strategy": ("no", "training only"),
                 "split_dataset_ratio": (0, "every row trains"), "logging_steps": (1, "log each step"),
                 "report_to": ("none", "no TensorBoard writes in the timed loop")}
    if not cuda:
        overrides.update(use_cpu=("true", "bf16 on CPU (transformers autocasts)"),
                         dataloader_num_workers=(1, "2 shared CPU cores"), dataset_num_proc=(1, "2 shared CPU cores"))
    common = {k: v for k, (v, _) in overrides.items()} | {
        "model": str(args.model.resolve()), "dataset": str(work / "bench-data" / "train.jsonl"),
        "external_plugins": PLUGINS}
    result = {"model": str(args.model), "model_name": args.model.name, "family": args.family,
              "recipe": str(recipe_path), "device": dev, "data": data, "steps": args.steps, "warmup": args.warmup,
              "overrides": overrides, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "configs": {}}
    name = args.name or f"{'gpu' if cuda else 'cpu'}-{args.model.name}"
    out_json, out_md = args.out / f"train_throughput-{name}.json", args.out / f"train_throughput-{name}.md"
    args.out.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout_min * 60

    def save() -> None:
        out_json.write_text(json.dumps(result, indent=1) + "\n")
        out_md.write_text(markdown(result))

    for config in args.configs.split(","):
        flags = common | {"model_type": fam.swift_model_type if config == "a" else f"med_{fam.swift_model_type}",
                          "template": fam.swift_template if config == "a" else f"med_{fam.swift_template}",
                          "per_device_train_batch_size": batch, "output_dir": str(work / "runs" / config)}
        entry: dict = {"label": LABELS[config], "options": [], "batch": batch}
        if config == "c":
            extra, skipped = speed_options(cuda)
            flags |= extra
            entry["options"] = ["supervised logits"] + [k for k in ("padding_free", "use_liger_kernel") if k in extra]
            entry["not_applied"] = skipped
            if args.probe == "on":
                budget = (args.mem_budget_gib * 2**30 if args.mem_budget_gib else
                          0.85 * dev["memory_gib"] * 2**30 if cuda else 8 * 2**30)
                rc, log, out = run_config("c-probe", derived_recipe(recipe, "c"), flags | {"max_steps": 2}, work,
                                          timeout)
                if rc != 0 or not log.exists():
                    entry.update(probe=failure(rc, out))
                else:
                    probe = [json.loads(line) for line in log.read_text().splitlines()]
                    static = probe[0]["static_mem_bytes"]
                    peak = max(s["peak_mem_bytes"] for s in probe)
                    per_sample = (peak - static) / batch
                    chosen = probe_batch(per_sample, static, budget, batch, args.max_batch)
                    gib = 2**30
                    entry["probe"] = {"start_batch": batch, "static_gib": round(static / gib, 2),
                                      "peak_gib": round(peak / gib, 2), "per_sample_gib": round(per_sample / gib, 3),
                                      "budget_gib": round(budget / gib, 1), "batch": chosen}
                    flags["per_device_train_batch_size"] = entry["batch"] = chosen
                    entry["options"].append(f"probed batch {chosen}")
        rc, log, out = run_config(config, derived_recipe(recipe, config), flags, work, timeout)
        while rc != 0 and config == "c" and len(entry.setdefault("retries", [])) < 3:
            # One lease, no second chance: an option that breaks is dropped and c runs again.
            failed = {"batch": entry["batch"], "options": list(entry["options"]), **failure(rc, out)}
            entry["retries"].append(failed)
            if failed["status"] == "oom" and entry["batch"] > batch:
                flags["per_device_train_batch_size"] = entry["batch"] = max(batch, entry["batch"] // 2)
            elif flags.pop("use_liger_kernel", None):
                entry["options"].remove("use_liger_kernel")
                entry["not_applied"]["liger"] = f"failed with this recipe: {failed['error_tail'][-1:]}"
            elif flags.pop("padding_free", None):
                flags.pop("attn_impl", None)
                entry["options"].remove("padding_free")
                entry["not_applied"]["padding_free"] = f"failed with this recipe: {failed['error_tail'][-1:]}"
            else:
                break
            rc, log, out = run_config(config, derived_recipe(recipe, config), flags, work, timeout)
        if not entry.get("retries"):
            entry.pop("retries", None)
        if rc == 0:
            entry.update(status="ok", **summarize(log, args.warmup, peak_flops))
            if bad := nonfinite_grad_steps(out):  # timed and measured, but not training
                entry["nonfinite_grad_steps"] = bad
        else:
            entry.update(failure(rc, out))
        result["configs"][config] = entry
        save()
        print(f"[{config}] {entry.get('status')}: {entry.get('samples_per_s')} samples/s, "
              f"{entry.get('real_tokens_per_s')} real tokens/s, peak {entry.get('peak_mem_gib')} GiB", flush=True)
    print(out_md.read_text())
    return 0 if all(c.get("status") == "ok" and not c.get("nonfinite_grad_steps")
                    for c in result["configs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
