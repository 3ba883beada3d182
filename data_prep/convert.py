"""`python -m data_prep convert`: MedTrinity-25M (any form) -> ms-swift JSONL + images + ROI file + report.

The main process streams the source, drops duplicate ids and cuts the stream into fixed-size
chunks by input position; worker processes turn each chunk into a committed shard
(process.run_chunk). At most a few chunks are in flight, so memory stays flat on 25M rows.
Chunks already committed by an earlier (killed) run are skipped, and the final files are
assembled from the shards in order, so a re-run resumes without duplicating or losing rows.
Assembly is also where splits are decided, by group (data_prep.assemble): split settings do not
change the shards, so a re-run with other ones only re-assembles.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from itertools import islice
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from data_prep import process
from data_prep.assemble import SplitOptions, check_group_file, write_finals
from data_prep.groups import DEFAULT_DISTANCE, GROUP_FIELDS, HASH_BITS
from data_prep.ids import SeenIds
from data_prep.images import DEFAULT_MAX_PIXELS
from data_prep.quality_report import write_report
from data_prep.shards import RunMismatch, ShardStore, clear_output
from data_prep.sources import Record, Source, SourceError, open_source
from data_prep.splits import SPLIT_BY, SPLITS, check_ratios
from data_prep.stats import Stats

# Per-task rows (one row per task) and multi-turn rows (one conversation per image) per split.
FINAL_FILES = (*(f"{s}.jsonl" for s in SPLITS), *(f"{s}_multitask.jsonl" for s in SPLITS), "rois.jsonl")
REPORT_FILES = ("report.json", "report.md", "contact_sheet.png")
DEFAULT_SHARD_SIZE = 1000
SHARD_LAYOUT = 2  # 2: rows stored without a split, plus members.jsonl (splits decided at assembly)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_prep convert",
        description="Convert MedTrinity-25M into ms-swift JSONL (locate / verify / diagnose rows), "
                    "training images with the drawn ROI boxes removed, rois.jsonl and a quality report. "
                    "Re-running the same command after an interruption resumes it.")
    p.add_argument("--source", required=True,
                   help="UCSC-VLAA/MedTrinity-25M (Hub, gated), a parquet file or folder (25M_demo schema), "
                        "a 25M_full folder (parquet + *.tar.zst or unpacked images), or an images + "
                        "captions JSONL folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default="25M_demo", help="Hub config (default 25M_demo)")
    p.add_argument("--limit", type=int, default=None, help="convert only the first N input rows")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: CPU count; 0 = in this process)")
    p.add_argument("--val-ratio", type=float, default=0.05)
    p.add_argument("--test-ratio", type=float, default=0.05)
    p.add_argument("--split-by", choices=SPLIT_BY, default="group",
                   help="group (default): images sharing a group key (a patient/study/source-image id column: "
                        f"{', '.join(GROUP_FIELDS)}) or near-duplicate images (perceptual hash) land in one "
                        "split; id: each image by a hash of its id alone")
    p.add_argument("--groups", type=Path, default=None, metavar="FILE",
                   help="JSONL or CSV of explicit group keys by image: an 'id' (or 'file_name') field and the "
                        "key field; wins over the source's own key and over the perceptual hash")
    p.add_argument("--group-field", default=None, metavar="NAME",
                   help=f"the key field of --groups (default: the first of {', '.join(GROUP_FIELDS)})")
    p.add_argument("--group-distance", type=int, default=DEFAULT_DISTANCE,
                   help=f"images whose {HASH_BITS}-bit perceptual hashes differ in at most this many bits are "
                        f"near-duplicates (default {DEFAULT_DISTANCE}; lower it if report.md shows a group "
                        "of unrelated images)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument("--inpaint-boxes", dest="inpaint", action="store_true", default=True,
                       help="paint the drawn ROI strokes out of the training images (default)")
    boxes.add_argument("--keep-boxes", dest="inpaint", action="store_false",
                       help="keep the drawn ROI strokes in the training images")
    p.add_argument("--extract-with", metavar="URL", default=None,
                   help="OpenAI-compatible endpoint to extract caption fields with (default: rules); "
                        "API key from LLM_API_KEY or OPENAI_API_KEY")
    p.add_argument("--extract-model", default=None, help="model name for --extract-with")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"input rows per committed shard (default {DEFAULT_SHARD_SIZE}); the unit of resume")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"skip images larger than this as too_large (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's output in --out instead of resuming it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (SourceError, RunMismatch, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenProcessPool:
        print("error: a worker process died (out of memory, or killed). Committed chunks are kept: "
              "re-run the same command to resume (fewer --workers or a smaller --shard-size use less memory).",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: committed chunks are kept; re-run the same command to resume.", file=sys.stderr)
        return 130


def _check_args(args: argparse.Namespace) -> None:
    check_ratios(args.val_ratio, args.test_ratio)
    for name in ("shard_size", "max_pixels"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 0:
        raise ValueError("--limit must be >= 0")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    if not 0 <= args.group_distance <= HASH_BITS // 4:
        raise ValueError(f"--group-distance must be in 0..{HASH_BITS // 4}")
    if args.group_field and not args.groups:
        raise ValueError("--group-field needs --groups")
    if args.groups:
        check_group_file(args.groups.expanduser(), args.group_field)


def _fingerprint(args: argparse.Namespace) -> dict:
    """Everything that changes the shards; a resumed run must match it (split settings do not)."""
    src = Path(args.source).expanduser()
    return {"source": str(src.resolve()) if src.exists() else args.source, "config": args.config,
            "limit": args.limit, "shard_size": args.shard_size, "inpaint": args.inpaint,
            "max_pixels": args.max_pixels, "extract_with": args.extract_with,
            "extract_model": args.extract_model, "layout": SHARD_LAYOUT}


def _split_options(args: argparse.Namespace) -> SplitOptions:
    return SplitOptions(by=args.split_by, val_ratio=args.val_ratio, test_ratio=args.test_ratio,
                        distance=args.group_distance,
                        groups_file=args.groups.expanduser().resolve() if args.groups else None,
                        group_field=args.group_field)


def _split_settings(opts: SplitOptions) -> dict:
    return {"split_by": opts.by, "val_ratio": opts.val_ratio, "test_ratio": opts.test_ratio,
            "group_distance": opts.distance, "groups": str(opts.groups_file) if opts.groups_file else None,
            "group_field": opts.group_field}


def chunked(records: Iterable[Record], size: int, limit: int | None) -> Iterator[list[Record]]:
    """Consecutive chunks of `size` records from the first `limit` (all when None)."""
    it = iter(records) if limit is None else islice(records, limit)
    while chunk := list(islice(it, size)):
        yield chunk


def drop_duplicates(chunk: list[Record], seen: SeenIds) -> list[Record]:
    """Keep the first row of every id; later ones become duplicate_id records (counted, no image)."""
    out = []
    for r in chunk:
        if r.id and not r.error and not seen.add(r.id):
            r = replace(r, data=None, path=None, error="duplicate_id")
        elif r.id and r.error:
            seen.add(r.id)
        out.append(r)
    return out


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    out = Path(args.out).expanduser().resolve()
    source = open_source(args.source, config=args.config, work_dir=out / "shards" / "work")
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        clear_output(out, FINAL_FILES + REPORT_FILES)
    store = ShardStore(out)
    store.pin_settings(_fingerprint(args))
    store.clean_partial()
    settings = process.Settings(
        out=out, inpaint=args.inpaint, max_pixels=args.max_pixels, extract_with=args.extract_with,
        extract_model=args.extract_model,
        extract_api_key=os.environ.get("LLM_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    print(f"source: {source.describe()}", file=sys.stderr)

    done = set(store.done())
    started = time.perf_counter()
    progress = Progress(source, args.limit, sum(_stored_stats(store, i).get("totals", "inputs") for i in done))
    n_chunks = convert_chunks(source, store, settings, args, progress, done)
    progress.close()
    elapsed = time.perf_counter() - started

    missing = [i for i in range(n_chunks) if not store.is_done(i)]
    if missing:  # a worker's last commit failed after its stats came back (disk full?)
        print(f"error: chunks {missing[:5]}{'...' if len(missing) > 5 else ''} were processed but not "
              "committed; re-run the same command to resume", file=sys.stderr)
        return 1
    split_opts = _split_options(args)
    splits = write_finals(out, store, n_chunks, split_opts)
    meta = {"source": source.describe(), "settings": {**_fingerprint(args), **_split_settings(split_opts)},
            "output": str(out), "splits": splits,
            "throughput": {"images_per_s": round(progress.processed / elapsed, 1) if elapsed else 0.0,
                           "elapsed_s": round(elapsed, 1), "workers": args.workers,
                           "processed_this_run": progress.processed, "resumed_chunks": progress.resumed}}
    rep = write_report(out, progress.stats, meta)
    t = rep["totals"]
    print(f"done: {t['input_rows']} input rows -> {t['images']} images, {t['rows']} rows "
          f"({', '.join(f'{k} {v}' for k, v in rep['splits']['rows'].items())}; {_groups_line(splits)}); "
          f"skipped {t['skipped']} "
          f"{rep['skipped'] or ''}; {meta['throughput']['images_per_s']} images/s. Report: {out / 'report.md'}",
          file=sys.stderr)
    return 0


def _groups_line(splits: dict) -> str:
    g = splits.get("groups") or {}
    if not g:
        return "no images"
    if g["split_by"] == "id":
        return "split by id"
    return f"{g['groups']} groups, largest {g['largest']['images']} images"


class Progress:
    """Progress bar (images/s) plus the running merge of every chunk's stats.

    Rows of chunks committed by an earlier run start the bar (`resumed_rows`), so the rate shown
    is this run's.
    """

    def __init__(self, source: Source, limit: int | None, resumed_rows: int = 0) -> None:
        total = source.total if limit is None else min(limit, source.total or limit)
        self.bar = tqdm(total=total, initial=resumed_rows, unit="img", desc="convert", dynamic_ncols=True,
                        smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 15, file=sys.stderr)
        self.stats = Stats()
        self.processed = 0
        self.resumed = 0

    def chunk_done(self, stats: Stats, n: int, resumed: bool) -> None:
        self.stats.merge(stats)
        if resumed:
            self.resumed += 1
        else:
            self.processed += n
            self.bar.update(n)
        skipped = sum(self.stats.groups["skipped"].values())
        if skipped:
            self.bar.set_postfix(skipped=skipped, refresh=False)

    def close(self) -> None:
        self.bar.close()


def convert_chunks(source: Source, store: ShardStore, settings: process.Settings,
                   args: argparse.Namespace, progress: Progress, done: set[int]) -> int:
    """Run every chunk not in `done` (committed earlier); returns the number of chunks in the input."""
    seen = SeenIds()
    n_chunks = 0
    chunks = (drop_duplicates(c, seen) for c in chunked(source.records(), args.shard_size, args.limit))
    pending: deque[tuple[int, Future]] = deque()
    with chunk_executor(settings, args.workers) as (pool, max_in_flight):
        for index, chunk in enumerate(chunks):
            n_chunks = index + 1
            if index in done:
                progress.chunk_done(_stored_stats(store, index), len(chunk), resumed=True)
                continue
            task = process.ChunkTask(index, chunk, progress.stats.tile_threshold())
            pending.append((len(chunk), pool.submit(process.run_chunk, task)))
            while len(pending) >= max_in_flight:
                _collect(pending.popleft(), progress)
        while pending:
            _collect(pending.popleft(), progress)
    return n_chunks


class InlineExecutor(Executor):
    """Runs each task when it is submitted, in this process (--workers 0: no pickling, debuggable)."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future


@contextmanager
def chunk_executor(settings: process.Settings, workers: int) -> Iterator[tuple[Executor, int]]:
    """(executor, chunks in flight at most): `workers` spawned processes, or this one for 0.

    In process, each chunk is collected before the next is made, so its tile threshold sees every
    earlier chunk as the workers' run sees all but the few in flight.
    """
    if workers == 0:
        process.configure(settings)
        yield InlineExecutor(), 1
        process.finish_commit()
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=process.init_worker, initargs=(settings,)) as pool:
        yield pool, workers + 2


def _collect(item: tuple[int, Future], progress: Progress) -> None:
    n, fut = item
    progress.chunk_done(Stats.from_json(fut.result()), n, resumed=False)


def _stored_stats(store: ShardStore, index: int) -> Stats:
    return Stats.from_json(json.loads(store.read(index, "stats.json")))
