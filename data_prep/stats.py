"""Counters that add up across chunks and runs, plus the contact-sheet sample.

Every chunk stores its own Stats in its shard, so the report of a resumed run is computed from
all committed chunks exactly as if the run had never stopped. The contact-sheet sample is the
`sample_size` images with the lowest id-hash priority: deterministic, order-free and mergeable.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

SAMPLE_SIZE = 24
MAX_ERRORS = 20


@dataclass(frozen=True)
class Tile:
    """One contact-sheet tile: an encoded JPEG and what to print under it."""
    id: str
    priority: float
    modality: str
    jpeg_b64: str


class Stats:
    """Named groups of counters (e.g. skipped -> reason -> n), sample tiles and error examples."""

    def __init__(self, sample_size: int = SAMPLE_SIZE) -> None:
        self.groups: dict[str, Counter] = defaultdict(Counter)
        self.tiles: list[Tile] = []
        self.errors: list[str] = []
        self.sample_size = sample_size

    def count(self, group: str, key: str, n: int = 1) -> None:
        self.groups[group][key] += n

    def get(self, group: str, key: str) -> int:
        return self.groups[group][key] if group in self.groups else 0

    def add_tile(self, tile: Tile) -> None:
        self.tiles = sorted([*self.tiles, tile], key=lambda t: t.priority)[: self.sample_size]

    def add_error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def merge(self, other: Stats) -> None:
        for g, c in other.groups.items():
            self.groups[g].update(c)
        for t in other.tiles:
            self.add_tile(t)
        for e in other.errors:
            self.add_error(e)

    def tile_threshold(self) -> float:
        """Priority a new image must beat to enter the sample (1.0 until the sample is full)."""
        return self.tiles[-1].priority if len(self.tiles) >= self.sample_size else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"groups": {g: dict(c) for g, c in self.groups.items()},
                "tiles": [t.__dict__ for t in self.tiles], "errors": self.errors}

    @classmethod
    def from_json(cls, obj: dict[str, Any], sample_size: int = SAMPLE_SIZE) -> Stats:
        s = cls(sample_size)
        for g, c in obj.get("groups", {}).items():
            s.groups[g].update(c)
        for t in obj.get("tiles", []):
            s.add_tile(Tile(**t))
        s.errors = list(obj.get("errors", []))[:MAX_ERRORS]
        return s
