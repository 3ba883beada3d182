"""A reviewer's decision -> one line of the review store (pure functions, no files, no UI).

A model answer is the conversation eval.ask had with the model: the report (diagnose), then the
region (locate, asked with the report's modality and organ). A decisive decision becomes an ms-swift
DPO row in the schema of data_prep.pairs (`messages`/`images`/`objects` and their `rejected_` twins,
docs/preference_pairs.md): the two answers as two-turn conversations, boxes as `<ref-object><bbox>`
tags with `objects` in original-image pixels (`bbox_type: "real"`), so swift renders them in the
trained model family's own coordinates. Every row carries the same keys (a JSONL column present in
some rows only reaches swift as None in the others); none of them is a name swift maps to a column
of its own (prompt, response, text, label, ...).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from data_prep.tasks import LOCATE_ANSWER, REF_LABEL

ERROR_CATEGORIES = {
    "wrong_region": "wrong region",
    "laterality": "laterality",
    "missed_finding": "missed finding",
    "hallucinated_finding": "hallucinated finding",
    "vague": "vague",
    "other": "other",
}
VERDICTS = ("A", "B", "tie", "both_wrong")
NO_REGION_ANSWER = "No region of interest."
_GROUNDING_TAGS = ("<ref-object>", "<bbox>", "<image>")
_SPECIAL_TOKEN = re.compile(r"<\|([A-Za-z0-9_]+)\|>")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_boxes(boxes: Sequence[Sequence[Any]], width: int, height: int) -> list[list[int]]:
    """Integer pixel boxes inside the image, corners ordered; ValueError names a row that is not a box."""
    out = []
    for i, box in enumerate(boxes, 1):
        try:
            values = [float(v) for v in box]
        except (TypeError, ValueError):
            raise ValueError(f"box {i}: coordinates must be numbers, got {list(box)!r}") from None
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"box {i}: expected 4 numbers x1, y1, x2, y2, got {list(box)!r}")
        x1, y1, x2, y2 = values
        x1, x2 = sorted((min(max(x1, 0), width), min(max(x2, 0), width)))
        y1, y2 = sorted((min(max(y1, 0), height), min(max(y2, 0), height)))
        x1, y1, x2, y2 = (int(round(v)) for v in (x1, y1, x2, y2))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {i}: {list(box)!r} is empty inside the {width}x{height} image")
        out.append([x1, y1, x2, y2])
    return out


def normalise_report(text: str) -> str:
    return "\n".join(line.rstrip() for line in (text or "").replace("\r\n", "\n").strip().split("\n"))


def answer_key(report: str, boxes: Sequence[Sequence[int]]) -> str:
    """Identity of an answer's content: two answers with the same report and boxes are the same."""
    blob = json.dumps([normalise_report(report), [list(map(int, b)) for b in boxes]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prompt(answer: dict[str, Any], task: str) -> str:
    for turn in answer["turns"]:
        if turn["task"] == task:
            return turn["prompt"]
    raise ValueError(f"the answer has no {task} question")


def _untagged(text: str) -> str:
    """Model text as literal text: swift would consume <ref-object>/<bbox>/<image> tags as placeholders,
    and special tokens a sampled answer may contain (<|image_pad|>, <|im_end|>, ...) would be tokenised
    as such, adding image tokens or ending the turn inside the training row."""
    for tag in _GROUNDING_TAGS:
        text = text.replace(tag, tag.replace("<", "‹").replace(">", "›"))
    return _SPECIAL_TOKEN.sub(lambda m: f"‹|{m.group(1)}|›", text)


def conversation(answer: dict[str, Any], report: str, boxes: Sequence[Sequence[int]],
                 locate_text: str | None = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """(messages, objects) of one side: the questions `answer` was asked, with `report` and `boxes`.

    Boxes are written as `<ref-object><bbox>` lines (the trained locate answer); without boxes the
    locate turn keeps the model's own text (`locate_text`), or says there is no region.
    """
    diagnose, locate = _prompt(answer, "diagnose"), _prompt(answer, "locate").replace("<image>", "", 1)
    if boxes:
        located = "\n".join([LOCATE_ANSWER] * len(boxes))
    else:
        located = _untagged(locate_text).strip() if locate_text and locate_text.strip() else NO_REGION_ANSWER
    messages = [{"role": "user", "content": diagnose},
                {"role": "assistant", "content": _untagged(normalise_report(report)) or "(no report)"},
                {"role": "user", "content": locate},
                {"role": "assistant", "content": located}]
    objects = {"ref": [REF_LABEL] * len(boxes), "bbox": [list(map(int, b)) for b in boxes], "bbox_type": "real"}
    return messages, objects


def model_side(answer: dict[str, Any]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The conversation exactly as the model answered it (its boxes in original pixels)."""
    boxes = clean_boxes(answer["boxes"], *answer["size"]) if answer["boxes"] else []
    return conversation(answer, answer["report"], boxes, answer.get("locate_answer"))


def _common(*, kind: str, decision: str, item: str, verdict: str, error_type: str, reason: str, reviewer: str,
            image: str, image_sha256: str, model: str, model_b: str, sampling: dict[str, float],
            time: str | None) -> dict[str, Any]:
    if not reviewer.strip():
        raise ValueError("a reviewer id is required")
    if error_type and error_type not in ERROR_CATEGORIES:
        raise ValueError(f"unknown error category {error_type!r}")
    return {"id": f"review-{uuid.uuid4().hex}", "source": "review", "kind": kind, "decision": decision,
            "item": item, "verdict": verdict, "error_type": error_type, "reason": reason.strip(),
            "reviewer": reviewer.strip(), "time": time or utc_now(), "model": model, "model_b": model_b,
            "sampling": {"temperature": float(sampling.get("temperature", 0.0)),
                         "top_p": float(sampling.get("top_p", 1.0))},
            "image_sha256": image_sha256, "images": [image]}


def correction_row(answer: dict[str, Any], report: str, boxes: Sequence[Sequence[Any]], *, reviewer: str,
                   error_type: str, reason: str, image: str, image_sha256: str,
                   time: str | None = None) -> dict[str, Any] | None:
    """chosen = the reviewer's report and boxes, rejected = the model's answer; None when they are equal."""
    width, height = answer["size"]
    chosen_boxes = clean_boxes(boxes, width, height)
    model_boxes = clean_boxes(answer["boxes"], width, height) if answer["boxes"] else []
    if answer_key(report, chosen_boxes) == answer_key(answer["report"], model_boxes):
        return None
    if not normalise_report(report):
        raise ValueError("the corrected report is empty")
    chosen, chosen_objects = conversation(answer, report, chosen_boxes)
    rejected, rejected_objects = model_side(answer)
    item = "correction:" + hashlib.sha256(
        f"{image_sha256}\0{answer['model']}\0{answer_key(answer['report'], model_boxes)}".encode()).hexdigest()[:16]
    row = _common(kind="correction", decision="corrected", item=item, verdict="", error_type=error_type,
                  reason=reason, reviewer=reviewer, image=image, image_sha256=image_sha256, model=answer["model"],
                  model_b="", sampling=answer["sampling"], time=time)
    return {**row, "messages": chosen, "objects": chosen_objects,
            "rejected_messages": rejected, "rejected_images": [image], "rejected_objects": rejected_objects}


def _key_of(answer: dict[str, Any]) -> str:
    boxes = clean_boxes(answer["boxes"], *answer["size"]) if answer["boxes"] else []
    return answer_key(answer["report"], boxes)


def comparison_item(a: dict[str, Any], b: dict[str, Any], image_sha256: str) -> str:
    """The same two answers on the same image are one item, in either order."""
    keys = sorted((_key_of(a), _key_of(b)))
    return "comparison:" + hashlib.sha256(f"{image_sha256}\0{keys[0]}\0{keys[1]}".encode()).hexdigest()[:16]


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _key_of(a) == _key_of(b)


def comparison_record(a: dict[str, Any], b: dict[str, Any], decision: str, *, reviewer: str, error_type: str,
                      reason: str, image: str, image_sha256: str,
                      time: str | None = None) -> tuple[bool, dict[str, Any]]:
    """(is a DPO pair, record): A or B -> a pair (winner chosen, the other rejected); tie or both wrong
    -> a judgement that keeps both answers. A decisive pick needs an error category (what the other
    answer got wrong) and two different answers."""
    if decision not in VERDICTS:
        raise ValueError(f"decision must be one of {', '.join(VERDICTS)}")
    decisive = decision in ("A", "B")
    if decisive and same_answer(a, b):
        raise ValueError("the two answers are identical: there is nothing to prefer (sample again)")
    if decisive and not error_type:
        raise ValueError("pick an error category: what is wrong with the answer you did not choose?")
    verdict = f"answer:{_key_of(a if decision == 'A' else b)}" if decisive else decision
    sampling = a["sampling"]
    row = _common(kind="comparison", decision=decision, item=comparison_item(a, b, image_sha256), verdict=verdict,
                  error_type=error_type, reason=reason, reviewer=reviewer, image=image, image_sha256=image_sha256,
                  model=a["model"], model_b=b["model"], sampling=sampling, time=time)
    if not decisive:
        keep = ("endpoint", "model", "sampling", "report", "boxes", "verify_probability", "status")
        return False, {**row, "candidates": [{k: c.get(k) for k in keep} for c in (a, b)]}
    winner, loser = (a, b) if decision == "A" else (b, a)
    chosen, chosen_objects = model_side(winner)
    rejected, rejected_objects = model_side(loser)
    return True, {**row, "messages": chosen, "objects": chosen_objects,
                  "rejected_messages": rejected, "rejected_images": [image], "rejected_objects": rejected_objects}
