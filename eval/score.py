"""Answers -> per-sample records -> metrics (overall and per modality).

A record is one task answer, JSON-ready (written to predictions.jsonl): what was asked, what came
back, its score, and whether the answer was malformed (unreadable or missing). Malformed answers
score as wrong (IoU 0, empty report, p_yes 0.5) rather than being dropped, so a model cannot gain
by answering garbage.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eval.client import ChatResult
from eval.family_boxes import PixelLimits, parse_boxes, to_image_space
from eval.metrics import accuracy, auroc, bleu_scores, cider, matched_iou, mean, meteor, rouge_l
from eval.verify import yes_probability
from medvlm_vocab import REPORT_LABELS, Family

IOU_THRESHOLD = 0.5
UNKNOWN_MODALITY = "unknown"
_REPORT_PREFIXES = tuple(f"{label}:" for label in REPORT_LABELS.values())
HEADLINE = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "meteor", "iou_mean", "iou_acc50",
            "verify_accuracy", "verify_auroc", "malformed_rate", "report_fields_complete")


def _base(row: dict, result: ChatResult) -> dict[str, Any]:
    return {"id": row["id"], "task": row["task"], "modality": (row.get("fields") or {}).get("modality")
            or UNKNOWN_MODALITY, "image": row["images"][0], "answer": result.text, "error": result.error}


def score_locate(row: dict, result: ChatResult, family: Family, size: tuple[int, int],
                 limits: PixelLimits | None) -> dict[str, Any]:
    """IoU of the answered boxes (mapped to original pixels) against the row's boxes."""
    width, height = size
    gt = [list(map(float, b)) for b in row["objects"]["bbox"]]
    pred = [list(to_image_space(b, family, width, height, limits)) for b in parse_boxes(result.text)]
    return {**_base(row, result), "width": width, "height": height, "gt_boxes": gt,
            "pred_boxes": [[round(v, 1) for v in b] for b in pred], "iou": matched_iou(gt, pred),
            "malformed": not pred}


def score_verify(row: dict, result: ChatResult) -> dict[str, Any]:
    """P(yes) for a positive (label 1) or held-out negative (label 0) question."""
    p = yes_probability(result.top_logprobs)
    return {**_base(row, result), "label": int(row.get("label", 1)), "finding": row.get("finding"),
            "p_yes": 0.5 if p is None else p, "malformed": p is None,
            "top_logprobs": [list(t) for t in (result.top_logprobs or ())[:5]]}


def is_report(text: str | None) -> bool:
    """Whether an answer has the trained report structure (at least one `Label: value` line)."""
    return any(line.strip().startswith(_REPORT_PREFIXES) for line in (text or "").splitlines())


def report_labels(text: str | None) -> set[str]:
    """The trained `Label:` prefixes that start a line of a report."""
    return {p for line in (text or "").splitlines() for p in _REPORT_PREFIXES if line.strip().startswith(p)}


def score_diagnose(row: dict, result: ChatResult) -> dict[str, Any]:
    """The generated report next to the reference; a structureless answer is malformed, and a report is
    complete when it has a line for every field its reference has."""
    reference = row["messages"][1]["content"]
    return {**_base(row, result), "reference": reference, "malformed": not is_report(result.text),
            "fields_complete": report_labels(reference) <= report_labels(result.text)}


def summarize(records: Sequence[dict[str, Any]], *, with_meteor: bool = True) -> dict[str, Any]:
    """All metrics over a set of records; a metric with nothing to measure is None."""
    locate = [r for r in records if r["task"] == "locate"]
    verify = [r for r in records if r["task"] == "verify"]
    diagnose = [r for r in records if r["task"] == "diagnose"]
    hyps = ["" if r["malformed"] else (r["answer"] or "") for r in diagnose]
    refs = [r["reference"] for r in diagnose]
    labels = [r["label"] for r in verify]
    probs = [r["p_yes"] for r in verify]
    ious = [r["iou"] for r in locate]
    out: dict[str, Any] = {
        **bleu_scores(hyps, refs), "rouge_l": rouge_l(hyps, refs), "cider": cider(hyps, refs),
        "meteor": meteor(hyps, refs) if with_meteor else None,
        "iou_mean": mean(ious), "iou_acc50": mean([float(v >= IOU_THRESHOLD) for v in ious]),
        "verify_accuracy": accuracy(labels, probs, 0.5, [not r["malformed"] for r in verify]),
        "verify_auroc": auroc(labels, probs),
        "malformed_rate": mean([float(r["malformed"]) for r in records]),
        "report_fields_complete": mean([float(r["fields_complete"]) for r in diagnose]),
    }
    for task, subset in (("locate", locate), ("verify", verify), ("diagnose", diagnose)):
        out[f"malformed_{task}"] = mean([float(r["malformed"]) for r in subset])
    out["counts"] = {"images": len({r["id"] for r in records}), "locate": len(locate),
                     "verify_positive": sum(labels), "verify_negative": len(labels) - sum(labels),
                     "diagnose": len(diagnose), "malformed": sum(r["malformed"] for r in records),
                     "request_errors": sum(bool(r["error"]) for r in records)}
    return out


def evaluate(records: Sequence[dict[str, Any]], *, with_meteor: bool = True) -> dict[str, Any]:
    """{"overall": ..., "per_modality": {modality: ...}} (modalities by number of images, descending)."""
    by_modality: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_modality.setdefault(r["modality"], []).append(r)
    order = sorted(by_modality, key=lambda m: (-len({r["id"] for r in by_modality[m]}), m))
    return {"overall": summarize(records, with_meteor=with_meteor),
            "per_modality": {m: summarize(by_modality[m], with_meteor=with_meteor) for m in order}}
