"""The three ms-swift training rows per image: locate, verify, diagnose.

Grounding follows ms-swift 4.6 (swift/template/base.py `_pre_tokenize`, `normalize_bbox`): every
`<ref-object>` tag, over all turns in order, takes the next `objects["ref"]` entry and every `<bbox>`
tag the next `objects["bbox"]` entry, on two separate counters; a tag with no entry left stays in the
text as a literal, so rows must hold exactly one entry per tag. `bbox_type: "real"` means pixels of
the original image; the template rescales per model family (0-1000 for Qwen2-VL/Qwen3-VL, pixels of
the resized image for Qwen2.5-VL) and renders the tags in the family's own grounding syntax.

Rows without a box get no locate/verify row. A diagnose row needs findings (texture) or an
impression (diagnosis, which may be a normal statement such as "no focal abnormality"): a report of
modality and organ alone teaches nothing about the image.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from data_prep.captions import CaptionFields, is_normal_finding
from data_prep.pixel_boxes import area_share, clip_box, location_phrase
from medvlm_vocab import REPORT_LABELS

__all__ = ["task_rows", "report_text", "finding_text", "REF_LABEL", "LOCATE_ANSWER",
           "LOCATE_PROMPTS", "VERIFY_PROMPTS", "DIAGNOSE_PROMPTS", "VERIFY_ANSWER"]

REF_LABEL = "region of interest"
LOCATE_ANSWER = "<ref-object><bbox>"  # one per box, newline-separated as swift's own grounding sets do
VERIFY_ANSWER = "yes"

# {subject}: e.g. "CT image of the brain"; {regions}: "region <bbox>" or "regions <bbox>, <bbox> and <bbox>"
LOCATE_PROMPTS = (
    "<image>Locate every region of interest in this {subject}.",
    "<image>Find each region of interest in this {subject} and give its bounding box.",
    "<image>Where are the abnormal regions in this {subject}? Answer with bounding boxes.",
    "<image>Mark every region of interest on this {subject}.",
)
VERIFY_PROMPTS = (
    "<image>Does the {regions} of this {subject} show {finding}? Answer yes or no.",
    "<image>In this {subject}, is {finding} present in the {regions}? Answer yes or no.",
    "<image>Look at the {regions} of this {subject}. Is it consistent with {finding}? Answer yes or no.",
)
DIAGNOSE_PROMPTS = (
    "<image>Write a structured report for this medical image: modality, organ, region, findings, "
    "relation to surrounding structures and impression.",
    "<image>Give a structured diagnostic report of this image.",
    "<image>Report on this medical image in a structured format (modality, organ, region, findings, "
    "relation, impression).",
)

def _pick(options: Sequence[str], id: str, task: str) -> str:
    """A paraphrase chosen by a stable hash of (task, id): varied across rows, same on every run."""
    digest = hashlib.blake2b(f"{task}\0{id}".encode(), digest_size=8).digest()
    return options[int.from_bytes(digest, "big") % len(options)]


def subject_phrase(fields: CaptionFields) -> str:
    kind = f"{fields.modality} image" if fields.modality else "medical image"
    return f"{kind} of the {fields.organ}" if fields.organ else kind


def regions_phrase(n: int) -> str:
    if n == 1:
        return "region <bbox>"
    return "regions " + ", ".join(["<bbox>"] * (n - 1)) + " and <bbox>"


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def finding_text(fields: CaptionFields) -> str | None:
    """What the verify task asks about: the disease hypothesis, else the texture description.

    The hypothesis is preferred because it differs between images far more than texture phrases
    ("area of abnormal density"), so negatives made by swapping findings are really negative; a
    normal statement is no finding to look for in a region. Clauses after ", which"/"; " are dropped
    to keep the question short.
    """
    diagnosis = None if is_normal_finding(fields.diagnosis) else fields.diagnosis
    text = diagnosis or fields.texture
    if not text:
        return None
    for stop in ("; ", ", which ", ", that "):
        text = text.split(stop, 1)[0]
    return text.strip(" ,.") or None


def _valid_boxes(boxes: list[list[int]], width: int, height: int, id: str) -> list[list[int]]:
    """Integer boxes clipped to the image; a malformed or empty box is a caller bug, so it raises."""
    out = []
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"{id}: box {box!r} is not [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (int(round(v)) for v in clip_box(box, width, height))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{id}: box {box!r} is empty inside the {width}x{height} image")
        out.append([x1, y1, x2, y2])
    return out


def report_text(fields: CaptionFields, boxes: list[list[int]], width: int, height: int) -> str | None:
    """The structured report; region words and area come from the boxes where the caption is silent."""
    if not (fields.texture or fields.diagnosis):
        return None
    location = fields.roi_location or "; ".join(dict.fromkeys(location_phrase(b, width, height) for b in boxes))
    pct = fields.roi_area_pct
    if pct is None and boxes:
        pct = min(100.0, 100.0 * sum(area_share(b, width, height) for b in boxes))
    area = f"about {pct:.1f}% of the image" if pct is not None else ""
    region = f"{location} ({area})" if location and area else location or area
    lines = [
        ("modality", fields.modality), ("organ", fields.organ), ("region", region),
        ("findings", fields.texture and _sentence_case(fields.texture)),
        ("relation", fields.relation and _sentence_case(fields.relation)),
        ("impression", fields.diagnosis and _sentence_case(fields.diagnosis)),
    ]
    return "\n".join(f"{REPORT_LABELS[key]}: {value}" for key, value in lines if value)


def task_rows(*, id: str, image: str, width: int, height: int, boxes: list[list[int]],
              fields: CaptionFields) -> list[dict]:
    """The ms-swift rows of one image, in the order locate, verify, diagnose (each when possible)."""
    boxes = _valid_boxes(boxes, width, height, id)
    subject = subject_phrase(fields)
    common = {"images": [image]}
    field_dict = fields.as_dict()

    def row(task: str, prompt: str, answer: str, **extra) -> dict:
        return {"id": id, "task": task, **common,
                "messages": [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": answer}],
                **extra, "fields": field_dict}

    rows = []
    if boxes:
        rows.append(row(
            "locate", _pick(LOCATE_PROMPTS, id, "locate").format(subject=subject),
            "\n".join([LOCATE_ANSWER] * len(boxes)),
            objects={"ref": [REF_LABEL] * len(boxes), "bbox": boxes, "bbox_type": "real"}))
        finding = finding_text(fields)
        if finding:
            prompt = _pick(VERIFY_PROMPTS, id, "verify").format(
                subject=subject, regions=regions_phrase(len(boxes)), finding=finding)
            rows.append(row("verify", prompt, VERIFY_ANSWER,
                            objects={"ref": [], "bbox": boxes, "bbox_type": "real"},
                            finding=finding, label=1))
    report = report_text(fields, boxes, width, height)
    if report:
        rows.append(row("diagnose", _pick(DIAGNOSE_PROMPTS, id, "diagnose"), report))
    return rows


def multitask_row(rows: list[dict]) -> dict:
    """The task rows of one image as one conversation (locate -> verify -> diagnose).

    The clinical flow in one sample: the image is encoded once for all three answers, and a
    verify negative built from it masks the answers that no longer describe what is shown.
    Grounding tags are consumed in order across turns, so the objects lists are concatenated.
    """
    if not rows or len({r["id"] for r in rows}) != 1:
        raise ValueError("multitask_row needs the rows of exactly one image")
    messages, refs, bboxes = [], [], []
    for i, r in enumerate(rows):
        user, answer = r["messages"]
        content = user["content"] if i == 0 else user["content"].replace("<image>", "", 1)
        messages += [{"role": "user", "content": content}, answer]
        objects = r.get("objects") or {}
        refs += objects.get("ref", [])
        bboxes += objects.get("bbox", [])
    first = rows[0]
    return {"id": first["id"], "task": "multitask", "tasks": [r["task"] for r in rows], "images": first["images"],
            "messages": messages, "objects": {"ref": refs, "bbox": bboxes, "bbox_type": "real"},
            "finding": next((r["finding"] for r in rows if r.get("finding")), None), "fields": first["fields"]}
