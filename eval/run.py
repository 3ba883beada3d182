"""`python -m eval.run`: evaluate a served model on a data_prep split; write metrics, report and figures.

Every row of DIR/{split}.jsonl is asked with its own (trained) prompt; verify positives are joined
by as many held-out negatives (eval.verify.negative_rows). The answers are scored per family
(eval.score) and written to OUT (eval.run_report).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from eval.cli import add_endpoint_args, run_main
from eval.client import ChatClient, ChatRequest, ChatResult, EndpointError, api_base, resolve_model
from eval.family_boxes import PixelLimits, pixel_limits
from eval.metrics import java_available
from eval.run_report import LABELS, fmt, markdown_table, write_outputs
from eval.samples import DataError, image_size, load_split, render_prompt
from eval.score import HEADLINE, evaluate, score_diagnose, score_locate, score_verify
from eval.trainlogs import read_curves
from eval.verify import negative_rows
from medvlm_vocab import FAMILIES, Family, get_family

MAX_TOKENS = {"locate": 256, "verify": 1, "diagnose": 512}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_endpoint_args(p)
    p.add_argument("--data", required=True, help="a `python -m data_prep convert` output folder")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", required=True, help="output folder for metrics.json, report.md and figures")
    p.add_argument("--family", default="qwen2_vl", choices=sorted(FAMILIES),
                   help="model family: decides the box coordinates (default qwen2_vl)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="MAX_PIXELS the server resizes images to (Qwen2.5-VL boxes are in resized pixels; "
                        "default: $MAX_PIXELS / $IMAGE_MAX_TOKEN_NUM, else qwen_vl_utils' default)")
    p.add_argument("--min-pixels", type=int, default=None, help="MIN_PIXELS of the server (as --max-pixels)")
    p.add_argument("--top-logprobs", type=int, default=20,
                   help="top logprobs asked for the verify answer token (default 20, vLLM's usual maximum)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out verify negatives (default 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--train-logs", default=None, help="swift sft output folder: plot its logging.jsonl")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (its Java jar takes ~20 s to start)")
    p.add_argument("--context", default=None,
                   help="what the reader must know to read the numbers (e.g. which model and data they come "
                        "from); printed under the report's title")
    return p


def build_requests(items: list[dict], family: Family, limits: PixelLimits | None,
                   top_logprobs: int) -> tuple[list[ChatRequest], list[tuple[int, int]]]:
    """One request per item with its prompt rendered for the family, and each item's image size."""
    sizes: dict[str, tuple[int, int]] = {}
    requests, item_sizes = [], []
    for i, row in enumerate(items):
        image = row["images"][0]
        if image not in sizes:
            try:
                sizes[image] = image_size(image)
            except OSError as e:
                raise DataError(f"cannot read image {image} ({e})") from None
        size = sizes[image]
        prompt = render_prompt(row["messages"][0]["content"], row.get("objects"), family, *size, limits)
        task = row["task"]
        requests.append(ChatRequest(key=str(i), prompt=prompt, images=tuple(row["images"]),
                                    max_tokens=MAX_TOKENS[task], top_logprobs=top_logprobs if task == "verify" else 0))
        item_sizes.append(size)
    return requests, item_sizes


def score_all(items: list[dict], results: list[ChatResult], sizes: list[tuple[int, int]], family: Family,
              limits: PixelLimits | None) -> list[dict[str, Any]]:
    records = []
    for row, result, size in zip(items, results, sizes):
        if row["task"] == "locate":
            records.append(score_locate(row, result, family, size, limits))
        elif row["task"] == "verify":
            records.append(score_verify(row, result))
        else:
            records.append(score_diagnose(row, result))
    return records


def notes(family: Family, limits: PixelLimits | None, n_negatives: int, seed: int, meteor_note: str) -> list[str]:
    space = ("0-1000 normalised coordinates" if family.bbox_space == "norm1000" else
             f"pixels of the image resized by qwen_vl_utils smart_resize (factor {family.patch_size * 2}, "
             f"min_pixels {limits.min_pixels}, max_pixels {limits.max_pixels})")
    return [
        "BLEU-1..4: sacrebleu corpus BLEU with max n-gram order n (0-100, 13a tokenisation) on the full "
        "structured report text; ROUGE-L: rouge-score F-measure (no stemming), mean over reports; CIDEr: "
        "pycocoevalcap CIDEr-D on lower-cased word tokens, document frequencies from this split's references.",
        f"METEOR: {meteor_note}.",
        f"ROI IoU: boxes parsed from the answer ({family.name} answers in {space}) and mapped to original image "
        "pixels; predicted and ground-truth boxes are paired one-to-one greedily by IoU, and the summed IoU is "
        "divided by max(#ground truth, #predicted). Acc@0.5: share of locate answers with IoU >= 0.5.",
        f"Verify: P(yes) from the first answer token's top logprobs, renormalised over yes/no. {n_negatives} "
        f"held-out negatives (seed {seed}): each positive's question with the finding of another image of a "
        "different diagnosis. Accuracy at P(yes) >= 0.5; AUROC by the Mann-Whitney rank formula (ties half).",
        "Malformed: a locate answer with no parsable box (IoU 0), a verify answer with neither yes nor no among "
        "the top logprobs (P = 0.5, counted wrong for accuracy), a report without the trained `Label: value` "
        "lines (scored as empty), or a request that failed after retries.",
    ]


def run(args: argparse.Namespace) -> Path:
    if args.concurrency < 1 or args.retries < 0 or (args.limit is not None and args.limit < 1):
        raise DataError("--concurrency and --limit must be >= 1, --retries >= 0")
    family = get_family(args.family)
    data, out = Path(args.data).expanduser(), Path(args.out).expanduser()
    rows = load_split(data, args.split, args.limit)
    if not rows:
        raise DataError(f"{data / (args.split + '.jsonl')} has no task rows")
    curves = read_curves(Path(args.train_logs).expanduser()) if args.train_logs else None
    limits = pixel_limits(family, args.max_pixels, args.min_pixels) if family.bbox_space == "resized_pixels" else None
    model = resolve_model(args.url, args.api_key, args.model)

    negatives = negative_rows([r for r in rows if r["task"] == "verify"], seed=args.seed)
    items = rows + negatives
    requests, sizes = build_requests(items, family, limits, args.top_logprobs)
    client = ChatClient(args.url, model, api_key=args.api_key, concurrency=args.concurrency,
                        retries=args.retries, timeout=args.timeout)
    started = time.perf_counter()
    results = client.run(requests, desc=f"eval {args.split}")
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r.error]
    if len(failed) == len(results):
        raise EndpointError(f"every request failed; the first: {failed[0].error}")

    records = score_all(items, results, sizes, family, limits)
    with_meteor = not args.no_meteor and java_available()
    meteor_note = ("pycocoevalcap METEOR 1.5 (Java) on the same tokens" if with_meteor else
                   "skipped (--no-meteor)" if args.no_meteor else "skipped: no `java` on PATH")
    metrics = evaluate(records, with_meteor=with_meteor)
    metrics["run"] = {
        "url": api_base(args.url), "model": model, "family": family.name, "data": str(data), "split": args.split,
        "limit": args.limit, "seed": args.seed, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "pixel_limits": limits and {"min_pixels": limits.min_pixels, "max_pixels": limits.max_pixels},
        "requests": len(requests), "failed_requests": len(failed), "elapsed_s": round(elapsed, 1),
        "train_logs": args.train_logs, "context": args.context, "notes": notes(family, limits, len(negatives), args.seed, meteor_note),
    }
    write_outputs(out, metrics, records, curves)
    overall = metrics["overall"]
    print(markdown_table(["metric", "value"], [[LABELS[k], fmt(overall.get(k), k)] for k in HEADLINE]))
    print(f"{len(requests)} requests in {elapsed:.1f} s ({len(failed)} failed); report: {out / 'report.md'}",
          file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv), (DataError, EndpointError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
