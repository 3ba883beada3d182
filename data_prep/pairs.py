"""Preference pairs for DPO: `python -m data_prep pairs --from DIR --out FILE`.

Clinician pairs (`--clinician FILE.csv|FILE.jsonl`, or the review app's DPO rows) and synthetic pairs
(one realistic clinical error per image of DIR/<split>.jsonl, error types balanced, seeded), written
as one ms-swift JSONL file in swift's full rejected trajectory (`rejected_messages`, `rejected_objects`)
so a shifted box can differ from the chosen one. The input columns, validation, error types and why
that row form: docs/preference_pairs.md.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from data_prep.captions import is_normal_finding
from data_prep.pixel_boxes import box_iou
from medvlm_vocab import REPORT_LABELS

__all__ = ["main", "read_clinician_pairs", "is_dpo_record", "synthetic_pairs", "PairsFormatError", "ERROR_TYPES",
           "CLINICIAN_COLUMNS", "IMAGE_EXTENSIONS", "swap_laterality", "shift_box", "miss_finding",
           "vague_answer", "hallucinate", "dpo_row"]

CLINICIAN_COLUMNS = ("image", "prompt", "chosen", "rejected", "rater", "reason")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ERROR_TYPES = ("laterality", "shifted_box", "missed_finding", "vague", "hallucination")
MAX_SHIFTED_IOU = 0.3
NO_ABNORMALITY = "No abnormality detected."

_GROUNDING_TAGS = ("<bbox>", "<ref-object>")
_SIDES = {"left": "right", "right": "left", "upper": "lower", "lower": "upper", "top": "bottom",
          "bottom": "top", "superior": "inferior", "inferior": "superior"}
_SIDE_RE = re.compile(r"\b(" + "|".join(_SIDES) + r")\b", re.I)

VAGUE_ANSWERS = (
    "Looks kinda off, maybe something there.",
    "The {organ} looks kinda weird here, probably something going on but hard to say.",
    "There's some kind of spot, not sure what it is. Might be nothing.",
    "Hmm, something seems a bit abnormal in the {organ}, maybe have another look.",
)

# (word that must not already be in the report or fields, sentence), by organ, then by modality.
_HALLUCINATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "chest": (("pneumothorax", "There is also a small right-sided pneumothorax."),
              ("effusion", "There is also a moderate left pleural effusion.")),
    "lung": (("pneumothorax", "There is also a small right-sided pneumothorax."),
             ("nodule", "There is also a second 8 mm nodule in the contralateral lung.")),
    "heart": (("pericardial", "There is also a large pericardial effusion."),),
    "brain": (("subdural", "There is also an acute subdural hematoma along the right convexity."),
              ("midline shift", "There is also a midline shift of 8 mm.")),
    "head": (("fracture", "There is also a non-displaced skull fracture."),),
    "liver": (("biliary", "There is also intrahepatic biliary duct dilatation."),
              ("ascites", "There is also moderate ascites.")),
    "abdomen": (("free air", "There is also free intraperitoneal air."),),
    "kidney": (("hydronephrosis", "There is also moderate hydronephrosis."),),
    "knee": (("cruciate", "There is also a complete tear of the anterior cruciate ligament."),
             ("effusion", "There is also a large joint effusion.")),
    "breast": (("microcalcification", "There are also clustered microcalcifications in the other breast."),),
    "spine": (("compression fracture", "There is also a compression fracture of an adjacent vertebral body."),),
    "colon": (("polyp", "There is also a second pedunculated polyp nearby."),),
    "pathology": (("mitotic", "There are also numerous atypical mitotic figures."),
                  ("lymphovascular", "There is also lymphovascular invasion.")),
    "fundus": (("hemorrhage", "There are also scattered flame-shaped retinal hemorrhages."),),
    "dermoscopy": (("blue-white", "There is also a blue-white veil at the lesion periphery."),),
    "endoscopy": (("bleeding", "There is also active bleeding from a second ulcer."),),
    "ultrasound": (("free fluid", "There is also a small amount of free fluid."),),
    "": (("second lesion", "There is also a second similar lesion on the opposite side."),
         ("lymphadenopathy", "There is also marked regional lymphadenopathy.")),
}


class PairsFormatError(ValueError):
    """Input that cannot become pairs; the message names file, line and column."""


# --- rows ----------------------------------------------------------------------------------------

def dpo_row(*, id: str, source: str, error_type: str, prompt: str, chosen: str, rejected: str,
            images: list[str], objects: dict | None = None, rejected_objects: dict | None = None,
            **extra: str) -> dict:
    """One ms-swift DPO row; the rejected side repeats the prompt and images (see module doc)."""
    if rejected_objects is None:
        rejected_objects = objects
    if not chosen.strip() or not rejected.strip():
        raise ValueError(f"{id}: empty chosen or rejected answer")
    if (rejected, rejected_objects) == (chosen, objects):
        raise ValueError(f"{id}: rejected answer equals the chosen one")
    row = {"id": id, "source": source, "error_type": error_type,
           "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
           "images": list(images),
           "rejected_messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": rejected}],
           "rejected_images": list(images)}
    if objects is not None:
        row["objects"], row["rejected_objects"] = objects, rejected_objects
    row.update(extra)
    return row


# --- (a) clinician pairs -----------------------------------------------------------------------------

def _records(path: Path) -> Iterator[tuple[int, dict | None, list[str]]]:
    """(line number, record or None, errors) per CSV row / JSON line; header problems raise."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restkey="_extra")
            missing = [c for c in CLINICIAN_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PairsFormatError(f"{path}:1: missing column(s) {', '.join(map(repr, missing))} "
                                       f"(header must name {', '.join(CLINICIAN_COLUMNS)})")
            line = reader.line_num + 1
            for rec in reader:
                if any(isinstance(v, str) and v.strip() for v in rec.values()):
                    yield line, rec, []
                line = reader.line_num + 1
        return
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as err:
                yield line, None, [f"{path}:{line}: not valid JSON ({err.msg})"]
                continue
            if not isinstance(rec, dict):
                yield line, None, [f"{path}:{line}: not a JSON object"]
                continue
            missing = [] if is_dpo_record(rec) else [c for c in CLINICIAN_COLUMNS if c not in rec]
            yield line, rec, [f"{path}:{line}: missing column '{c}'" for c in missing]


def _resolve_image(value: str, dirs: Sequence[Path]) -> Path | None:
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    return next((d / candidate for d in dirs if (d / candidate).is_file()), None)


def _check_record(path: Path, line: int, rec: dict,
                  image_dirs: Sequence[Path]) -> tuple[list[str], Path | None]:
    """(errors, resolved image) for one record that has every column."""
    where = f"{path}:{line}: column"
    errors: list[str] = []
    for col in CLINICIAN_COLUMNS:
        if col in rec and rec[col] is not None and not isinstance(rec[col], str):
            errors.append(f"{where} '{col}': must be text, got {type(rec[col]).__name__}")
    if errors:
        return errors, None
    text = {col: (rec.get(col) or "").strip() for col in CLINICIAN_COLUMNS}
    for col in ("image", "prompt", "chosen", "rejected"):
        if col in rec and not text[col]:
            errors.append(f"{where} '{col}': empty")
    if text["chosen"] and text["chosen"] == text["rejected"]:
        errors.append(f"{where} 'rejected': identical to 'chosen'")
    for col in ("prompt", "chosen", "rejected"):
        if any(tag in text[col] for tag in _GROUNDING_TAGS):
            errors.append(f"{where} '{col}': contains <bbox>/<ref-object>; clinician pairs carry no boxes, "
                          "write coordinates as text")
    image = None
    if text["image"]:
        ext = Path(text["image"]).suffix.lower()
        if ext not in IMAGE_EXTENSIONS:
            errors.append(f"{where} 'image': unknown extension '{ext or '(none)'}' "
                          f"(expected one of {' '.join(IMAGE_EXTENSIONS)})")
        else:
            image = _resolve_image(text["image"], image_dirs)
            if image is None:
                looked = ", ".join(str(d) for d in image_dirs)
                errors.append(f"{where} 'image': file not found: {text['image']} (looked in {looked})")
    return errors, image


def is_dpo_record(rec: dict) -> bool:
    """A JSONL line that already is an ms-swift DPO row (the review app's pairs.jsonl writes these)."""
    return "messages" in rec and "rejected_messages" in rec


def _check_conversation(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or len(value) < 2 or len(value) % 2:
        return [f"{where} '{key}': expected a list of user/assistant messages ending with the answer"]
    for i, message in enumerate(value):
        role = "user" if i % 2 == 0 else "assistant"
        if not isinstance(message, dict) or message.get("role") != role \
                or not isinstance(message.get("content"), str) or not message["content"].strip():
            return [f"{where} '{key}': message {i + 1} must be a non-empty {role} message"]
    return []


def _check_objects(where: str, key: str, objects: object, messages: list) -> list[str]:
    """Exactly one objects entry per <bbox>/<ref-object> tag (swift consumes them in order)."""
    text = "".join(m["content"] for m in messages)
    if objects is None:
        return [f"{where} '{key}': the text has <bbox> tags but there are no objects"] if "<bbox>" in text else []
    bbox = objects.get("bbox") if isinstance(objects, dict) else None
    ref = objects.get("ref", []) if isinstance(objects, dict) else None
    if not isinstance(bbox, list) or not isinstance(ref, list) \
            or not all(isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) for b in bbox):
        return [f"{where} '{key}': expected {{'ref': [...], 'bbox': [[x1, y1, x2, y2], ...], 'bbox_type': ...}}"]
    if text.count("<bbox>") != len(bbox) or text.count("<ref-object>") != len(ref):
        return [f"{where} '{key}': {text.count('<bbox>')} <bbox> and {text.count('<ref-object>')} <ref-object> "
                f"tags for {len(bbox)} boxes and {len(ref)} refs"]
    return []


def _resolve_row_image(value: str, dirs: Sequence[Path]) -> Path | None:
    """An image path of a DPO row; a moved review folder is found by the path's last three parts
    (images/ab/<sha256>.png) under the pairs file's folder or DIR."""
    found = _resolve_image(value, dirs)
    if found is None and len(Path(value).parts) >= 3:
        tail = Path(*Path(value).parts[-3:])
        found = next((d / tail for d in dirs if (d / tail).is_file()), None)
    return found


def _dpo_record(path: Path, line: int, rec: dict, dirs: Sequence[Path]) -> tuple[list[str], dict | None]:
    """(errors, row) for a line that already is an ms-swift DPO row: checked, images made absolute,
    review metadata reduced to the clinician row schema (rater = the reviewer)."""
    where = f"{path}:{line}: column"
    errors = _check_conversation(where, "messages", rec["messages"]) \
        + _check_conversation(where, "rejected_messages", rec["rejected_messages"])
    images: dict[str, list[str]] = {}
    for key in ("images", "rejected_images"):
        value = rec.get(key, rec.get("images") if key == "rejected_images" else None)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            errors.append(f"{where} '{key}': expected a non-empty list of image paths")
            continue
        resolved = []
        for v in value:
            if Path(v).suffix.lower() not in IMAGE_EXTENSIONS:
                errors.append(f"{where} '{key}': unknown extension '{Path(v).suffix or '(none)'}'")
            elif (found := _resolve_row_image(v, dirs)) is None:
                errors.append(f"{where} '{key}': file not found: {v}")
            else:
                resolved.append(str(found.resolve()))
        images[key] = resolved
    if errors:
        return errors, None
    for key, objects_key in (("messages", "objects"), ("rejected_messages", "rejected_objects")):
        errors += _check_objects(where, objects_key, rec.get(objects_key), rec[key])
        tags = sum(m["content"].count("<image>") for m in rec[key])
        if tags != len(images["images" if key == "messages" else "rejected_images"]):
            errors.append(f"{where} '{key}': {tags} <image> tags for "
                          f"{len(images['images' if key == 'messages' else 'rejected_images'])} images")
    if not errors and (rec["messages"], rec.get("objects")) == (rec["rejected_messages"], rec.get("rejected_objects")):
        errors.append(f"{where} 'rejected_messages': identical to 'messages'")
    if errors:
        return errors, None
    row = {"id": str(rec.get("id") or f"clinician:{path.name}:{line}"), "source": "clinician",
           "error_type": str(rec.get("error_type") or "clinician"),
           "messages": rec["messages"], "images": images["images"],
           "rejected_messages": rec["rejected_messages"], "rejected_images": images["rejected_images"]}
    if rec.get("objects") is not None:
        row["objects"] = rec["objects"]
        row["rejected_objects"] = rec.get("rejected_objects", rec["objects"])
    row["rater"] = str(rec.get("reviewer") or rec.get("rater") or "")
    row["reason"] = str(rec.get("reason") or "")
    return [], row


def read_clinician_pairs(path: str | Path, image_dirs: Sequence[str | Path] = ()) -> list[dict]:
    """Validate a clinician CSV/JSONL file and return its DPO rows; PairsFormatError lists every problem.

    Relative image paths are looked up in the file's folder, then in each of `image_dirs`.
    """
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise PairsFormatError(f"{path}: unknown extension '{path.suffix}' (expected .csv or .jsonl)")
    if not path.is_file():
        raise PairsFormatError(f"{path}: file not found")
    dirs = [path.resolve().parent, *(Path(d).resolve() for d in image_dirs)]
    rows, errors = [], []
    for line, rec, problems in _records(path):
        errors += problems
        if rec is None or problems:
            continue
        if is_dpo_record(rec):
            rec_errors, row = _dpo_record(path, line, rec, dirs)
            errors += rec_errors
            if row is not None:
                rows.append(row)
            continue
        rec_errors, image = _check_record(path, line, rec, dirs)
        errors += rec_errors
        if rec_errors or image is None:
            continue
        prompt = rec["prompt"].strip()
        rows.append(dpo_row(
            id=f"clinician:{path.name}:{line}", source="clinician", error_type="clinician",
            prompt=prompt if "<image>" in prompt else f"<image>{prompt}",
            chosen=rec["chosen"].strip(), rejected=rec["rejected"].strip(), images=[str(image.resolve())],
            rater=(rec.get("rater") or "").strip(), reason=(rec.get("reason") or "").strip()))
    if errors:
        raise PairsFormatError(f"{len(errors)} problem(s) in clinician pairs:\n" + "\n".join(errors))
    return rows


# --- (b) synthetic errors ---------------------------------------------------------------------------

def swap_laterality(text: str) -> str | None:
    """Swap left/right, upper/lower, top/bottom, superior/inferior everywhere; None if none occur."""
    def swap(m: re.Match[str]) -> str:
        word = m.group(1)
        new = _SIDES[word.lower()]
        return new.upper() if word.isupper() else new.capitalize() if word[0].isupper() else new

    swapped, n = _SIDE_RE.subn(swap, text)
    return swapped if n else None


def shift_box(boxes: Sequence[Sequence[int]], index: int, width: int, height: int,
              rng: random.Random, tries: int = 64) -> list[int] | None:
    """A box of the same size (half size if it cannot fit) placed where IoU < 0.3 with every true box.

    Half the tries put it one to two box sizes away in a random direction (a near miss, the
    plausible mistake), the rest anywhere in the image. None if no place is found.
    """
    x1, y1, x2, y2 = boxes[index]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    for scale in (1.0, 0.5):
        w, h = max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))
        if w > width or h > height:
            continue
        for attempt in range(tries):
            if attempt < tries // 2:
                angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(1.0, 2.0)
                nx = round(cx + math.cos(angle) * dist * (x2 - x1) - w / 2)
                ny = round(cy + math.sin(angle) * dist * (y2 - y1) - h / 2)
            else:
                nx, ny = rng.randint(0, width - w), rng.randint(0, height - h)
            nx, ny = min(max(nx, 0), width - w), min(max(ny, 0), height - h)
            cand = [nx, ny, nx + w, ny + h]
            if all(box_iou(cand, b) < MAX_SHIFTED_IOU for b in boxes):
                return cand
    return None


def _report_lines(report: str) -> dict[str, str]:
    by_label = {label: key for key, label in REPORT_LABELS.items()}
    out = {}
    for line in report.splitlines():
        label, _, value = line.partition(": ")
        if label in by_label:
            out[by_label[label]] = value
    return out


def _render_report(lines: dict[str, str]) -> str:
    return "\n".join(f"{REPORT_LABELS[key]}: {lines[key]}" for key in REPORT_LABELS if lines.get(key))


def miss_finding(report: str, fields: dict) -> str | None:
    """The report of a reader who saw nothing: region, findings, relation and impression gone.

    None for a report that is normal already (nothing to miss).
    """
    lines = _report_lines(report)
    if not (lines.get("findings") or lines.get("impression")) \
            or (not fields.get("texture") and is_normal_finding(fields.get("diagnosis"))):
        return None
    kept = {key: lines[key] for key in ("modality", "organ") if key in lines}
    return _render_report({**kept, "findings": NO_ABNORMALITY, "impression": NO_ABNORMALITY})


def vague_answer(fields: dict, rng: random.Random) -> str:
    """A colloquial non-answer in place of the report."""
    organ = fields.get("organ")
    options = VAGUE_ANSWERS if organ else tuple(a for a in VAGUE_ANSWERS if "{organ}" not in a)
    return rng.choice(options).format(organ=organ)


def hallucinate(report: str, fields: dict, rng: random.Random) -> str | None:
    """The report plus one finding sentence the caption does not state, fitting the organ or modality."""
    known = (report + " " + " ".join(str(v) for v in fields.values() if v)).lower()
    pools = (fields.get("organ") or "", fields.get("modality") or "", "")  # most specific first
    options = next((fresh for pool in pools
                    if (fresh := [s for word, s in _HALLUCINATIONS.get(pool, ()) if word not in known])), None)
    if not options:
        return None
    sentence = rng.choice(options)
    lines = _report_lines(report)
    findings = lines.get("findings", "").rstrip(". ")
    lines["findings"] = f"{findings}. {sentence}" if findings else sentence
    return _render_report(lines)


# (task row, image size, rng) -> (rejected answer, rejected objects or None), or None if the error
# does not apply to that row.
Builder = Callable[[dict, tuple[int, int] | None, random.Random], tuple[str, dict | None] | None]


def _answer(row: dict) -> str:
    return row["messages"][-1]["content"]


def _text_builder(fn: Callable[[dict, random.Random], str | None]) -> Builder:
    def build(row: dict, size: tuple[int, int] | None, rng: random.Random) -> tuple[str, None] | None:
        rejected = fn(row, rng)
        return (rejected, None) if rejected and rejected != _answer(row) else None
    return build


def _shifted_box(row: dict, size: tuple[int, int] | None, rng: random.Random) -> tuple[str, dict] | None:
    objects = row.get("objects") or {}
    boxes = objects.get("bbox") or []
    if size is None or not boxes:
        return None
    index = rng.randrange(len(boxes))
    moved = shift_box(boxes, index, size[0], size[1], rng)
    if moved is None:
        return None
    new_boxes = [list(b) for b in boxes]
    new_boxes[index] = moved
    return _answer(row), {**objects, "bbox": new_boxes}


# error type -> (the task whose row it rewrites, its builder)
BUILDERS: dict[str, tuple[str, Builder]] = {
    "laterality": ("diagnose", _text_builder(lambda row, rng: swap_laterality(_answer(row)))),
    "shifted_box": ("locate", _shifted_box),
    "missed_finding": ("diagnose", _text_builder(
        lambda row, rng: miss_finding(_answer(row), row.get("fields") or {}))),
    "vague": ("diagnose", _text_builder(lambda row, rng: vague_answer(row.get("fields") or {}, rng))),
    "hallucination": ("diagnose", _text_builder(
        lambda row, rng: hallucinate(_answer(row), row.get("fields") or {}, rng))),
}


def _pair_rng(seed: int, id: str, error_type: str) -> random.Random:
    return random.Random(f"{seed}\0{id}\0{error_type}")


def _read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if text.strip():
                try:
                    yield json.loads(text)
                except json.JSONDecodeError as err:
                    raise PairsFormatError(f"{path}:{line}: not valid JSON ({err.msg})") from None


def _image_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """id -> (width, height) from rois.jsonl; skipped inputs there have no size and are left out."""
    if not path.is_file():
        return {}
    return {str(r["id"]): (int(r["width"]), int(r["height"]))
            for r in _read_jsonl(path) if r.get("width") and r.get("height")}


def synthetic_pairs(rows_path: str | Path, rois_path: str | Path, seed: int = 0) -> Iterator[dict]:
    """One synthetic pair per image of `rows_path`, error types balanced, deterministic from `seed`.

    Two streaming passes: the first notes which error types each image allows, then types are dealt
    greedily (the least used type the image allows, ties broken by the seeded RNG); the second builds
    the pairs. Memory holds an id, a size and a bit mask per image, never the rows.
    """
    rows_path, sizes = Path(rows_path), _image_sizes(Path(rois_path))
    allowed: dict[str, int] = {}  # id -> bit i set when ERROR_TYPES[i] can be built
    for row in _read_jsonl(rows_path):
        id = str(row["id"])
        mask = allowed.get(id, 0)
        for bit, error_type in enumerate(ERROR_TYPES):
            task, build = BUILDERS[error_type]
            if row.get("task") == task and not mask >> bit & 1 \
                    and build(row, sizes.get(id), _pair_rng(seed, id, error_type)) is not None:
                mask |= 1 << bit
        allowed[id] = mask
    counts, dealt, rng = Counter({t: 0 for t in ERROR_TYPES}), {}, random.Random(seed)
    for id, mask in allowed.items():
        types = [t for bit, t in enumerate(ERROR_TYPES) if mask >> bit & 1]
        if types:
            least = min(counts[t] for t in types)
            dealt[id] = rng.choice([t for t in types if counts[t] == least])
            counts[dealt[id]] += 1
    for row in _read_jsonl(rows_path):
        id = str(row["id"])
        error_type = dealt.get(id)
        if error_type is None or row.get("task") != BUILDERS[error_type][0]:
            continue
        del dealt[id]
        built = BUILDERS[error_type][1](row, sizes.get(id), _pair_rng(seed, id, error_type))
        assert built is not None, "builders are deterministic, pass 1 accepted this row"
        rejected, rejected_objects = built
        user = row["messages"][0]["content"]
        yield dpo_row(id=id, source="synthetic", error_type=error_type, prompt=user, chosen=_answer(row),
                      rejected=rejected, images=row["images"], objects=row.get("objects"),
                      rejected_objects=rejected_objects)


# --- CLI ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep pairs", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", required=True, type=Path,
                   help="converted DIR (DIR/<split>.jsonl, DIR/rois.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output JSONL of ms-swift DPO rows")
    p.add_argument("--clinician", type=Path,
                   help="clinician pairs, .csv or .jsonl (format: docs/preference_pairs.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=True,
                   help="add synthetic pairs (default on; --no-synthetic for clinician pairs only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rows_path = args.src / f"{args.split}.jsonl"
    counts: Counter[str] = Counter()
    tmp = args.out.with_name(args.out.name + ".tmp")
    try:
        if args.synthetic and not rows_path.is_file():
            raise PairsFormatError(f"{rows_path}: not found (run `python -m data_prep convert` first, "
                                   "or pass --no-synthetic)")
        clinician = read_clinician_pairs(args.clinician, [args.src]) if args.clinician else []
        synthetic = synthetic_pairs(rows_path, args.src / "rois.jsonl", args.seed) if args.synthetic else ()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as f:
            for row in itertools.chain(clinician, synthetic):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[row["error_type"]] += 1
        os.replace(tmp, args.out)
    except PairsFormatError as err:
        tmp.unlink(missing_ok=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{t}={n}" for t, n in sorted(counts.items())) or "none"
    print(f"wrote {sum(counts.values())} pairs to {args.out} ({summary})", file=sys.stderr)
    return 0
