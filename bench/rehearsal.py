"""Real-shape CPU rehearsal: the whole chain (sft -> dpo -> merge -> serve -> eval) on a random-weight
checkpoint at a published Qwen-VL shape, with that family's GPU recipe. Not a test: a bench.

The GPU recipes had never loaded a model of their real size. This runs each make target as a user
would, one stage at a time, and records wall time, peak memory and any failure per stage in
bench/results/rehearsal.json (after every stage, so an interrupted run keeps what it measured).
Only what the CPU requires is overridden, and every override is recorded with its reason.

    python bench/rehearsal.py --shape qwen2-vl-2b              # all stages
    python bench/rehearsal.py --shape qwen2-vl-2b --stages serve,eval,stop
    python bench/rehearsal.py --table                          # markdown table of the JSON

CPU seconds (user + system, summed over the processes, to their last sample) are recorded next
to the wall time: on this shared machine the wall time mostly measures what else runs. Memory is
sampled every second over the process tree (and, while serving, the server's process
groups): the peak of the summed PSS (shared pages split between the processes that map them, so
forked dataloader workers and vLLM's processes are not double-counted), of the summed RSS (an upper
bound), and of the largest single process's RSS (the trainer itself).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swift_logs import nonfinite_grad_steps  # noqa: E402
from checkpoints.shapes import load_shape  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "rehearsal.json"
STAGES = ("data", "build", "sft", "dpo", "merge", "serve", "eval", "stop")
SFT_STEPS, DPO_STEPS, EVAL_IMAGES = 2, 1, 2  # 2 test images: locate, verify, diagnose each, + held-out negatives
GPU_SFT_RECIPE_KEYS = ("max_length", "torch_dtype", "bf16", "attn_impl", "gradient_checkpointing")

# What each stage changes from the GPU recipes, and why; recorded next to the figures.
SFT_OVERRIDES = {
    "per_device_train_batch_size": (1, "the issue's rehearsal setting: batch 1"),
    "gradient_accumulation_steps": (1, "2 steps of one sample each"),
    "max_steps": (SFT_STEPS, "2 steps"),
    "save_steps": (SFT_STEPS, "save the adapter DPO continues from"),
    "logging_steps": (1, "a log line per step"),
    "dataloader_num_workers": (1, "2 shared cores; 8 forked workers only add memory"),
    "dataset_num_proc": (1, "2 shared cores"),
    "use_cpu": ("true", "transformers refuses bf16 without a GPU unless told to train on CPU (then it autocasts)"),
}
DPO_OVERRIDES = {
    "torch_dtype": ("bfloat16", "tiny DPO recipe is float32: a float32 2B model does not fit the 10 GiB budget"),
    "bf16": (True, "as torch_dtype"),
    "gradient_checkpointing": (True, "as the GPU SFT recipes, for memory"),
    "max_length": (None, "the SFT recipe's max_length (set per shape)"),
    "max_steps": (DPO_STEPS, "1 step"),
    "warmup_ratio": (0, "one step: inside the recipe's warm-up its learning rate would be 0, and the policy would not move"),
    "per_device_train_batch_size": (1, "batch 1"),
    "per_device_eval_batch_size": (1, "batch 1"),
    "eval_steps": (DPO_STEPS, "evaluate after the last step as well as at the start"),
    "save_steps": (DPO_STEPS, "save the adapter merge folds in"),
    "use_cpu": (True, "as for sft: bf16 on CPU"),
    "ENV": (None, "the SFT recipe's pixel limits (set per shape)"),
}
SERVE_OVERRIDES = {
    "vllm_enforce_eager": (True, "no CUDA graphs on CPU (as recipes/serve/tiny-cpu.yaml)"),
    "ENV.VLLM_CPU_KVCACHE_SPACE": ("1", "GiB of KV cache on CPU: 8192 tokens fit, and the 10 GiB budget holds"),
}
VAL_PAIRS = 2  # held-out DPO pairs: evaluating all of them twice at 2B scale on one core takes too long


def machine_state() -> dict:
    return {"load_avg_1min": round(os.getloadavg()[0], 2),
            "mem_available_gib": round(psutil.virtual_memory().available / 2**30, 1)}


class PeakRss:
    """Samples the summed RSS of a process tree (plus extra process groups) every `period` s."""

    def __init__(self, root: psutil.Process, pgid_file: Path | None, period: float = 1.0):
        self.root, self.pgid_file, self.period = root, pgid_file, period
        self.peak = self.peak_rss_sum = self.peak_largest = 0  # PSS sum, RSS sum, largest process's RSS
        self.cpu_s: dict[tuple[int, float], float] = {}  # CPU seconds of each process in this stage
        self.cpu_base: dict[tuple[int, float], float] = {}
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> set[int]:
        pids = set()
        try:
            pids |= {self.root.pid, *(c.pid for c in self.root.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
        if self.pgid_file and self.pgid_file.exists():
            try:
                groups = set(json.loads(self.pgid_file.read_text())["pgids"])
            except (ValueError, KeyError, OSError):
                groups = set()
            for p in psutil.process_iter():
                try:
                    if os.getpgid(p.pid) in groups:
                        pids.add(p.pid)
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue
        return pids

    def sample(self) -> None:
        rss = pss = largest = 0
        for pid in self._pids():
            try:
                proc = psutil.Process(pid)
                info = proc.memory_full_info()
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            key, used = (pid, proc.create_time()), times.user + times.system
            # A process older than the stage (the server, during eval) counts from its first sample.
            self.cpu_base.setdefault(key, used if key[1] < self.started else 0.0)
            self.cpu_s[key] = used - self.cpu_base[key]
            rss, pss, largest = rss + info.rss, pss + info.pss, max(largest, info.rss)
        self.peak = max(self.peak, pss)
        self.peak_rss_sum = max(self.peak_rss_sum, rss)
        self.peak_largest = max(self.peak_largest, largest)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(cmd: list[str], log: Path, timeout_s: float, pgid_file: Path | None = None) -> dict:
    """Run one stage's command; wall time, peak RSS of everything it started, exit status, log tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}\n  log: {log}", flush=True)
    before = machine_state()
    started = time.perf_counter()
    with log.open("w") as out:
        # Its own process group, so a timeout stops swift's launcher and the trainer it started.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with PeakRss(psutil.Process(proc.pid), pgid_file) as rss:
            try:
                rc = proc.wait(timeout=timeout_s)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rss.sample()
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                    time.sleep(5)
                rc, status = proc.wait(), "timeout"
            rss.sample()  # a server left running by this stage is counted too
    wall = time.perf_counter() - started
    gib = 2**30
    result = {"status": status, "rc": rc, "wall_s": round(wall, 1), "peak_pss_gib": round(rss.peak / gib, 2),
              "peak_rss_sum_gib": round(rss.peak_rss_sum / gib, 2),
              "peak_largest_rss_gib": round(rss.peak_largest / gib, 2),
              "cpu_s": round(sum(rss.cpu_s.values()), 1),
              "command": " ".join(cmd), "log": str(log), "machine_before": before, "machine_after": machine_state()}
    if status == "timeout":
        result["reason"] = (f"stopped after the {timeout_s / 60:.0f}-minute limit: its processes got "
                            f"{result['cpu_s'] / 60:.1f} CPU-minutes in {wall / 60:.0f} minutes (load average "
                            f"{before['load_avg_1min']} -> {result['machine_after']['load_avg_1min']} on "
                            f"{os.cpu_count()} cores: the machine's other jobs run at normal priority, these at "
                            "nice 19)")
    if status != "ok":
        result["error_tail"] = log.read_text(errors="replace").splitlines()[-25:]
    print(f"  -> {status} in {wall:.0f} s, peak PSS {rss.peak / gib:.2f} GiB (largest process "
          f"{rss.peak_largest / gib:.2f} GiB RSS)", flush=True)
    return result


def check_gradients(result: dict) -> None:
    """Mark a finished stage whose log shows a non-finite gradient norm (its exit status says ok)."""
    log = Path(result["log"])
    bad = nonfinite_grad_steps(log) if result["status"] == "ok" and log.exists() else []
    if bad:
        result["status"] = "nonfinite-grad"
        result["reason"] = f"the run finished, but the gradient norm was nan/inf at logged step(s) {bad}"


def derived_recipe(base: Path, overrides: dict, target: Path) -> Path:
    """A copy of `base` with `overrides` (nested keys as 'A.B') applied, written to `target`."""
    recipe = yaml.safe_load(base.read_text())
    for key, value in overrides.items():
        node = recipe
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return target


def stage_plan(shape_name: str, work: Path, port: int, merge_from: str = "dpo",
               serve_wait_s: int = 900) -> dict[str, dict]:
    """The make command of each stage, with its variables and recorded overrides."""
    shape = load_shape(shape_name)
    family = shape["family"]
    sft_recipe = ROOT / shape["recipe"]
    sft = yaml.safe_load(sft_recipe.read_text())
    data, run = work / "data", work / shape_name
    model = work / "models" / f"shape-{shape_name}"
    sft_out, dpo_out, merged, state = run / "sft", run / "dpo", run / "merged", run / "serve"
    pixel_env = {k: sft["ENV"][k] for k in ("MAX_PIXELS", "IMAGE_MAX_TOKEN_NUM")}
    dpo_values = {k: v for k, (v, _) in DPO_OVERRIDES.items() if v is not None}
    dpo_values.update(max_length=sft["max_length"], ENV=pixel_env)
    dpo_recipe = derived_recipe(ROOT / "recipes/dpo/tiny-cpu.yaml", dpo_values, run / "dpo-recipe.yaml")
    serve_recipe = derived_recipe(ROOT / "recipes/serve/gpu.yaml", {k: v for k, (v, _) in SERVE_OVERRIDES.items()},
                                  run / "serve-recipe.yaml")
    val_pairs = run / "pairs-val.jsonl"
    merge_adapter = dpo_out if merge_from == "dpo" else sft_out
    common = [f"MODEL={model}", f"FAMILY={family}", f"DATA={data}", f"OUTPUT={sft_out}", f"DPO_OUTPUT={dpo_out}",
              f"MERGED={merged}", f"SERVE_STATE={state}", f"PORT={port}", f"SERVE_RECIPE={serve_recipe}"]
    sft_args = " ".join(f"--{k} {v}" for k, (v, _) in SFT_OVERRIDES.items())
    make = ["make", "--no-print-directory"]
    why = {k: w for k, (_, w) in SFT_OVERRIDES.items()}
    return {
        "data": {"cmd": make + ["data", f"DATA={data}"], "overrides": {}},
        "build": {"cmd": [sys.executable, "-m", "checkpoints.shapes", "--shape", shape_name,
                          "--out", str(model.parent)], "overrides": {}},
        "sft": {"cmd": make + ["sft", *common, f"RECIPE={sft_recipe}", f"SFT_ARGS={sft_args}"],
                "overrides": why, "recipe": str(sft_recipe.relative_to(ROOT)),
                "recipe_values": {k: sft.get(k) for k in GPU_SFT_RECIPE_KEYS} | pixel_env},
        "dpo": {"cmd": make + ["dpo", *common, f"DPO_RECIPE={dpo_recipe}", f"PAIRS_VAL={val_pairs}"],
                "overrides": {k: w for k, (_, w) in DPO_OVERRIDES.items()} | {
                    "PAIRS_VAL": f"the first {VAL_PAIRS} held-out pairs"},
                "recipe": "recipes/dpo/tiny-cpu.yaml (no GPU DPO recipe exists)", "prepare": ("val_pairs", val_pairs)},
        "merge": {"cmd": make + ["merge", *common, f"ADAPTER={merge_adapter}/last-checkpoint"],
                  "overrides": {} if merge_from == "dpo" else {
                      "ADAPTER": "the SFT adapter: the DPO stage did not finish (see dpo)"}},
        "serve": {"cmd": make + ["serve", *common, f"SERVE_MODEL={merged}", f"SERVE_TIMEOUT={serve_wait_s}"],
                  "overrides": {k: w for k, (_, w) in SERVE_OVERRIDES.items()} | {
                      "SERVE_TIMEOUT": "wait for the server as long as the stage may run"},
                  "recipe": "recipes/serve/gpu.yaml",
                  "pgid_file": state / "server.json"},
        "eval": {"cmd": make + ["eval", *common, f"EVAL_URL=http://127.0.0.1:{port}", f"EVAL_LIMIT={EVAL_IMAGES}",
                                f"EVAL_OUT={run / 'eval'}"],
                 "overrides": {"EVAL_LIMIT": f"{EVAL_IMAGES} test image(s): locate, verify, diagnose and held-out "
                                             "negatives; every answer decoded on one shared CPU core"},
                 "pgid_file": state / "server.json"},
        "stop": {"cmd": make + ["stop", *common], "overrides": {}},
    }


def write_val_pairs(data: Path, target: Path) -> None:
    """The first VAL_PAIRS held-out pairs (`make dpo` builds DATA/pairs/val.jsonl on demand)."""
    source = data / "pairs" / "val.jsonl"
    if not source.exists():
        subprocess.run(["make", "--no-print-directory", f"DATA={data}", str(source)], cwd=ROOT, check=True)
    lines = [line for line in source.read_text().splitlines() if line.strip()][:VAL_PAIRS]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"shapes": {}}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def markdown_table(results: dict) -> str:
    """One row per shape and stage: status, wall and CPU time, memory, machine load."""
    lines = ["| shape | stage | status | wall | CPU | peak PSS, all processes (GiB) | largest process RSS (GiB) "
             "| load avg before -> after |", "|---|---|---|---|---|---|---|---|"]
    for shape, entry in results["shapes"].items():
        for stage in STAGES:
            r = entry["stages"].get(stage)
            if r is None:
                continue
            load = f"{r['machine_before']['load_avg_1min']} -> {r['machine_after']['load_avg_1min']}"
            status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r.get('reason', 'see JSON')}"
            pss = r.get("peak_pss_gib", f"{r.get('peak_rss_gib')} (RSS sum)")
            lines.append(f"| {shape} | {stage} | {status} | {minutes(r['wall_s'])} | {minutes(r.get('cpu_s'))} | {pss} "
                         f"| {r.get('peak_largest_rss_gib', '-')} | {load} |")
    earlier = [(shape, a) for shape, entry in results["shapes"].items() for a in entry.get("earlier_attempts", [])]
    if earlier:
        lines += ["", "Earlier attempts, rerun above:"]
        lines += [f"- {shape} {a['stage']}: {a['status']} after {minutes(a['wall_s'])}"
                  f"{': ' + a['reason'] if a.get('reason') else ''}" for shape, a in earlier]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", help="a recipes/shapes/*.yaml name")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--work", type=Path, default=Path("/tmp/medvlm-rehearsal"), help="data, checkpoints, logs")
    p.add_argument("--port", type=int, default=18431, help="gateway port of the rehearsal server")
    p.add_argument("--timeout-min", type=float, default=60, help="a stage running longer is recorded as a timeout")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the markdown table of --results and exit")
    p.add_argument("--recheck-logs", action="store_true",
                   help="apply the finite-gradient check to every recorded stage's log, then exit")
    p.add_argument("--merge-from", choices=("dpo", "sft"), default="dpo",
                   help="the adapter `make merge` folds in (sft when the DPO stage could not finish)")
    args = p.parse_args(argv)
    results = load_results(args.results)
    if args.table:
        print(markdown_table(results))
        return 0
    if args.recheck_logs:
        for entry in results["shapes"].values():
            for result in entry["stages"].values():
                check_gradients(result)
        save_results(args.results, results)
        return 0
    if not args.shape:
        p.error("--shape is required")
    plan = stage_plan(args.shape, args.work.resolve(), args.port, args.merge_from,
                      int(args.timeout_min * 60) - 60)
    entry = results["shapes"].setdefault(args.shape, {"stages": {}})
    entry["machine"] = {"nproc": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                        "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
                        "note": "shared with other jobs; all stages run under nice -n 19"}
    failed = problems = False
    for stage in args.stages.split(","):
        step = plan[stage]
        if failed and stage != "stop":
            print(f"skip {stage}: an earlier stage failed")
            continue
        if step.get("prepare"):
            write_val_pairs(args.work.resolve() / "data", step["prepare"][1])
        result = run_stage(step["cmd"], args.work.resolve() / args.shape / "logs" / f"{stage}.log",
                           args.timeout_min * 60, step.get("pgid_file"))
        result["overrides"] = step["overrides"]
        check_gradients(result)
        for key in ("recipe", "recipe_values"):
            if key in step:
                result[key] = step[key]
        earlier = entry["stages"].get(stage)
        if earlier and earlier["status"] != "ok":  # a failure stays on record when the stage is rerun
            entry.setdefault("earlier_attempts", []).append({"stage": stage, **earlier})
        entry["stages"][stage] = result
        save_results(args.results, results)
        failed = failed or result["status"] in ("failed", "timeout")  # a later stage still runs on a NaN step
        problems = problems or result["status"] != "ok"
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
