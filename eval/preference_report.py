"""Held-out DPO reward accuracy and margin before and after training, from swift's logging.jsonl.

The DPO recipe evaluates on the held-out pairs at step 0 (`eval_on_start`) and after the last step.
At step 0 the policy is the reference, so every implicit reward is 0 and accuracy and margin are 0
by construction; the log-probabilities show where the SFT model started.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = {
    "reward accuracy": "eval_rewards/accuracies",
    "reward margin": "eval_rewards/margins",
    "logp chosen": "eval_logps/chosen",
    "logp rejected": "eval_logps/rejected",
}


def eval_records(log_path: Path) -> list[dict]:
    """The evaluation entries of a swift logging.jsonl, in training order."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [r for r in rows if COLUMNS["reward accuracy"] in r]


def before_after(records: list[dict]) -> dict[str, tuple[float, float]]:
    if len(records) < 2:
        raise ValueError(f"need an evaluation before and after training, found {len(records)}; "
                         "the DPO recipe must set eval_on_start: true and an eval at the last step")
    # A re-run into the same output_dir appends to logging.jsonl: start at its last step-0 evaluation.
    starts = [i for i, r in enumerate(records) if str(r.get("global_step/max_steps", "")).startswith("0/")]
    first, last = records[starts[-1] if starts else 0], records[-1]
    return {name: (first[key], last[key]) for name, key in COLUMNS.items() if key in first and key in last}


def format_table(table: dict[str, tuple[float, float]], n_pairs: int | None) -> str:
    title = f"held-out pairs: {n_pairs}" if n_pairs is not None else "held-out pairs"
    lines = [title, f"{'metric':<16}{'before':>10}{'after':>10}{'delta':>10}"]
    lines += [f"{name:<16}{a:>10.4f}{b:>10.4f}{b - a:>+10.4f}" for name, (a, b) in table.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="the DPO --output_dir (holds logging.jsonl)")
    parser.add_argument("--pairs", type=Path, help="the held-out pairs file, to print its size")
    args = parser.parse_args(argv)
    log_path = args.output_dir / "logging.jsonl"
    if not log_path.exists():
        print(f"error: {log_path} not found; run `make dpo` first")
        return 2
    n_pairs = sum(1 for line in args.pairs.open() if line.strip()) if args.pairs else None
    try:
        print(format_table(before_after(eval_records(log_path)), n_pairs))
    except ValueError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
