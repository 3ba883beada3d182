"""Throughput and memory of `python -m data_prep convert` on a generated 25M_demo-schema stream.

Not a test: run it by hand. Generates a parquet of --rows rows (512x512 JPEGs with green boxes;
--distinct real renders repeated under new ids, so generation is quick), runs convert in a
subprocess with --workers workers, samples the resident memory and CPU time of the whole process
tree (main + workers) every 0.2 s, and prints images/s end to end, the peak RSS and the load
average. On a shared machine wall-clock figures depend on what else runs, so the CPU time per
image (and the rate it allows on free cores) is reported too, with the CPU ms of each stage of
process_record measured in this process (--stage-rows).

    python bench/data_prep_throughput.py                 # 200k rows, 2 workers (the target run)
    python bench/data_prep_throughput.py --rows 10000    # quicker iteration

Figures go to bench/results/data_prep_throughput.json (one entry per --rows; --json elsewhere).
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

RESULTS = ROOT / "bench" / "results" / "data_prep_throughput.json"


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


def tree_rss(proc: psutil.Process, cpu: dict[int, float]) -> int:
    """Resident bytes of a process and all its descendants (shared pages counted per process);
    records each one's CPU seconds so far in `cpu` (pid -> seconds)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
            t = p.cpu_times()
            cpu[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return total


def load_1min() -> float:
    """The 1-minute load average (/proc/loadavg): how busy the machine was besides this run."""
    return os.getloadavg()[0]


def stage_ms(rows: list[dict], out: Path) -> dict[str, float]:
    """CPU ms per image of each stage of process.process_record, in this process, one thread.

    The stages are timed by calling the functions process_record calls, in its order; "rest" is
    what process_record costs beyond them (caption parsing, task rows, writing the file). The
    image folders exist beforehand, as they do all but at the very start of a long run.
    Process CPU time, so what else runs on the machine matters little.
    """
    from data_prep import images, process
    from data_prep.ids import fanout
    from data_prep.inpaint import remove_strokes
    from data_prep.roi import detect_boxes
    from data_prep.sources import Record

    settings = process.Settings(out=out)
    process.configure(settings)
    ids = [f"stage{k:07d}" for k in range(len(rows))]
    for id_ in ids:
        (out / "images" / fanout(id_)).mkdir(parents=True, exist_ok=True)
    totals = dict.fromkeys(("decode", "detect_boxes", "remove_strokes", "grey_or_decolour", "encode", "rest"), 0.0)
    clock = time.process_time
    for id_, r in zip(ids, rows):
        t0 = clock()
        dec = images.decode(r["jpeg"])
        t1 = clock()
        roi = detect_boxes(dec.rgb)
        t2 = clock()
        filled = remove_strokes(dec.rgb, roi.mask) if roi.boxes else dec.rgb
        t3 = clock()
        train = (images.grey_luma(filled, roi.boxes) if roi.boxes else None)
        if train is None:
            train = images.decolour_near(filled, roi.mask) if roi.boxes else dec.rgb
        t4 = clock()
        if roi.boxes:
            images.encode(train, lossless=dec.lossless)
        t5 = clock()
        process.process_record(Record(id_, r["caption"], data=r["jpeg"]), settings, tile_below=0.0)
        t6 = clock()
        for name, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, (t6 - t5) - (t5 - t0))):
            totals[name] += dt
    ms = {name: round(1000 * v / len(rows), 3) for name, v in totals.items()}
    return {**ms, "total": round(sum(ms.values()), 3)}


def drop_committed_images(out: Path, seen: set[str]) -> None:
    """Empty the images of newly committed shards, so a 200k-row run does not need ~6 GB of disk.

    Truncated, not deleted: a real run deletes nothing, and ext4 makes every new file search past
    recently deleted inodes, which would bill convert for the benchmark's clean-up. Runs in the
    benchmark process at lower priority (its CPU time is reported as bench_process_cpu_ms_per_image);
    it still shares the cores with convert, so figures err on the slow side.
    """
    shards = out / "shards"
    if not shards.is_dir():
        return
    for d in sorted(shards.iterdir()):
        if d.name.isdigit() and d.name not in seen and d.is_dir():
            seen.add(d.name)
            for line in (d / "rows.jsonl").read_text().splitlines():  # task rows; splits come at assembly
                for image in json.loads(line)["images"]:
                    os.truncate(image, 0)


def run_convert(source: Path, out: Path, workers: int, extra: list[str], keep_images: bool) -> dict:
    cmd = [sys.executable, "-m", "data_prep", "convert", "--source", str(source), "--out", str(out),
           "--workers", str(workers), "--overwrite", *extra]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    load_start = load_1min()
    t = time.perf_counter()
    with open(out.parent / "convert.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=log)
        os.nice(10)  # the sampling and the image truncation below yield to convert
        ps = psutil.Process(proc.pid)
        peak, loads, seen, cpu_by_pid = 0, [], set(), {}
        while proc.poll() is None:
            peak = max(peak, tree_rss(ps, cpu_by_pid))
            loads.append(load_1min())
            if not keep_images and len(loads) % 10 == 0:
                drop_committed_images(out, seen)
            time.sleep(0.2)
    wall = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"convert failed ({proc.returncode}): see {out.parent / 'convert.log'}")
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    bench_cpu = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    return {"wall_s": wall, "peak_rss": peak, "cpu_s": cpu, "main_cpu_s": cpu_by_pid.get(proc.pid, 0.0),
            "bench_cpu_s": bench_cpu,
            "load_avg": sum(loads) / max(1, len(loads)), "load_start": load_start, "load_end": load_1min()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--distinct", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvlm-bench"), help="scratch folder")
    ap.add_argument("--keep", action="store_true",
                    help="keep the converted output, images included, as a real run does (~6 GB for 200k "
                         "rows); by default images are emptied as their shard commits, which costs this "
                         "process ~0.16 ms of CPU per image on the cores convert uses")
    ap.add_argument("--min-free-gb", type=float, default=3.0, help="refuse to start with less free disk")
    ap.add_argument("--json", type=Path, default=RESULTS,
                    help=f"record the figures here, under the row count (default {RESULTS.relative_to(ROOT)})")
    ap.add_argument("--stage-rows", type=int, default=300,
                    help="images whose per-stage CPU time is measured in this process (0: skip)")
    ap.add_argument("convert_args", nargs="*", help="extra convert flags, after --")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(args.work).free / 1e9
    if free_gb < args.min_free_gb:
        raise SystemExit(f"only {free_gb:.1f} GB free under {args.work}; need {args.min_free_gb} GB (--min-free-gb)")
    source = args.work / f"stream-{args.rows}.parquet"
    gen_s = generate(source, args.rows, args.distinct)
    stage_out = args.work / "stages"
    stages = stage_ms(first_rows(args.stage_rows), stage_out) if args.stage_rows else None
    out = args.work / "out"
    res = run_convert(source, out, args.workers, args.convert_args, args.keep)
    rep = json.loads((out / "report.json").read_text())
    cpus = os.cpu_count() or 1
    figures = {
        "rows": args.rows, "workers": args.workers, "nproc": cpus, "images_kept": args.keep,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "input_gb": round(source.stat().st_size / 1e9, 2), "generate_s": round(gen_s, 1),
        "wall_s": round(res["wall_s"], 1),
        "images_per_s_end_to_end": round(args.rows / res["wall_s"], 1),
        "images_per_s_convert_loop": rep["throughput"]["images_per_s"],
        "peak_rss_gib": round(res["peak_rss"] / 2**30, 3),
        "cpu_ms_per_image": round(1000 * res["cpu_s"] / args.rows, 2),
        "main_process_cpu_ms_per_image": round(1000 * res["main_cpu_s"] / args.rows, 2),
        "bench_process_cpu_ms_per_image": round(1000 * res["bench_cpu_s"] / args.rows, 2),
        "images_per_s_if_cores_were_free": round(cpus * args.rows / res["cpu_s"], 1),
        "load_avg_1min": {"start": round(res["load_start"], 2), "mean": round(res["load_avg"], 2),
                          "end": round(res["load_end"], 2)},
        "images": rep["totals"]["images"], "task_rows": rep["totals"]["rows"],
        "skipped": rep["totals"]["skipped"], "images_written": rep["images_written"],
    }
    if stages:
        figures["stage_cpu_ms_per_image"] = stages
    print(json.dumps(figures, indent=1))
    record(args.json, figures)
    shutil.rmtree(stage_out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


def first_rows(n: int, seed: int = 0) -> list[dict]:
    """The first n distinct rows of the stream (same seed as generate)."""
    rng = np.random.default_rng(seed)
    return [synthetic_row(rng, k) for k in range(n)]


def record(path: Path, figures: dict) -> None:
    """Keep the figures under their row count (+ "-keep" when images were kept) in the JSON file,
    beside those of other runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[f"{figures['rows']}{'-keep' if figures.get('images_kept') else ''}"] = figures
    path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
