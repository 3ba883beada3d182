"""Worker side of convert: one Record -> image file, ROI line, task rows; one chunk -> one shard.

Runs in worker processes. Every record is handled inside its own try block, so a bad image or
an unexpected bug costs that record (counted under its reason), never the chunk or the run.
Splits are not decided here: a group of near-duplicates can span chunks, so each kept image
leaves its perceptual hash and explicit group key in the shard's members file, and convert
splits when it assembles the final files (data_prep.assemble).
"""
from __future__ import annotations

import base64
import ctypes
import json
import signal
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data_prep import images, quality_report
from data_prep.assemble import MEMBERS_FILE, MULTITASK_FILE, ROWS_FILE, member_line
from data_prep.captions import CaptionFields, parse_caption
from data_prep.groups import image_hash
from data_prep.ids import fanout, file_stem, unit
from data_prep.inpaint import remove_strokes
from data_prep.roi import detect_boxes
from data_prep.shards import ShardStore
from data_prep.sources import Record
from data_prep.stats import SAMPLE_SIZE, Stats, Tile
from data_prep.tasks import multitask_row, task_rows

MAX_BOX_BINS = 5
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters

Extractor = Callable[[str], CaptionFields]


@dataclass(frozen=True)
class Settings:
    """What every worker needs to know; identical for all chunks of a run."""
    out: Path
    inpaint: bool = True
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    extract_with: str | None = None
    extract_model: str | None = None
    extract_api_key: str | None = None
    sample_size: int = SAMPLE_SIZE


@dataclass(frozen=True)
class ChunkTask:
    """Records [index * shard_size, ...) of the input; tiles are drawn for priorities < tile_below."""
    index: int
    records: list[Record]
    tile_below: float = 1.0


@dataclass
class Outcome:
    """What one record produced; `phash` (perceptual hash) and `key` (explicit group key) decide
    its group when the final files are assembled."""
    id: str
    roi: dict
    skipped: str | None = None
    rows: list[dict] = field(default_factory=list)
    phash: int | None = None
    key: str | None = None
    source: str = "unknown"
    modality: str = "unknown"
    filled: dict[str, bool] = field(default_factory=dict)
    written: str | None = None
    flags: list[str] = field(default_factory=list)
    tile: Tile | None = None


_settings: Settings | None = None
_extract: Extractor = parse_caption
_commit_thread: ThreadPoolExecutor | None = None  # made by the first run_chunk of a process
_pending_commit: Future | None = None


def init_worker(settings: Settings) -> None:
    """Pool initializer: die with the parent (no orphan keeps writing after a kill -9), then configure."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    configure(settings)


def configure(settings: Settings) -> None:
    """Per-process setup: one OpenCV thread (the processes are the parallelism), heap reuse for
    image-sized arrays, one extractor."""
    global _settings, _extract
    cv2.setNumThreads(1)
    keep_freed_images_in_heap()
    _settings = settings
    _extract = parse_caption
    if settings.extract_with:
        from data_prep.llm_extract import LlmExtractor
        _extract = LlmExtractor(settings.extract_with, model=settings.extract_model,
                                api_key=settings.extract_api_key)


def keep_freed_images_in_heap() -> None:
    """Serve image-sized arrays (up to 32 MB) from glibc's heap and keep freed ones there.

    By default every allocation over 128 kB is a fresh mmap whose pages fault in one by one and
    is unmapped again on free: with a handful of 512x512 RGB arrays per record (decode, copies,
    masks) that costs ~1 ms of kernel time per image. Larger arrays (rare huge slides) are still
    mapped and returned. No-op where mallopt does not exist.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass


def run_chunk(task: ChunkTask) -> dict:
    """Process one chunk and hand its commit to this process's commit thread; returns the chunk's
    stats (JSON-ready) for progress and the report.

    Committing flushes the chunk's images to disk (~0.15 s per 1000 images), time in which the
    thread waits on the disk while the next chunk is processed. At most one commit is in flight
    and its error surfaces with the next chunk; the last one finishes before the process exits
    (finish_commit, or the pool's shutdown), and convert checks that every chunk committed.
    """
    global _pending_commit, _commit_thread
    assert _settings is not None, "init_worker was not called"
    stats, files = build_chunk(task, _settings, _extract)
    finish_commit()
    if _commit_thread is None:
        _commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
    _pending_commit = _commit_thread.submit(commit_chunk, task.index, files, _settings)
    return stats


def finish_commit() -> None:
    """Wait for the commit in flight, if any, and raise its error."""
    global _pending_commit
    if _pending_commit is not None:
        pending, _pending_commit = _pending_commit, None
        pending.result()


def process_chunk(task: ChunkTask, settings: Settings, extract: Extractor = parse_caption) -> dict:
    """Process a chunk's records and commit its shard, in this thread."""
    stats, files = build_chunk(task, settings, extract)
    commit_chunk(task.index, files, settings)
    return stats


def commit_chunk(index: int, files: dict[str, bytes], settings: Settings) -> None:
    """Commit a chunk's shard atomically, its images flushed first (see shards.ShardStore.commit)."""
    ShardStore(settings.out).commit(index, files, images_dir=settings.out / "images")


def build_chunk(task: ChunkTask, settings: Settings, extract: Extractor = parse_caption) -> tuple[dict, dict[str, bytes]]:
    """Process a chunk's records: (its stats, the shard's files)."""
    stats = Stats(settings.sample_size)
    llm_before = extractor_counts(extract)
    rows: list[str] = []
    multitask: list[str] = []
    members: list[str] = []
    rois: list[str] = []
    for rec in task.records:
        try:
            o = process_record(rec, settings, extract, min(task.tile_below, stats.tile_threshold()))
        except Exception as e:  # a bug must cost one record, not the run
            o = Outcome(rec.id, _roi_line(rec.id, None, [], ["skipped:internal_error"]), skipped="internal_error")
            stats.add_error(f"{rec.id}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
        tally(stats, o)
        if o.skipped != "duplicate_id":  # keep rois.jsonl one line per id: consumers key it by id
            rois.append(_dumps(o.roi))
        if o.rows and not o.skipped:
            rows += [_dumps(r) for r in o.rows]
            multitask.append(_dumps(multitask_row(o.rows)))
            members.append(member_line(o.id, len(o.rows), o.phash, o.key))
    for k, v in (extractor_counts(extract) - llm_before).items():
        stats.count("llm_extract", k, v)
    files = {ROWS_FILE: "".join(rows).encode(), MULTITASK_FILE: "".join(multitask).encode(),
             MEMBERS_FILE: "".join(members).encode(), "rois.jsonl": "".join(rois).encode()}
    summary = stats.to_json()
    files["stats.json"] = json.dumps(summary).encode()
    return summary, files


def extractor_counts(extract: Extractor) -> Counter:
    """An LLM extractor's running answered / fallback-by-reason counts (empty for the rules)."""
    c: Counter = Counter()
    if hasattr(extract, "answered"):
        c["answered"] = extract.answered
    for reason, n in getattr(extract, "fallbacks", {}).items():
        c[f"fallback:{reason}"] = n
    return c


def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _roi_line(id_: str, size: tuple[int, int] | None, boxes: list, flags: list[str]) -> dict:
    w, h = size if size else (None, None)
    return {"id": id_, "width": w, "height": h, "boxes": [list(map(int, b)) for b in boxes], "flags": flags}


def _skip(rec: Record, reason: str, size: tuple[int, int] | None = None, boxes: list | None = None,
          flags: list[str] | None = None) -> Outcome:
    return Outcome(rec.id, _roi_line(rec.id, size, boxes or [], [*(flags or []), f"skipped:{reason}"]),
                   skipped=reason, source=rec.source or "unknown")


def read_bytes(rec: Record) -> bytes | None:
    """The record's image bytes, read from its file when it came as a path."""
    if rec.data is not None or rec.path is None:
        return rec.data
    return Path(rec.path).read_bytes()


def process_record(rec: Record, settings: Settings, extract: Extractor = parse_caption,
                   tile_below: float = 1.0) -> Outcome:
    """Decode, find boxes, write the training image, parse the caption and build the task rows."""
    decoded = read_and_decode(rec, settings)
    if isinstance(decoded, Outcome):
        return decoded
    data, dec = decoded
    h, w = dec.rgb.shape[:2]
    roi = detect_boxes(dec.rgb)
    boxes = [list(map(int, b)) for b in roi.boxes]
    flags = list(roi.flags)
    if not (rec.caption or "").strip():
        return _skip(rec, "empty_caption", (w, h), boxes, flags)
    fields = _fields(rec.caption, extract, flags)

    phash = image_hash(dec.rgb)  # before inpainting, which works on dec.rgb in place
    priority = unit(rec.id, b"sample")
    shown, train_img, changes = training_image(dec, roi.mask, boxes, settings.inpaint,
                                               keep_shown=priority < tile_below)
    payload, ext = images.encode(train_img, lossless=dec.lossless) if changes else (data, dec.ext)
    image_path = settings.out / "images" / fanout(rec.id) / f"{file_stem(rec.id)}.{ext}"
    rows = task_rows(id=rec.id, image=str(image_path), width=w, height=h, boxes=boxes, fields=fields)
    if not rows:
        return _skip(rec, "no_task_rows", (w, h), boxes, flags)
    write_image(image_path, payload)
    modality = fields.modality or "unknown"
    tile = report_tile(rec.id, priority, modality, shown, boxes, train_img) if priority < tile_below else None
    return Outcome(rec.id, _roi_line(rec.id, (w, h), boxes, flags), rows=rows, phash=phash, key=rec.group,
                   source=rec.source or "unknown", modality=modality, filled=fields.filled(),
                   written="+".join(changes) or "original", flags=flags, tile=tile)


def read_and_decode(rec: Record, settings: Settings) -> tuple[bytes, images.Decoded] | Outcome:
    """(the image bytes, the decoded image), or the skip outcome that says why there is none."""
    if rec.error:
        return _skip(rec, rec.error)
    try:
        data = read_bytes(rec)
    except FileNotFoundError:
        return _skip(rec, "missing_file")
    except OSError:
        return _skip(rec, "unreadable_file")
    try:
        return data, images.decode(data, max_pixels=settings.max_pixels)
    except images.BadImage as e:
        return _skip(rec, e.reason, e.size)


def training_image(dec: images.Decoded, mask: np.ndarray, boxes: list[list[int]], inpaint: bool,
                   keep_shown: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(the image as found, the training image, the changes made): with boxes and `inpaint`, the box
    strokes are filled in (in place) and the image made grey where that is safe. `keep_shown` keeps a
    copy of the image as found, for the report tile."""
    shown, train_img, changes = dec.rgb, dec.rgb, [dec.change] if dec.change else []
    if not (boxes and inpaint):
        return shown, train_img, changes
    if keep_shown:
        shown = dec.rgb.copy()
    filled = remove_strokes(dec.rgb, mask, in_place=True)
    train_img = images.grey_luma(filled, boxes)
    if train_img is None:
        train_img = images.decolour_near(filled, mask, in_place=True)
        changes.insert(0, "inpainted")
    else:
        changes[:0] = ["inpainted", "grey"]
    return shown, train_img, changes


def write_image(path: Path, payload: bytes) -> None:
    """The training image file. No temp file + rename: only a committed chunk references the image,
    and a resumed run redoes (rewrites) every chunk that did not commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def report_tile(id_: str, priority: float, modality: str, shown: np.ndarray, boxes: list[list[int]],
                train_img: np.ndarray) -> Tile:
    """The report's before/after picture of one image (the training image only where it differs)."""
    jpeg = quality_report.render_tile(shown, boxes, train_img if train_img is not shown else None)
    return Tile(id_, priority, modality, base64.b64encode(jpeg).decode())


def _fields(caption: str, extract: Extractor, flags: list[str]) -> CaptionFields:
    """Caption fields by the configured extractor; rules when an LLM call fails (flagged)."""
    if extract is parse_caption:
        return parse_caption(caption)
    try:
        return extract(caption)
    except Exception:
        flags.append("llm_extract_failed")
        return parse_caption(caption)


def tally(stats: Stats, o: Outcome) -> None:
    """Add one outcome to the chunk's counters."""
    stats.count("totals", "inputs")
    for f in o.flags:
        stats.count("flags", f)
    if o.skipped:
        stats.count("skipped", o.skipped)
        return
    n = len(o.roi["boxes"])
    stats.count("totals", "images")
    stats.count("totals", "rows", len(o.rows))
    stats.count("modality", o.modality)
    stats.count("source", o.source)
    stats.count("boxes_per_image", str(n) if n < MAX_BOX_BINS else f"{MAX_BOX_BINS}+")
    for r in o.rows:
        stats.count("task_rows", str(r.get("task", "unknown")))
    for k, v in o.filled.items():
        stats.count("fields_filled", k, int(v))
    for part in (o.written or "original").split("+"):
        stats.count("image_written", part)
    if o.tile:
        stats.add_tile(o.tile)
