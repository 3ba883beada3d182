"""`python -m review.stats [REVIEW_DIR]`: decisions per reviewer and per error category, and the
agreement between reviewers (Cohen's kappa) on the items both judged.

An item is one thing to judge: a pair of compare candidates (the same two answers, in either order)
or one model answer to correct. Agreement is measured on the compare verdict (the preferred answer,
tie or both wrong, named by answer so that A/B order does not matter) and on the error category;
a reviewer who judged an item twice counts with the last decision.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from review.store import JUDGEMENTS, PAIRS, read_jsonl


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """(p_o - p_e) / (1 - p_e) for two raters' labels on the same items; None when undefined
    (no items, or both raters always used the same single label, so p_e = 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if p_e == 1:
        return None
    return (p_o - p_e) / (1 - p_e)


def load_decisions(review_dir: str | Path) -> list[dict[str, Any]]:
    """Every decision, pairs and judgements together, in file order."""
    review_dir = Path(review_dir)
    return [*read_jsonl(review_dir / PAIRS), *read_jsonl(review_dir / JUDGEMENTS)]


def _last_by_reviewer(decisions: Iterable[dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """reviewer -> item -> label value (the last decision wins), for decisions that carry the label."""
    table: dict[str, dict[str, Any]] = defaultdict(dict)
    for d in sorted(decisions, key=lambda d: d.get("time", "")):
        if d.get(label):
            table[d["reviewer"]][d["item"]] = d[label]
    return table


def agreement(decisions: Sequence[dict[str, Any]], label: str) -> list[tuple[str, str, int, float | None]]:
    """(reviewer 1, reviewer 2, items both labelled, kappa) for every pair of reviewers sharing items."""
    table = _last_by_reviewer(decisions, label)
    out = []
    for r1, r2 in itertools.combinations(sorted(table), 2):
        shared = sorted(set(table[r1]) & set(table[r2]))
        if shared:
            out.append((r1, r2, len(shared), cohens_kappa([table[r1][i] for i in shared],
                                                           [table[r2][i] for i in shared])))
    return out


def summary(decisions: Sequence[dict[str, Any]]) -> str:
    """The report `python -m review.stats` prints."""
    lines = [f"decisions: {len(decisions)} ({sum(1 for d in decisions if d.get('messages'))} DPO pairs)"]
    by_reviewer = Counter((d["reviewer"], d["kind"]) for d in decisions)
    lines.append("per reviewer:")
    for reviewer in sorted({r for r, _ in by_reviewer}):
        kinds = ", ".join(f"{k} {by_reviewer[reviewer, k]}" for k in ("correction", "comparison")
                          if by_reviewer[reviewer, k])
        lines.append(f"  {reviewer}: {sum(v for (r, _), v in by_reviewer.items() if r == reviewer)} ({kinds})")
    lines.append("per error category:")
    for category, n in sorted(Counter(d.get("error_type") or "(none)" for d in decisions).items()):
        lines.append(f"  {category}: {n}")
    verdicts = Counter(d["decision"] for d in decisions if d["kind"] == "comparison")
    if verdicts:
        lines.append("compare verdicts: " + ", ".join(f"{k} {verdicts[k]}" for k in ("A", "B", "tie", "both_wrong")))
    for label, title in (("verdict", "agreement on the compare verdict"), ("error_type", "agreement on the error category")):
        rows = agreement(decisions, label)
        lines.append(f"{title} (Cohen's kappa, items both judged):")
        for r1, r2, n, kappa in rows:
            lines.append(f"  {r1} vs {r2}: {n} items, kappa "
                         + (f"{kappa:.3f}" if kappa is not None else "undefined (one label only)"))
        if not rows:
            lines.append("  no item judged by two reviewers")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m review.stats", description=__doc__.splitlines()[0])
    parser.add_argument("review_dir", nargs="?", default="output/review", type=Path)
    args = parser.parse_args(argv)
    if not (args.review_dir / PAIRS).exists() and not (args.review_dir / JUDGEMENTS).exists():
        print(f"error: no decisions in {args.review_dir} (expected {PAIRS} or {JUDGEMENTS})", file=sys.stderr)
        return 2
    print(summary(load_decisions(args.review_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
