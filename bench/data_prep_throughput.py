"""Throughput and memory of `python -m data_prep convert` on a generated 25M_demo-schema stream.

Not a test: run it by hand. Generates a parquet of --rows rows (512x512 JPEGs with green boxes;
--distinct real renders repeated under new ids, so generation is quick), runs convert in a
subprocess with --workers workers, samples the resident memory of the whole process tree
(main + workers) every 0.2 s, and prints images/s end to end and the peak RSS.

    python bench/data_prep_throughput.py                 # 200k rows, 2 workers (the target run)
    python bench/data_prep_throughput.py --rows 20000    # quicker iteration

Targets on the 2-core CPU machine: >= 300 images/s end to end, < 2 GiB peak RSS on 200k rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep.synth import synthetic_row, write_demo_parquet  # noqa: E402


def generate(path: Path, rows: int, distinct: int, seed: int = 0) -> float:
    """Write the benchmark parquet (reused when it already has `rows` rows); returns seconds spent."""
    import pyarrow.parquet as pq
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return 0.0
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    base = [synthetic_row(rng, k) for k in range(distinct)]
    stream = ({**base[k % distinct], "id": f"bench{k:07d}"} for k in range(rows))
    write_demo_parquet(path, stream, row_group=5000, repeated_images=True)
    return time.perf_counter() - t


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (shared pages counted per process)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def drop_committed_images(out: Path, seen: set[str]) -> None:
    """Delete the images of newly committed shards, so a 200k-row run does not need ~8 GB of disk.

    Runs in the benchmark process, so it shares the cores with convert: figures err on the slow side.
    """
    shards = out / "shards"
    if not shards.is_dir():
        return
    for d in sorted(shards.iterdir()):
        if d.name.isdigit() and d.name not in seen and d.is_dir():
            seen.add(d.name)
            for split in ("train", "val", "test"):
                for line in (d / f"{split}.jsonl").read_text().splitlines():
                    for image in json.loads(line)["images"]:
                        Path(image).unlink(missing_ok=True)


def run_convert(source: Path, out: Path, workers: int, extra: list[str], keep_images: bool) -> dict:
    cmd = [sys.executable, "-m", "data_prep", "convert", "--source", str(source), "--out", str(out),
           "--workers", str(workers), "--overwrite", *extra]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(out.parent / "convert.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=log)
        ps = psutil.Process(proc.pid)
        peak, loads, seen = 0, [], set()
        while proc.poll() is None:
            peak = max(peak, tree_rss(ps))
            loads.append(os.getloadavg()[0])
            if not keep_images and len(loads) % 10 == 0:
                drop_committed_images(out, seen)
            time.sleep(0.2)
    wall = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"convert failed ({proc.returncode}): see {out.parent / 'convert.log'}")
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"wall_s": wall, "peak_rss": peak, "cpu_s": cpu, "load_avg": sum(loads) / max(1, len(loads))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--distinct", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvlm-bench"), help="scratch folder")
    ap.add_argument("--keep", action="store_true",
                    help="keep the converted output, images included (by default images are deleted as "
                         "their shard commits: a 200k run would otherwise need ~8 GB)")
    ap.add_argument("--min-free-gb", type=float, default=3.0, help="refuse to start with less free disk")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("convert_args", nargs="*", help="extra convert flags, after --")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(args.work).free / 1e9
    if free_gb < args.min_free_gb:
        raise SystemExit(f"only {free_gb:.1f} GB free under {args.work}; need {args.min_free_gb} GB (--min-free-gb)")
    source = args.work / f"stream-{args.rows}.parquet"
    gen_s = generate(source, args.rows, args.distinct)
    out = args.work / "out"
    res = run_convert(source, out, args.workers, args.convert_args, args.keep)
    rep = json.loads((out / "report.json").read_text())
    figures = {
        "rows": args.rows, "workers": args.workers, "cpus": psutil.cpu_count(),
        "input_gb": round(source.stat().st_size / 1e9, 2), "generate_s": round(gen_s, 1),
        "wall_s": round(res["wall_s"], 1),
        "images_per_s_end_to_end": round(args.rows / res["wall_s"], 1),
        "images_per_s_convert_loop": rep["throughput"]["images_per_s"],
        "peak_rss_gib": round(res["peak_rss"] / 2**30, 3),
        "cpu_ms_per_image": round(1000 * res["cpu_s"] / args.rows, 2),
        "images_per_s_if_cores_were_free": round(psutil.cpu_count() * args.rows / res["cpu_s"], 1),
        "mean_load_avg_during_run": round(res["load_avg"], 2),
        "images": rep["totals"]["images"], "task_rows": rep["totals"]["rows"],
        "skipped": rep["totals"]["skipped"], "images_written": rep["images_written"],
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
