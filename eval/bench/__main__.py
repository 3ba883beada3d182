"""`python -m eval.bench`: score a served model on a public medical VQA benchmark, the way MedEvalKit does.

Reads a local copy of the benchmark in its published release layout, validates all of it, asks each
question through eval.client (bounded concurrency, retries, progress bar, API key), scores the
answers with MedEvalKit's rule-based rules and writes OUT/metrics.json, predictions.jsonl and
report.md (the headline beside the published reference rows). Nothing is written unless the whole
run succeeds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.bench import loaders, report
from eval.bench.loaders import BenchItem
from eval.bench.published import BENCHMARKS
from eval.bench.scoring import OPEN_METRICS, score
from eval.cli import add_endpoint_args, run_main
from eval.client import ChatClient, ChatRequest, ChatResult, EndpointError, api_base, resolve_model
from eval.samples import DataError

MEDEVALKIT = "alibaba-damo-academy/MedEvalKit at commit 9b12e3b (2026-02-24), rule-based mode (use_llm_judge=False)"
RULES = {
    "vqa-rad": "closed (answer yes/no): the yes/no substring rule (judge_judgement); open: exact match of the "
               "parsed, lower-cased answer (judge_open_end_vqa em)",
    "pathvqa": "closed (answer yes/no): the yes/no substring rule (judge_judgement); open: exact match of the "
               "parsed, lower-cased answer (judge_open_end_vqa em)",
    "slake": "OPEN: exact match (judge_open_end_vqa em); CLOSED with answer exactly 'yes'/'no': the yes/no "
             "substring rule; other CLOSED (incl. the release's 'Yes'/'No'): exact match without periods "
             "(judge_close_end_vqa); English and Chinese questions",
    "pmc-vqa": "option letter or text extracted from the answer, string-similarity fallback (judge_multi_choice)",
    "omnimedvqa": "<answer> span if any, then option letter or text, string-similarity fallback (judge_multi_choice)",
}
JUDGE_CAVEAT = ("The published VQA-RAD, SLAKE and PathVQA rows come from MedEvalKit's first release, which had "
                "GPT-4.1 judge open VQA-RAD/PathVQA answers and every SLAKE answer (its eval.sh sets "
                "USE_LLM_JUDGE=True); this run uses the rule-based mode, where an open answer is right only on "
                "exact match, so for these three benchmarks the closed-question accuracy is the part that "
                "compares; PMC-VQA and OmniMedVQA are scored by the same rule in both.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", required=True, help="local copy of the benchmark in its release layout (docs/eval.md)")
    p.add_argument("--out", default=None, help="output folder (default eval/results/bench/BENCHMARK)")
    add_endpoint_args(p)
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="answer length cap (default 1024, MedEvalKit's eval.py default; greedy decoding)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions (a smoke test)")
    return p


def to_record(item: BenchItem, result: ChatResult, benchmark: str, data: Path) -> dict[str, Any]:
    """One prediction, JSON-ready. A failed request is wrong, whatever the rule would make of no text."""
    response = result.text
    if result.error is not None or response is None:
        verdict_parsed, correct = None, False
        open_metrics = dict.fromkeys(OPEN_METRICS, 0.0) if item.rule == "open" else {}
    else:
        verdict = score(benchmark, item.rule, item.answer, response, item.choices)
        verdict_parsed, correct, open_metrics = verdict.parsed, verdict.correct, verdict.open_metrics
    image = str(item.image.relative_to(data)) if item.image.is_relative_to(data) else None
    return {"id": item.id, "source_id": item.source_id, "image": image, "question": item.question,
            "choices": list(item.choices), "answer": item.answer, "rule": item.rule, "kind": item.kind,
            "groups": item.groups, "response": response, "parsed": verdict_parsed, "correct": correct,
            "open_metrics": open_metrics, "error": result.error}


def run(args: argparse.Namespace) -> Path:
    if args.concurrency < 1 or args.retries < 0 or args.max_tokens < 1 or (args.limit is not None and args.limit < 1):
        raise DataError("--concurrency, --max-tokens and --limit must be >= 1, --retries >= 0")
    data = Path(args.data).expanduser().resolve()
    out = Path(args.out or f"eval/results/bench/{args.benchmark}").expanduser()
    with tempfile.TemporaryDirectory(prefix=f"medvlm-bench-{args.benchmark}-") as workdir:
        loaded = loaders.load(args.benchmark, data, Path(workdir), args.limit)
        model = resolve_model(args.url, args.api_key, args.model)
        requests = [ChatRequest(key=item.id, prompt="<image>" + item.prompt, images=(str(item.image),),
                                max_tokens=args.max_tokens) for item in loaded.items]
        client = ChatClient(args.url, model, api_key=args.api_key, concurrency=args.concurrency,
                            retries=args.retries, timeout=args.timeout)
        started = time.perf_counter()
        results = client.run(requests, desc=args.benchmark)
        elapsed = time.perf_counter() - started
    failed = [r for r in results if r.error]
    if len(failed) == len(results):
        raise EndpointError(f"every request failed; the first: {failed[0].error}")

    records = [to_record(item, result, args.benchmark, data)
               for item, result in zip(loaded.items, results, strict=True)]
    metrics = report.summarize(args.benchmark, records)
    notes = [f"Data: {loaded.release}, read from {data}" + (f" (first {args.limit} questions)" if args.limit else "")
             + ".", f"Scoring: {MEDEVALKIT}; {RULES[args.benchmark]}.", JUDGE_CAVEAT, *loaded.notes]
    if failed:
        notes.append(f"{len(failed)} request(s) failed after retries and count as wrong; the first: {failed[0].error}")
    metrics["run"] = {"url": api_base(args.url), "model": model, "data": str(data), "release": loaded.release,
                      "scoring": MEDEVALKIT, "max_tokens": args.max_tokens, "limit": args.limit,
                      "created": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed, 1), "notes": notes}
    report.write_atomically(out, report.output_files(metrics, records, model, notes))
    print(report.comparison_table(metrics, model))
    print(f"{len(requests)} questions in {elapsed:.1f} s ({len(failed)} failed); metrics: {out / 'metrics.json'}",
          file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv), (DataError, EndpointError),
                    interrupted="interrupted; nothing was written")


if __name__ == "__main__":
    sys.exit(main())
