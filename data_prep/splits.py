"""Train / val / test assignment: by group (default) or by a stable hash of the image id.

A split is decided by a number in [0, 1) fixed by a hash: test takes the lowest test_ratio of
that range, val the next val_ratio, train the rest. Hashing (not row position) keeps an image in
the same split across runs and sources and puts all task rows of one image in one split.

By group (`--split-by group`, the default), the number belongs to the group, not the row (see
data_prep.groups for how groups form): the hash of its explicit key, or of its canonical member
(the member id with the lowest separate hash, independent of the split hash, so the ratios still
hold over groups). Copies of one image, or images of one patient, then never straddle splits,
and the test split measures skill on unseen images rather than memory. By id (`--split-by id`),
every image is its own group: the behaviour before groups existed.

With few groups a split of non-zero ratio can come out empty (18 groups at 5% leave the test
split empty 40% of the time). fill_empty_splits then moves to it the train group whose number lies
nearest its range, as long as train keeps at least one group: a small dataset still gets a val
and a test split, and every other group keeps its hashed split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.ids import unit

SPLITS = ("train", "val", "test")
SPLIT_BY = ("group", "id")
TRAIN, VAL, TEST = range(3)


def check_ratios(val_ratio: float, test_ratio: float) -> None:
    """Raise ValueError unless both ratios are in [0, 1) and leave room for training data."""
    if not (0.0 <= val_ratio < 1.0 and 0.0 <= test_ratio < 1.0 and val_ratio + test_ratio < 1.0):
        raise ValueError(f"--val-ratio ({val_ratio}) and --test-ratio ({test_ratio}) must be in "
                         "[0, 1) and sum to less than 1")


def split_of(id_: str, val_ratio: float, test_ratio: float) -> str:
    """The split of an image by its id alone (`--split-by id`, and every singleton group)."""
    return SPLITS[int(split_codes(np.array([unit(id_, b"split")]), val_ratio, test_ratio)[0])]


def split_codes(units: np.ndarray, val_ratio: float, test_ratio: float) -> np.ndarray:
    """TRAIN / VAL / TEST per number in [0, 1): test below test_ratio, then val, then train."""
    codes = np.full(len(units), TRAIN, np.int8)
    codes[units < test_ratio + val_ratio] = VAL
    codes[units < test_ratio] = TEST
    return codes


def fill_empty_splits(units: np.ndarray, codes: np.ndarray, val_ratio: float, test_ratio: float) -> list[str]:
    """Give every split of non-zero ratio at least one group, taken from train; returns the names
    of the splits filled so. Modifies codes (one per group) in place.

    The group moved is the train group nearest the empty split's range on the circle [0, 1):
    for test [0, t) the highest number (it wraps round to 0), for val [t, t + v) the lowest.
    Nothing moves when train would be left without a group.
    """
    filled = []
    for code, ratio in ((TEST, test_ratio), (VAL, val_ratio)):
        train = np.flatnonzero(codes == TRAIN)
        if ratio <= 0 or (codes == code).any() or len(train) < 2:
            continue
        pick = train[np.argmax(units[train])] if code == TEST else train[np.argmin(units[train])]
        codes[pick] = code
        filled.append(SPLITS[code])
    return filled


@dataclass
class GroupSplit:
    """The split of every record, and what the report says about the groups."""
    codes: np.ndarray  # per record: TRAIN / VAL / TEST
    group_of: np.ndarray  # per record: index of its group
    sizes: np.ndarray  # per group: number of records
    group_codes: np.ndarray  # per group: its split
    filled: list[str] = field(default_factory=list)


def group_splits(labels: np.ndarray, rank: np.ndarray, units: np.ndarray, val_ratio: float,
                 test_ratio: float) -> GroupSplit:
    """Split records by group.

    labels: a group label per record (any integers); rank: per record, the hash that picks the
    group's canonical member (lowest rank); units: per record, the number in [0, 1) that decides
    the split if this record is the canonical member. A keyed record carries its key's number, so
    all members of a keyed group agree whichever is canonical.
    """
    uniq, group_of, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((rank, group_of))
    firsts = order[np.r_[0, np.flatnonzero(np.diff(group_of[order])) + 1]] if len(order) else order
    group_units = units[firsts]
    group_codes = split_codes(group_units, val_ratio, test_ratio)
    filled = fill_empty_splits(group_units, group_codes, val_ratio, test_ratio)
    return GroupSplit(group_codes[group_of], group_of, sizes, group_codes, filled)
