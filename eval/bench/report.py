"""Scored records -> metrics.json (MedEvalKit's breakdown) and report.md (beside the published rows), atomically."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.bench.published import TITLES, published_for
from eval.bench.scoring import OPEN_METRICS, accuracy_block, open_block
from eval.run_report import markdown_table

VQA_BENCHMARKS = ("vqa-rad", "slake", "pathvqa")  # closed/open questions; the others are multiple choice
GROUP_KEYS = ("modality", "language", "question_type")


def summarize(benchmark: str, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """MedEvalKit's metrics: overall ("total metrics"), closed and open for the VQA sets, and the
    per-modality / per-language / per-question-type breakdowns the release's fields allow."""
    overall = accuracy_block(records)
    out: dict[str, Any] = {
        "benchmark": benchmark,
        "headline": {"metric": "accuracy", "percent": None if overall["accuracy"] is None
                     else round(100 * overall["accuracy"], 2),
                     "definition": "right / total over every question, MedEvalKit's rule-based checks "
                                   "(total metrics.acc), in percent"},
        "overall": overall,
    }
    if benchmark in VQA_BENCHMARKS:
        out["closed"] = accuracy_block([r for r in records if r["kind"] == "closed"])
        out["open"] = open_block([r for r in records if r["kind"] == "open"])
    for key in GROUP_KEYS:
        values = sorted({r["groups"][key] for r in records if key in r["groups"]})
        if values:
            out[f"per_{key}"] = {v: accuracy_block([r for r in records if r["groups"].get(key) == v]) for v in values}
    out["counts"] = {"questions": len(records), "request_errors": sum(bool(r["error"]) for r in records),
                     "empty_answers": sum(not (r["response"] or "").strip() for r in records)}
    out["published"] = published_for(benchmark)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def breakdown_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    """| subset | questions | right | accuracy (%) | rows for every block in metrics.json."""
    blocks: list[tuple[str, Mapping[str, Any]]] = [("all", metrics["overall"])]
    blocks += [(kind, metrics[kind]) for kind in ("closed", "open") if kind in metrics]
    for key in GROUP_KEYS:
        blocks += [(f"{key.replace('_', ' ')}: {name}", block) for name, block in metrics.get(f"per_{key}", {}).items()]
    return [[name, str(b["total"]), str(b["right"]), _pct(b["accuracy"])] for name, b in blocks]


def comparison_table(metrics: Mapping[str, Any], model: str) -> str:
    """This run's headline beside the published reference rows, each with its source."""
    title = TITLES[metrics["benchmark"]]
    n = metrics["overall"]["total"]
    rows = [[f"**{model}** (this run)", _pct(metrics["overall"]["accuracy"]),
             f"this run: {n} questions, MedEvalKit rule-based scoring (docs/eval.md)"]]
    rows += [[p["model"], f"{p['accuracy_percent']:.1f}", p["source"]] for p in metrics["published"]]
    return markdown_table(["model", f"{title} accuracy (%)", "source"], rows)


def render_report(metrics: Mapping[str, Any], model: str, notes: Sequence[str]) -> str:
    title = TITLES[metrics["benchmark"]]
    parts = [f"# {title}: {model}", "", comparison_table(metrics, model), "",
             "## Breakdown", "", markdown_table(["subset", "questions", "right", "accuracy (%)"],
                                                breakdown_rows(metrics))]
    open_metrics = metrics.get("open")
    if open_metrics and open_metrics["total"]:
        parts += ["", "## Open questions (means over open questions)", "",
                  markdown_table(list(OPEN_METRICS), [[f"{open_metrics[k]:.3f}" for k in OPEN_METRICS]])]
    parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def write_atomically(out: Path, files: Mapping[str, str]) -> None:
    """Write every file to a temporary name in `out`, then rename them all into place.

    Renaming is atomic per file, and no final name is touched before every temporary file is
    complete, so a failure (disk full, interrupt) leaves the previous outputs or none, never half files.
    """
    out.mkdir(parents=True, exist_ok=True)
    temps: dict[Path, Path] = {}
    try:
        for name, text in files.items():
            tmp = out / f".{name}.tmp-{os.getpid()}"
            temps[tmp] = out / name
            with tmp.open("w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in temps.items():
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def output_files(metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]], model: str,
                 notes: Sequence[str]) -> dict[str, str]:
    """{file name: text} of a run: metrics.json, predictions.jsonl, report.md."""
    return {
        "metrics.json": json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
        "predictions.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
        "report.md": render_report(metrics, model, notes),
    }
