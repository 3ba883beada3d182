"""Train / val / test assignment by a stable hash of the image id.

Hashing the id (not the row position) keeps an image in the same split across runs, sources
and --limit values, and puts all task rows of one image in one split, so no image leaks from
training into evaluation.
"""
from __future__ import annotations

from data_prep.ids import unit

SPLITS = ("train", "val", "test")


def check_ratios(val_ratio: float, test_ratio: float) -> None:
    """Raise ValueError unless both ratios are in [0, 1) and leave room for training data."""
    if not (0.0 <= val_ratio < 1.0 and 0.0 <= test_ratio < 1.0 and val_ratio + test_ratio < 1.0):
        raise ValueError(f"--val-ratio ({val_ratio}) and --test-ratio ({test_ratio}) must be in "
                         "[0, 1) and sum to less than 1")


def split_of(id_: str, val_ratio: float, test_ratio: float) -> str:
    """The split of an image: test for the lowest test_ratio of hash space, then val, then train."""
    u = unit(id_, b"split")
    if u < test_ratio:
        return "test"
    if u < test_ratio + val_ratio:
        return "val"
    return "train"
