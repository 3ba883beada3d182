"""Training curves from swift's trainer log (`logging.jsonl` in the sft output folder).

The keys are taken from the log itself (`loss`, the med_multitask loss's `loss_<task>`,
`weight_<task>` and `log_var_<task>`, and their `eval_` forms), so a plain-SFT run plots just its loss.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

LOG_NAME = "logging.jsonl"
CURVE_PREFIXES = ("loss", "weight_", "log_var_", "eval_loss")
Curves = dict[str, list[tuple[int, float]]]


def find_logging(path: Path) -> Path:
    """The trainer log of a run: the file itself, `<dir>/logging.jsonl`, or the newest one below
    `<dir>` (swift writes into `v<N>-<date>/` unless add_version is off)."""
    if path.is_file():
        return path
    if (path / LOG_NAME).is_file():
        return path / LOG_NAME
    found = sorted(path.glob(f"*/{LOG_NAME}"), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no {LOG_NAME} in {path} (pass the swift sft --output_dir)")
    return found[-1]


def _step(row: dict) -> int | None:
    if "global_step/max_steps" in row:
        return int(str(row["global_step/max_steps"]).split("/")[0])
    step = row.get("step")
    return int(step) if isinstance(step, (int, float)) else None


def read_curves(path: Path) -> Curves:
    """{key: [(step, value), ...]} for every logged loss / task weight; the end-of-training summary
    (averages over the whole run, `train_runtime` rows) is skipped."""
    curves: Curves = {}
    for line in find_logging(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = _step(row) if isinstance(row, dict) and "train_runtime" not in row else None
        if step is None:
            continue
        for key, value in row.items():
            if key.startswith(CURVE_PREFIXES) and isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(key, []).append((step, float(value)))
    return curves
