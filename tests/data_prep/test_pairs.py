"""Preference pairs: synthetic error types, clinician import and validation, swift DPO row schema.

The converted DIR is built here from task_rows and tiny images, so these tests do not depend on the
convert pipeline.
"""
from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_prep.captions import CaptionFields
from data_prep.pairs import (ERROR_TYPES, NO_ABNORMALITY, VAGUE_ANSWERS, PairsFormatError, dpo_row, main,
                             miss_finding, read_clinician_pairs, shift_box, swap_laterality)
from data_prep.pixel_boxes import box_iou
from data_prep.tasks import task_rows

W, H = 160, 120
FIELDS = [
    CaptionFields("pathology", "breast", "upper left region", 12.5, "densely packed atypical cells",
                  "infiltrate the surrounding stroma", "invasive ductal carcinoma"),
    CaptionFields("X-ray", "chest", "left-center region", 3.0, "area of increased opacity in the left lower lobe",
                  "adjacent to the left heart border", "left lower lobe pneumonia"),
    CaptionFields("MR", "knee", "lower right quadrant", 6.2, "hyperintense signal",
                  "involving the medial meniscus", "meniscal tear"),
    CaptionFields("ultrasound", "liver", "upper right region", 8.0, "well-defined hypoechoic lesion",
                  "surrounded by normal parenchyma", "hepatic cyst or hemangioma"),
    CaptionFields("endoscopy", "colon", "lower-left region", 15.3, "reddish ulcerated mucosa", None,
                  "ulcerative colitis"),
]
BOXES = [[[20, 15, 50, 40]], [[10, 10, 30, 30], [60, 50, 90, 80], [120, 20, 150, 50]]]


def _converted_dir(root: Path, n: int = 10) -> Path:
    """DIR/train.jsonl + DIR/rois.jsonl + DIR/images/ for n images, every error type possible on each."""
    (root / "images").mkdir(parents=True)
    with (root / "train.jsonl").open("w") as rows, (root / "rois.jsonl").open("w") as rois:
        for i in range(n):
            id = f"img{i:02d}"
            image = root / "images" / f"{id}.{'png' if i % 2 else 'jpg'}"
            Image.new("RGB", (W, H), (i * 20, 40, 60)).save(image)
            boxes = BOXES[i % 2]
            for row in task_rows(id=id, image=str(image), width=W, height=H, boxes=boxes, fields=FIELDS[i % 5]):
                rows.write(json.dumps(row) + "\n")
            rois.write(json.dumps({"id": id, "width": W, "height": H, "boxes": boxes, "flags": []}) + "\n")
        rois.write(json.dumps({"id": "corrupt", "width": None, "height": None, "boxes": [],
                               "flags": ["skipped:corrupt_image"]}) + "\n")  # convert's line for a skipped input
    return root


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    return _converted_dir(tmp_path / "conv")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train_rows(root: Path) -> dict[tuple[str, str], dict]:
    return {(r["id"], r["task"]): r for r in _read(root / "train.jsonl")}


def _run(converted: Path, tmp_path: Path, *extra: str, seed: int = 0) -> list[dict]:
    out = tmp_path / f"pairs-{seed}.jsonl"
    assert main(["--from", str(converted), "--out", str(out), "--seed", str(seed), *extra]) == 0
    return _read(out)


def _chosen(row: dict) -> str:
    return row["messages"][-1]["content"]


def _rejected(row: dict) -> str:
    return row["rejected_messages"][-1]["content"]


def assert_swift_dpo_row(row: dict) -> None:
    """What ms-swift 4.6 needs from a DPO row in the full-trajectory form (see data_prep.pairs)."""
    for key in ("messages", "rejected_messages"):
        roles = [m["role"] for m in row[key]]
        assert roles[-1] == "assistant" and roles[:-1] == ["user"] * (len(roles) - 1)
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in row[key])
    assert row["messages"][:-1] == row["rejected_messages"][:-1]
    assert row["images"] == row["rejected_images"] and all(Path(p).is_file() for p in row["images"])
    assert row["messages"][0]["content"].count("<image>") == len(row["images"]) == 1
    assert "rejected_response" not in row  # it would override rejected_messages and drop box pairs
    assert _rejected(row) != _chosen(row) or row["rejected_objects"] != row["objects"]
    for key in ("objects", "rejected_objects"):
        if key in row:
            text = "".join(m["content"] for m in row[key.replace("objects", "messages")])
            assert text.count("<bbox>") == len(row[key]["bbox"])
            assert text.count("<ref-object>") == len(row[key]["ref"])
    assert {"id", "source", "error_type"} <= set(row)


def test_synthetic_pairs_all_types_balanced_and_valid(converted: Path, tmp_path: Path) -> None:
    pairs = _run(converted, tmp_path)
    assert len(pairs) == 10 and len({p["id"] for p in pairs}) == 10  # one pair per image
    assert Counter(p["error_type"] for p in pairs) == {t: 2 for t in ERROR_TYPES}
    for row in pairs:
        assert row["source"] == "synthetic"
        assert_swift_dpo_row(row)


def test_each_error_type_is_the_error_it_claims(converted: Path, tmp_path: Path) -> None:
    train = _train_rows(converted)
    for row in _run(converted, tmp_path):
        kind, chosen, rejected = row["error_type"], _chosen(row), _rejected(row)
        task = "locate" if kind == "shifted_box" else "diagnose"
        source = train[(row["id"], task)]
        assert row["messages"] == source["messages"] and row["images"] == source["images"]
        fields = source["fields"]
        if kind == "laterality":
            words = re.findall(r"\b(left|right|upper|lower)\b", chosen, re.I)
            swapped = re.findall(r"\b(left|right|upper|lower)\b", rejected, re.I)
            opposite = {"left": "right", "right": "left", "upper": "lower", "lower": "upper"}
            assert words and swapped == [opposite[w.lower()] if w.islower() else opposite[w.lower()].capitalize()
                                         for w in words]
            assert re.sub(r"left|right|upper|lower", "", rejected, flags=re.I) == \
                re.sub(r"left|right|upper|lower", "", chosen, flags=re.I)
        elif kind == "shifted_box":
            assert rejected == chosen == "\n".join(["<ref-object><bbox>"] * len(row["objects"]["bbox"]))
            true, moved = row["objects"]["bbox"], row["rejected_objects"]["bbox"]
            assert row["objects"] == source["objects"]
            changed = [b for b, t in zip(moved, true) if b != t]
            assert len(changed) == 1 and len(moved) == len(true)
            x1, y1, x2, y2 = changed[0]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert all(box_iou(changed[0], t) < 0.3 for t in true)
            assert row["rejected_objects"]["ref"] == row["objects"]["ref"]
        elif kind == "missed_finding":
            assert fields["diagnosis"].lower() not in rejected.lower()
            assert fields["texture"].lower() not in rejected.lower()
            assert "Impression: " + NO_ABNORMALITY in rejected and "Findings: " + NO_ABNORMALITY in rejected
            assert "Region:" not in rejected
        elif kind == "vague":
            assert rejected in {v.format(organ=fields["organ"]) for v in VAGUE_ANSWERS}
        elif kind == "hallucination":
            chosen_lines, rejected_lines = chosen.splitlines(), rejected.splitlines()
            changed = [(c, r) for c, r in zip(chosen_lines, rejected_lines) if c != r]
            assert len(chosen_lines) == len(rejected_lines) and len(changed) == 1
            old, new = changed[0]
            assert old.startswith("Findings: ") and new.startswith(old + ". There ")
            sentence = new[len(old) + 2:]
            assert sentence not in chosen and sentence.lower() not in json.dumps(fields).lower()


def test_deterministic_from_seed(converted: Path, tmp_path: Path) -> None:
    a, b = _run(converted, tmp_path, seed=3), _run(converted, tmp_path / "again", seed=3)
    assert a == b
    other = _run(converted, tmp_path / "other", seed=4)
    assert [(p["error_type"], _rejected(p)) for p in other] != [(p["error_type"], _rejected(p)) for p in a]


def test_dpo_row_refuses_identical_sides() -> None:
    objects = {"ref": ["r"], "bbox": [[1, 2, 3, 4]], "bbox_type": "real"}
    common = dict(id="a", source="synthetic", error_type="x", prompt="<image>Where?", images=["a.png"])
    with pytest.raises(ValueError, match="equals the chosen"):
        dpo_row(**common, chosen="<ref-object><bbox>", rejected="<ref-object><bbox>", objects=objects)
    with pytest.raises(ValueError, match="empty"):
        dpo_row(**common, chosen="yes", rejected=" ")
    row = dpo_row(**common, chosen="<ref-object><bbox>", rejected="<ref-object><bbox>", objects=objects,
                  rejected_objects={**objects, "bbox": [[5, 6, 7, 8]]})
    assert row["rejected_objects"]["bbox"] == [[5, 6, 7, 8]] and row["objects"] == objects


def test_swap_laterality_keeps_case_and_reverses() -> None:
    text = "Region: Upper left region\nImpression: left lower lobe pneumonia, RIGHT side spared"
    swapped = swap_laterality(text)
    assert swapped == "Region: Lower right region\nImpression: right upper lobe pneumonia, LEFT side spared"
    assert swap_laterality(swapped) == text
    assert swap_laterality("Region: central") is None


def test_shift_box_big_and_impossible() -> None:
    rng = random.Random(0)
    big = [[10, 10, 120, 100]]  # too big for a same-size box with IoU < 0.3: it shrinks
    moved = shift_box(big, 0, W, H, rng)
    assert moved is not None and box_iou(moved, big[0]) < 0.3
    assert 0 <= moved[0] < moved[2] <= W and 0 <= moved[1] < moved[3] <= H
    whole = shift_box([[0, 0, W, H]], 0, W, H, rng)  # only a smaller box can miss a whole-image ROI
    assert whole is not None and box_iou(whole, [0, 0, W, H]) < 0.3
    assert shift_box([[0, 0, 1, 1]], 0, 1, 1, rng) is None


def test_normal_report_has_no_missed_finding() -> None:
    report = "Modality: CT\nOrgan: chest\nImpression: No focal abnormality"
    assert miss_finding(report, {"diagnosis": "no focal abnormality"}) is None
    missed = miss_finding(report, {"diagnosis": "pneumonia"})
    assert missed == f"Modality: CT\nOrgan: chest\nFindings: {NO_ABNORMALITY}\nImpression: {NO_ABNORMALITY}"


def test_pairs_skip_what_cannot_be_built(tmp_path: Path) -> None:
    """No rois.jsonl -> no box sizes -> no shifted_box; a report without sides -> no laterality."""
    root = tmp_path / "conv"
    (root / "images").mkdir(parents=True)
    image = root / "images" / "a.png"
    Image.new("RGB", (W, H)).save(image)
    fields = CaptionFields("CT", "brain", "central", 4.0, "area of abnormal density", None, "hemorrhage")
    rows = task_rows(id="a", image=str(image), width=W, height=H, boxes=[[20, 20, 40, 40]], fields=fields)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    types = {p["error_type"] for s in range(8) for p in _run(root, tmp_path / f"s{s}", seed=s)}
    assert types and types <= {"missed_finding", "vague", "hallucination"}


# --- clinician pairs ------------------------------------------------------------------------------

GOOD = {"image": "scan.png", "prompt": "What does the region show?", "chosen": "A 2 cm hypodense lesion.",
        "rejected": "Looks normal.", "rater": "dr_a", "reason": "misses the lesion"}


def _write_csv(path: Path, records: list[dict], header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or list(GOOD), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def clin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "clin"
    d.mkdir()
    Image.new("RGB", (32, 32)).save(d / "scan.png")
    return d


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_clinician_import(clin_dir: Path, converted: Path, tmp_path: Path, fmt: str) -> None:
    records = [GOOD, {**GOOD, "prompt": "<image>Is there a bleed?", "chosen": "Yes, a small subdural bleed.",
                      "rejected": "No.", "rater": "", "reason": ""}]
    path = clin_dir / f"pairs.{fmt}"
    (_write_csv if fmt == "csv" else _write_jsonl)(path, records)
    rows = read_clinician_pairs(path)
    assert [r["id"] for r in rows] == [f"clinician:pairs.{fmt}:{n}" for n in ((2, 3) if fmt == "csv" else (1, 2))]
    first, second = rows
    assert first["messages"] == [{"role": "user", "content": "<image>What does the region show?"},
                                 {"role": "assistant", "content": "A 2 cm hypodense lesion."}]
    assert _rejected(first) == "Looks normal." and first["error_type"] == "clinician"
    assert first["images"] == [str((clin_dir / "scan.png").resolve())]
    assert (first["rater"], first["reason"]) == ("dr_a", "misses the lesion")
    assert second["messages"][0]["content"] == "<image>Is there a bleed?"
    for row in rows:
        assert_swift_dpo_row(row)
    out = _run(converted, tmp_path, "--clinician", str(path), "--no-synthetic")
    assert out == rows


def test_clinician_image_found_in_converted_dir(clin_dir: Path, converted: Path) -> None:
    path = _write_jsonl(clin_dir / "p.jsonl", [{**GOOD, "image": "images/img01.png"}])
    image = converted / "images" / "img01.png"
    assert read_clinician_pairs(path, [converted])[0]["images"] == [str(image.resolve())]


@pytest.mark.parametrize("change,message", [
    ({"chosen": ""}, ":{line}: column 'chosen': empty"),
    ({"rejected": "  "}, ":{line}: column 'rejected': empty"),
    ({"rejected": GOOD["chosen"]}, ":{line}: column 'rejected': identical to 'chosen'"),
    ({"image": "missing.png"}, ":{line}: column 'image': file not found: missing.png"),
    ({"image": "scan.dcm"}, ":{line}: column 'image': unknown extension '.dcm'"),
    ({"prompt": ""}, ":{line}: column 'prompt': empty"),
    ({"chosen": "Lesion at <bbox>."}, ":{line}: column 'chosen': contains <bbox>/<ref-object>"),
])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_clinician_validation_errors(clin_dir: Path, fmt: str, change: dict, message: str) -> None:
    path = clin_dir / f"bad.{fmt}"
    (_write_csv if fmt == "csv" else _write_jsonl)(path, [GOOD, {**GOOD, **change}])
    with pytest.raises(PairsFormatError) as err:
        read_clinician_pairs(path)
    line = 3 if fmt == "csv" else 2  # the second record; CSV line 1 is the header
    assert f"{path}" + message.format(line=line) in str(err.value)
    assert "1 problem(s)" in str(err.value)


def test_clinician_missing_columns(clin_dir: Path) -> None:
    header = [c for c in GOOD if c != "rejected"]
    csv_path = _write_csv(clin_dir / "a.csv", [GOOD], header=header)
    with pytest.raises(PairsFormatError, match=r"a\.csv:1: missing column\(s\) 'rejected'"):
        read_clinician_pairs(csv_path)
    jsonl_path = _write_jsonl(clin_dir / "a.jsonl", [GOOD, {k: v for k, v in GOOD.items() if k != "rater"}])
    with pytest.raises(PairsFormatError, match=r"a\.jsonl:2: missing column 'rater'"):
        read_clinician_pairs(jsonl_path)


def test_clinician_file_level_errors(clin_dir: Path) -> None:
    txt = clin_dir / "pairs.txt"
    txt.write_text("x")
    with pytest.raises(PairsFormatError, match=r"unknown extension '\.txt' \(expected \.csv or \.jsonl\)"):
        read_clinician_pairs(txt)
    bad = clin_dir / "broken.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n{not json\n[1, 2]\n")
    with pytest.raises(PairsFormatError) as err:
        read_clinician_pairs(bad)
    assert "broken.jsonl:2: not valid JSON" in str(err.value)
    assert "broken.jsonl:3: not a JSON object" in str(err.value)


def test_cli_reports_errors_and_writes_nothing(clin_dir: Path, converted: Path, tmp_path: Path, capsys) -> None:
    path = _write_csv(clin_dir / "bad.csv", [{**GOOD, "chosen": ""}])
    out = tmp_path / "out.jsonl"
    assert main(["--from", str(converted), "--out", str(out), "--clinician", str(path)]) == 2
    assert "bad.csv:2: column 'chosen': empty" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("out.jsonl.tmp").exists()
    assert main(["--from", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "train.jsonl: not found" in capsys.readouterr().err


def test_cli_mixes_clinician_and_synthetic(clin_dir: Path, converted: Path, tmp_path: Path) -> None:
    path = _write_jsonl(clin_dir / "p.jsonl", [GOOD])
    rows = _run(converted, tmp_path, "--clinician", str(path))
    assert Counter(r["source"] for r in rows) == {"clinician": 1, "synthetic": 10}
