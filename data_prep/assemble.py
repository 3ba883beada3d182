"""The last step of convert: decide every image's split and write the final files from the shards.

Splits are decided here, not in the workers, because a group (data_prep.groups) can span any
chunks: the workers store each kept image's task rows, its multi-turn row and one members line
(id, number of rows, perceptual hash, explicit key) in the chunk's shard; this step reads all
members lines, forms the groups, splits them (data_prep.splits) and routes every row into
{split}.jsonl / {split}_multitask.jsonl in shard order, adding its "split" field.

It only reads committed shards and rewrites the final files (temp file + rename) on every run,
so a run killed here, or one re-run with other split settings, just assembles again: shards do
not depend on the split settings. Memory: a few 8-byte numbers per image, never the rows.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.groups import DEFAULT_DISTANCE, GROUP_FIELDS, components, group_key, near_pairs
from data_prep.ids import hash64
from data_prep.shards import ShardStore, fsync_dir
from data_prep.splits import SPLITS, GroupSplit, group_splits

ROWS_FILE = "rows.jsonl"
MULTITASK_FILE = "multitask.jsonl"
MEMBERS_FILE = "members.jsonl"
_RANK, _SPLIT = b"group", b"split"  # hash purposes: canonical member / the split number
_UNIT = 2.0 ** -64


@dataclass(frozen=True)
class SplitOptions:
    """How convert splits; none of it changes the shards."""
    by: str = "group"
    val_ratio: float = 0.05
    test_ratio: float = 0.05
    distance: int = DEFAULT_DISTANCE
    groups_file: Path | None = None
    group_field: str | None = None


def member_line(id_: str, rows: int, phash: int | None, key: str | None) -> str:
    """One kept image's line in a shard's members file."""
    return json.dumps({"id": id_, "rows": rows, "hash": None if phash is None else f"{phash:016x}", "key": key},
                      ensure_ascii=False) + "\n"


@dataclass
class Members:
    """Per kept image, in output order: what grouping and splitting need, as arrays."""
    rank: np.ndarray  # uint64 hash64(id, "group"): canonical member = lowest; side-file lookup
    unit: np.ndarray  # float64 in [0, 1): the split number of the id, or of the key when keyed
    phash: np.ndarray  # uint64 perceptual hash (0 where none)
    has_hash: np.ndarray  # bool
    key: np.ndarray  # uint64 hash64(key, "split"), 0 where none
    has_key: np.ndarray  # bool
    rows: np.ndarray  # int64 task rows of the image
    per_shard: list[int]  # images per shard


def read_members(store: ShardStore, count: int) -> Members:
    """The members lines of shards 0..count-1, in order."""
    rank, unit, phash, key, rows, per_shard = [], [], [], [], [], []
    for i in range(count):
        lines = store.read(i, MEMBERS_FILE).decode("utf-8").splitlines()
        per_shard.append(len(lines))
        for line in lines:
            m = json.loads(line)
            rank.append(hash64(m["id"], _RANK))
            unit.append(hash64(m["id"], _SPLIT) * _UNIT)
            phash.append(m["hash"])
            key.append(m["key"])
            rows.append(m["rows"])
    return Members(
        rank=np.array(rank, np.uint64), unit=np.array(unit, np.float64),
        phash=np.array([int(h, 16) if h else 0 for h in phash], np.uint64),
        has_hash=np.array([h is not None for h in phash], bool),
        key=np.array([hash64(k, _SPLIT) if k is not None else 0 for k in key], np.uint64),
        has_key=np.array([k is not None for k in key], bool),
        rows=np.array(rows, np.int64), per_shard=per_shard)


def _side_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _side_key(row: dict, field: str | None) -> str | None:
    if field is None:
        return group_key(row)
    value = row.get(field)
    return f"{field}={str(value).strip()}" if value is not None and str(value).strip() else None


def check_group_file(path: Path, field: str | None) -> None:
    """Fail before any work if --groups cannot be used: unreadable, no id, or no key field."""
    if not path.is_file():
        raise ValueError(f"--groups {path}: file not found")
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise ValueError(f"--groups {path}: expected a .jsonl or .csv file")
    try:
        rows = _side_rows(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"--groups {path}: not readable ({e})") from None
    if not rows or not all(isinstance(r, dict) and (r.get("id") or r.get("file_name")) for r in rows):
        raise ValueError(f"--groups {path}: every line needs an 'id' (or 'file_name') field")
    if not any(_side_key(r, field) for r in rows):
        want = repr(field) if field else "any of " + ", ".join(GROUP_FIELDS)
        raise ValueError(f"--groups {path}: no row has a value for {want} (choose the key with --group-field)")


def apply_group_file(members: Members, path: Path, field: str | None) -> int:
    """Key every image the side file names (it wins over a key from the source); returns how many.

    The file's keys are held in a dict while they are applied: ~100 bytes per line.
    """
    keyed = {hash64(str(r.get("id") or r.get("file_name")), _RANK): k
             for r in _side_rows(path) if (k := _side_key(r, field))}
    hits = 0
    for i, rank in enumerate(members.rank.tolist()):
        k = keyed.get(rank)
        if k is not None:
            members.key[i], members.has_key[i] = hash64(k, _SPLIT), True
            hits += 1
    return hits


def group_labels(members: Members, by: str, distance: int) -> np.ndarray:
    """A group label per image: its own index by id; else explicit keys, then hash neighbours
    among the images without a key."""
    n = len(members.rank)
    if by == "id":
        return np.arange(n)
    keyed = np.flatnonzero(members.has_key)
    order = keyed[np.argsort(members.key[keyed], kind="stable")]
    same = members.key[order[1:]] == members.key[order[:-1]]
    pi, pj = [order[:-1][same]], [order[1:][same]]
    hashed = np.flatnonzero(members.has_hash & ~members.has_key)
    a, b = near_pairs(members.phash[hashed], distance)
    pi.append(hashed[a])
    pj.append(hashed[b])
    return components(n, np.concatenate(pi), np.concatenate(pj))


def write_finals(out: Path, store: ShardStore, count: int, opts: SplitOptions) -> dict:
    """Split every kept image and write {split}.jsonl, {split}_multitask.jsonl and rois.jsonl;
    returns the split section of the report."""
    members = read_members(store, count)
    keyed_by_file = opts.by == "group" and opts.groups_file is not None
    from_file = apply_group_file(members, opts.groups_file, opts.group_field) if keyed_by_file else 0
    labels = group_labels(members, opts.by, opts.distance)
    units = members.unit if opts.by == "id" else np.where(members.has_key, members.key * _UNIT, members.unit)
    gs = group_splits(labels, members.rank, units, opts.val_ratio, opts.test_ratio) if len(labels) else None
    counts = _route(out, store, count, members, gs)
    store.assemble(out, count, ["rois.jsonl"])
    return {**counts, "groups": _group_report(members, gs, opts, from_file, store) if gs else {}}


def _route(out: Path, store: ShardStore, count: int, members: Members, gs: GroupSplit | None) -> dict:
    """Copy every shard's rows into the split files (temp names, renamed at the end)."""
    names = [f"{s}.jsonl" for s in SPLITS] + [f"{s}_multitask.jsonl" for s in SPLITS]
    tmp = {n: out / f".{n}.tmp" for n in names}
    images, rows = Counter(), Counter()
    handles = {n: open(p, "w", encoding="utf-8") for n, p in tmp.items()}
    try:
        k = 0
        for i in range(count):
            task_lines = store.read(i, ROWS_FILE).decode("utf-8").splitlines(keepends=True)
            multi_lines = store.read(i, MULTITASK_FILE).decode("utf-8").splitlines(keepends=True)
            at = 0
            for j in range(members.per_shard[i]):
                split = SPLITS[int(gs.codes[k])]
                n = int(members.rows[k])
                handles[f"{split}.jsonl"].writelines(with_split(line, split) for line in task_lines[at:at + n])
                handles[f"{split}_multitask.jsonl"].write(multi_lines[j])
                images[split] += 1
                rows[split] += n
                at, k = at + n, k + 1
        for h in handles.values():
            h.flush()
            os.fsync(h.fileno())
    finally:
        for h in handles.values():
            h.close()
    for n, p in tmp.items():
        os.replace(p, out / n)
    fsync_dir(out)
    return {"images": {s: images[s] for s in SPLITS}, "rows": {s: rows[s] for s in SPLITS}}


def with_split(line: str, split: str) -> str:
    """A task row's JSON line with "split" added as its last field (rows are stored without it)."""
    if not line.endswith("}\n"):
        raise ValueError(f"not a JSON object line: {line[:80]!r}")
    return f'{line[:-2]}, "split": "{split}"}}\n'


def _group_report(members: Members, gs: GroupSplit, opts: SplitOptions, from_file: int, store: ShardStore) -> dict:
    """Group count, largest group and how groups were formed, for report.json / report.md."""
    keyed = members.has_key if opts.by == "group" else np.zeros_like(members.has_key)
    multi = gs.sizes[gs.group_of] > 1
    keyed_groups = np.unique(gs.group_of[keyed]).size
    hash_groups = np.unique(gs.group_of[multi & ~keyed]).size
    largest = int(np.argmax(gs.sizes))
    first = int(np.flatnonzero(gs.group_of == largest)[0])
    return {
        "split_by": opts.by, "groups": int(len(gs.sizes)),
        "largest": {"images": int(gs.sizes[largest]), "rows": int(members.rows[gs.group_of == largest].sum()),
                    "example_id": _member_id(store, members.per_shard, first), "split": SPLITS[gs.group_codes[largest]],
                    "keyed": bool(keyed[first])},
        "groups_per_split": {s: int((gs.group_codes == c).sum()) for c, s in enumerate(SPLITS)},
        "keyed_groups": int(keyed_groups), "hash_groups": int(hash_groups),
        "single_images": int((~multi & ~keyed).sum()),
        "images_keyed": int(keyed.sum()),
        "images_keyed_from_file": from_file,
        "images_without_hash": int((~members.has_hash & ~keyed).sum()),
        "distance": opts.distance, "groups_file": str(opts.groups_file) if opts.groups_file else None,
        "filled_empty_splits": gs.filled,
    }


def _member_id(store: ShardStore, per_shard: list[int], index: int) -> str:
    """The id of the index-th kept image (read back from its shard)."""
    for i, n in enumerate(per_shard):
        if index < n:
            return json.loads(store.read(i, MEMBERS_FILE).decode("utf-8").splitlines()[index])["id"]
        index -= n
    raise IndexError(index)
