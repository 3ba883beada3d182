"""`python -m eval.compare RUN_A RUN_B [--markdown FILE] [--per-modality]`: two runs side by side.

Prints the headline metrics of both runs' metrics.json with B - A; for malformed rate lower is
better, for every other metric higher is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eval.run_report import LABELS, fmt, markdown_table
from eval.score import HEADLINE

LOWER_IS_BETTER = frozenset({"malformed_rate"})


def load_metrics(run: str | Path) -> dict[str, Any]:
    """metrics.json of a run folder (or the file itself)."""
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by `python -m eval.run`")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None


def delta(a: float | None, b: float | None, key: str) -> str:
    """B - A with its sign, marked (better)/(worse) by the metric's direction, at the tables' precision."""
    if a is None or b is None:
        return "n/a"
    digits = 2 if key.startswith("bleu") else 3
    d = round(b - a, digits)
    if d == 0:
        return f"{0.0:+.{digits}f}"
    better = d < 0 if key in LOWER_IS_BETTER else d > 0
    return f"{d:+.{digits}f} ({'better' if better else 'worse'})"


def comparison_rows(a: dict[str, Any], b: dict[str, Any]) -> list[list[str]]:
    return [[LABELS[k], fmt(a.get(k), k), fmt(b.get(k), k), delta(a.get(k), b.get(k), k)] for k in HEADLINE]


def render(run_a: str, run_b: str, ma: dict[str, Any], mb: dict[str, Any], per_modality: bool) -> str:
    header = ["metric", f"A: {Path(run_a).name}", f"B: {Path(run_b).name}", "B - A"]
    parts = [f"A = {run_a} ({ma['run']['model']}, {ma['run']['split']}, {ma['overall']['counts']['images']} images)",
             f"B = {run_b} ({mb['run']['model']}, {mb['run']['split']}, {mb['overall']['counts']['images']} images)",
             "", markdown_table(header, comparison_rows(ma["overall"], mb["overall"]))]
    if per_modality:
        pa, pb = ma["per_modality"], mb["per_modality"]
        for modality in [m for m in pa if m in pb]:
            parts += ["", f"### {modality}", "", markdown_table(header, comparison_rows(pa[modality], pb[modality]))]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.compare", description="Compare two eval runs side by side.")
    p.add_argument("run_a", help="baseline run folder (or its metrics.json)")
    p.add_argument("run_b", help="run folder compared against it")
    p.add_argument("--markdown", default=None, help="also write the table to this markdown file")
    p.add_argument("--per-modality", action="store_true", help="add one table per modality both runs have")
    args = p.parse_args(argv)
    try:
        ma, mb = load_metrics(args.run_a), load_metrics(args.run_b)
        text = render(args.run_a, args.run_b, ma, mb, args.per_modality)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: a metrics.json lacks {e}: was it written by `python -m eval.run`?", file=sys.stderr)
        return 2
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(f"# {Path(args.run_a).name} vs {Path(args.run_b).name}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
