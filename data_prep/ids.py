"""Stable hashing of row ids: split assignment, sampling, de-duplication and file names.

Everything keyed on an id must give the same answer in every run and every process (Python's
hash() is salted per process), so all of it goes through blake2b here.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 150


def hash64(id_: str, purpose: bytes = b"") -> int:
    """64-bit blake2b of an id; `purpose` (<= 16 bytes) gives independent hashes for different uses."""
    digest = hashlib.blake2b(id_.encode("utf-8"), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "little")


def unit(id_: str, purpose: bytes) -> float:
    """A uniform number in [0, 1) fixed by the id."""
    return hash64(id_, purpose) / 2.0**64


def file_stem(id_: str) -> str:
    """A file-system-safe name for an id; a hash suffix keeps rewritten ids apart."""
    stem = _UNSAFE.sub("_", id_).strip("._")[:_MAX_STEM]
    if stem != id_:
        stem = f"{stem}-{hash64(id_, b'stem'):016x}"[-(_MAX_STEM + 17):]
    return stem


def fanout(id_: str) -> str:
    """Two hex characters spreading image files evenly over 256 folders."""
    return f"{hash64(id_, b'fanout') & 0xFF:02x}"


class SeenIds:
    """Ids seen so far, kept as 64-bit hashes (~8 bytes per id, so 25M ids fit in ~200 MB).

    Recent hashes live in a set; every `flush_at` they are merged into a sorted array that is
    searched with bisection. A 64-bit collision between two of 25M ids has odds ~1e-5.
    """

    def __init__(self, flush_at: int = 1 << 20) -> None:
        self._sorted = np.empty(0, np.uint64)
        self._recent: set[int] = set()
        self._flush_at = flush_at

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, id_: str) -> bool:
        """Record an id; True when it was not seen before."""
        h = hash64(id_, b"dedup")
        if h in self._recent:
            return False
        key = np.uint64(h)
        i = int(np.searchsorted(self._sorted, key))
        if i < len(self._sorted) and self._sorted[i] == key:
            return False
        self._recent.add(h)
        if len(self._recent) >= self._flush_at:
            self._flush()
        return True

    def _flush(self) -> None:
        fresh = np.fromiter(self._recent, np.uint64, len(self._recent))
        self._sorted = np.union1d(self._sorted, fresh)
        self._recent.clear()
