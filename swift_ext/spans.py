"""Token-span arithmetic on encoded samples: where each task's answer sits, and splicing.

Pure functions over plain lists, so the template hooks that use them stay short and the
index bookkeeping is tested on its own.
"""
from __future__ import annotations

from collections.abc import Sequence

from medvlm_vocab import IGNORE_INDEX


def label_runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of trained positions (labels != -100), in order.

    Each assistant turn of a chat sample is one run, so run k is the answer of turn k.
    """
    runs: list[tuple[int, int]] = []
    start = None
    for i, label in enumerate(labels):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(labels)))
    return runs


def find_last(haystack: Sequence[int], needle: Sequence[int], start: int = 0, end: int | None = None) -> int:
    """Index of the last occurrence of `needle` inside haystack[start:end], or -1."""
    end = len(haystack) if end is None else end
    n = len(needle)
    if n == 0:
        return -1
    for i in range(end - n, start - 1, -1):
        if list(haystack[i:i + n]) == list(needle):
            return i
    return -1


def splice(seq: list, start: int, end: int, new: Sequence) -> list:
    """seq with seq[start:end] replaced by `new` (a new list; seq is left alone)."""
    return list(seq[:start]) + list(new) + list(seq[end:])


def shift(pos: int, at: int, delta: int) -> int:
    """Where position `pos` moves when the sequence grows by `delta` at index `at`."""
    return pos + delta if pos >= at else pos


def char_spans_to_tokens(token_texts: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Which tokens overlap any of the character spans of the concatenated token texts."""
    marks = []
    pos = 0
    for text in token_texts:
        lo, hi = pos, pos + len(text)
        marks.append(any(lo < s_hi and s_lo < hi for s_lo, s_hi in spans))
        pos = hi
    return marks
