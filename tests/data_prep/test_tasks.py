"""ms-swift rows per image: exact structure, grounding tags vs objects, no-box case, stable prompts."""
from __future__ import annotations

import re

import pytest

from data_prep.captions import CaptionFields
from data_prep.tasks import (DIAGNOSE_PROMPTS, LOCATE_PROMPTS, REF_LABEL, VERIFY_PROMPTS, report_text,
                             task_rows)

FIELDS = CaptionFields(modality="CT", organ="brain", roi_location="central", roi_area_pct=4.1,
                       texture="area of abnormal density", relation="adjacent to the ventricles",
                       diagnosis="space-occupying lesion, such as a tumor or hemorrhage, which might be "
                                 "exerting a mass effect")
BOX = [200, 180, 300, 260]
BOXES3 = [[10, 10, 60, 60], [100, 100, 150, 170], [300, 200, 400, 300]]

_TAG_RE = re.compile(r"<ref-object>|<bbox>")


def swift_fill(row: dict) -> list[str]:
    """What ms-swift 4.6 `Template._pre_tokenize` does with the tags, in every message in order:
    <ref-object> takes the next objects.ref, <bbox> the next objects.bbox, on separate counters; a tag
    with nothing left stays literal. Boxes are written as swift's base template does, [(x1,y1),(x2,y2)].
    """
    objects = row.get("objects") or {}
    refs, bboxes = list(objects.get("ref") or []), list(objects.get("bbox") or [])
    ref_idx = bbox_idx = 0
    out = []

    def fill(m: re.Match[str]) -> str:
        nonlocal ref_idx, bbox_idx
        if m.group() == "<ref-object>" and ref_idx < len(refs):
            ref_idx += 1
            return refs[ref_idx - 1]
        if m.group() == "<bbox>" and bbox_idx < len(bboxes):
            bbox_idx += 1
            x1, y1, x2, y2 = bboxes[bbox_idx - 1]
            return f"[({x1},{y1}),({x2},{y2})]"
        return m.group()

    for message in row["messages"]:
        out.append(_TAG_RE.sub(fill, message["content"]))
    assert (ref_idx, bbox_idx) == (len(refs), len(bboxes)), "every object must be consumed"
    return out


def by_task(rows: list[dict]) -> dict[str, dict]:
    return {r["task"]: r for r in rows}


def test_rows_exact_structure_one_box() -> None:
    rows = task_rows(id="img-1", image="images/img-1.png", width=512, height=512, boxes=[BOX], fields=FIELDS)
    assert [r["task"] for r in rows] == ["locate", "verify", "diagnose"]
    locate, verify, diagnose = rows
    for r in rows:
        assert r["id"] == "img-1" and r["images"] == ["images/img-1.png"]
        assert r["fields"] == FIELDS.as_dict()
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][0]["content"].startswith("<image>")
        assert r["messages"][0]["content"].count("<image>") == 1
    assert set(locate) == {"id", "task", "images", "messages", "objects", "fields"}
    assert locate["objects"] == {"ref": [REF_LABEL], "bbox": [BOX], "bbox_type": "real"}
    assert locate["messages"][1]["content"] == "<ref-object><bbox>"
    assert "CT image of the brain" in locate["messages"][0]["content"]

    assert set(verify) == {"id", "task", "images", "messages", "objects", "finding", "label", "fields"}
    assert verify["objects"] == {"ref": [], "bbox": [BOX], "bbox_type": "real"}
    assert verify["messages"][1]["content"] == "yes"
    assert verify["label"] == 1
    assert verify["finding"] == "space-occupying lesion, such as a tumor or hemorrhage"
    assert verify["messages"][0]["content"].count(verify["finding"]) == 1  # the collator swaps it

    assert set(diagnose) == {"id", "task", "images", "messages", "fields"}
    assert diagnose["messages"][1]["content"] == (
        "Modality: CT\n"
        "Organ: brain\n"
        "Region: central (about 4.1% of the image)\n"
        "Findings: Area of abnormal density\n"
        "Relation: Adjacent to the ventricles\n"
        "Impression: Space-occupying lesion, such as a tumor or hemorrhage, which might be exerting a mass effect")


@pytest.mark.parametrize("boxes", [[BOX], BOXES3], ids=["1box", "3boxes"])
def test_tags_match_objects(boxes: list[list[int]]) -> None:
    rows = by_task(task_rows(id="x", image="x.png", width=512, height=400, boxes=boxes, fields=FIELDS))
    for task in ("locate", "verify"):
        row = rows[task]
        text = "".join(m["content"] for m in row["messages"])
        assert text.count("<bbox>") == len(row["objects"]["bbox"]) == len(boxes)
        assert text.count("<ref-object>") == len(row["objects"]["ref"])
    user, answer = swift_fill(rows["locate"])
    assert answer.splitlines() == [f"{REF_LABEL}[({x1},{y1}),({x2},{y2})]" for x1, y1, x2, y2 in boxes]
    assert "<bbox>" not in user and "<ref-object>" not in user
    user, answer = swift_fill(rows["verify"])
    assert answer == "yes"
    rendered = re.findall(r"\[\((\d+),(\d+)\),\((\d+),(\d+)\)\]", user)
    assert [[int(v) for v in box] for box in rendered] == boxes  # in order, each once


def test_no_box_gives_diagnose_only() -> None:
    rows = task_rows(id="x", image="x.png", width=100, height=100, boxes=[], fields=FIELDS)
    assert [r["task"] for r in rows] == ["diagnose"]
    assert "objects" not in rows[0]
    assert "<bbox>" not in rows[0]["messages"][0]["content"]
    assert "Region: central (about 4.1% of the image)" in rows[0]["messages"][1]["content"]


def test_without_finding_no_verify_and_no_diagnose() -> None:
    fields = CaptionFields(modality="X-ray", organ="chest", roi_location="left side")
    rows = task_rows(id="x", image="x.png", width=100, height=100, boxes=[[10, 10, 30, 30]], fields=fields)
    assert [r["task"] for r in rows] == ["locate"]
    assert "X-ray image of the chest" in rows[0]["messages"][0]["content"]


def test_verify_falls_back_to_texture_and_unknown_subject() -> None:
    fields = CaptionFields(texture="hyperintense signal")
    rows = by_task(task_rows(id="x", image="x.png", width=100, height=100, boxes=[[10, 10, 30, 30]],
                             fields=fields))
    assert rows["verify"]["finding"] == "hyperintense signal"
    assert "medical image" in rows["verify"]["messages"][0]["content"]
    assert rows["diagnose"]["messages"][1]["content"] == (
        "Region: upper left (about 4.0% of the image)\nFindings: Hyperintense signal")


def test_normal_image_gets_a_report_but_no_verify() -> None:
    fields = CaptionFields(modality="CT", organ="chest", diagnosis="no focal abnormality")
    rows = task_rows(id="n", image="n.png", width=100, height=100, boxes=[], fields=fields)
    assert [r["task"] for r in rows] == ["diagnose"]
    assert rows[0]["messages"][1]["content"] == "Modality: CT\nOrgan: chest\nImpression: No focal abnormality"
    boxed = task_rows(id="n", image="n.png", width=100, height=100, boxes=[[10, 10, 40, 40]], fields=fields)
    assert [r["task"] for r in boxed] == ["locate", "diagnose"]


def test_region_from_boxes_when_caption_is_silent() -> None:
    fields = CaptionFields(diagnosis="pneumonia")
    report = report_text(fields, [[0, 0, 10, 10], [90, 90, 100, 100]], 100, 100)
    assert report == "Region: upper left; lower right (about 2.0% of the image)\nImpression: Pneumonia"


def test_boxes_are_clipped_and_bad_boxes_raise() -> None:
    rows = task_rows(id="x", image="x.png", width=100, height=80, boxes=[[-3, 5.4, 120, 70]], fields=FIELDS)
    assert rows[0]["objects"]["bbox"] == [[0, 5, 100, 70]]
    with pytest.raises(ValueError, match="x: box"):
        task_rows(id="x", image="x.png", width=100, height=80, boxes=[[1, 2, 3]], fields=FIELDS)
    with pytest.raises(ValueError, match="empty"):
        task_rows(id="x", image="x.png", width=100, height=80, boxes=[[150, 10, 200, 20]], fields=FIELDS)


def test_prompts_deterministic_and_varied() -> None:
    def prompts(id: str) -> list[str]:
        rows = task_rows(id=id, image="x.png", width=512, height=512, boxes=[BOX], fields=FIELDS)
        return [r["messages"][0]["content"] for r in rows]

    assert prompts("img-7") == prompts("img-7")
    many = [prompts(f"img-{i}") for i in range(60)]
    subject = "CT image of the brain"
    for templates, i in ((LOCATE_PROMPTS, 0), (VERIFY_PROMPTS, 1), (DIAGNOSE_PROMPTS, 2)):
        used = {p[i] for p in many}
        assert len(used) == len(templates), "every paraphrase is used"
        allowed = {t.format(subject=subject, regions="region <bbox>", finding=FIELDS.diagnosis.split(",")[0]
                            + ", such as a tumor or hemorrhage") for t in templates}
        assert used <= allowed
