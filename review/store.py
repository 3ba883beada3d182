"""The review store: append-only JSONL decision files and images kept by content hash.

REVIEW_DIR/
  pairs.jsonl      one decisive decision a line, each an ms-swift DPO row (`make dpo PAIRS=` reads it)
  judgements.jsonl the decisions that make no pair (tie, both wrong), for review.stats
  images/ab/<sha256>.png|.jpg   every reviewed image, named by the hash of its bytes
  candidates/<key>.json         compare candidates, so a second reviewer judges the same two answers

Appends are safe against concurrent writers and crashes:
- an exclusive flock on the file serialises writers (processes, and threads, which open their own fd);
- the line is written with O_APPEND and fsync'd before the lock is released, so a decision the app
  reported as saved survives a power cut;
- a writer killed mid-line (possible only if the kernel splits a write across pages at the instant
  of the kill) leaves an unterminated tail: the next append truncates it under the lock before
  writing, and read_jsonl never returns it. A line is therefore either whole or absent.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.shards import fsync_dir

PAIRS = "pairs.jsonl"
JUDGEMENTS = "judgements.jsonl"


def _repair_tail(fd: int) -> None:
    """Truncate an unterminated last line (a writer died mid-write); caller holds the lock."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    block, end = 65536, size
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line under an exclusive lock, fsync'd before returning."""
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_tail(fd)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete line of a store file (an unterminated tail is a write in progress or a torn one)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n") and line.strip():
                yield json.loads(line)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file + rename, fsync'd: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def image_path(review_dir: str | Path, sha256: str, suffix: str) -> Path:
    return Path(review_dir).resolve() / "images" / sha256[:2] / f"{sha256}{suffix}"


def store_image(review_dir: str | Path, data: bytes, sha256: str, suffix: str) -> Path:
    """The image's absolute path under REVIEW_DIR/images, written once (same bytes, same name)."""
    path = image_path(review_dir, sha256, suffix)
    if not path.exists():
        write_atomic(path, data)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
