"""One loader per benchmark: its published release folder -> uniform, validated BenchItems.

Each loader reads the split and subset MedEvalKit scores (its utils/<NAME>/<NAME>.py load_data at
commit 9b12e3b), builds MedEvalKit's prompt and picks MedEvalKit's rule for each item. Everything is
checked before the first request goes out (files present, images readable, known answer types),
so bad data stops the run with a message saying what to fix and nothing gets written.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from eval.bench.prompts import LANGUAGES, choice_prompt, question_prompt
from eval.samples import DataError

PMC_COLUMNS = ("index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
               "Answer", "split")
# Columns read by position, as MedEvalKit unpacks them; their names are checked loosely (any case, and
# version 1's "Anwser" spelling), the unread ones (index, Caption, split) not at all.
_PMC_NAMED = {1: ("figure_path",), 3: ("question",), 4: ("choice a",), 5: ("choice b",), 6: ("choice c",),
              7: ("choice d",), 8: ("answer", "anwser")}
OPTION_LETTERS = ("A", "B", "C", "D")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class BenchItem:
    """One question: MedEvalKit's prompt (the image goes before it), the answer and the rule to score it."""

    id: str  # position in the run (request key); the release's own id is source_id
    source_id: str
    question: str
    answer: str
    prompt: str
    image: Path
    rule: str  # scoring.Rule
    choices: tuple[str, ...] = ()
    groups: dict[str, str] = field(default_factory=dict)  # breakdown keys: modality, language, question_type

    @property
    def kind(self) -> str:
        """closed / open / choice: the breakdown MedEvalKit reports for the VQA benchmarks."""
        return {"judgement": "closed", "close_exact": "closed", "open": "open"}.get(self.rule, "choice")


@dataclass
class LoadResult:
    items: list[BenchItem]
    release: str  # which published release was read, for metrics.json
    notes: list[str] = field(default_factory=list)  # data facts worth reporting (e.g. answers not among options)


def read_question_list(path: Path) -> list:
    """A release's JSON file of questions (a list), or a DataError naming the file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of questions")
    return rows


def check_image(path: Path, where: str) -> None:
    """The file exists and its header is an image PIL reads (pixels are decoded by the server)."""
    if not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{where}: {path} is not a readable image ({e})") from None


def _text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} is {value!r}, expected a non-empty string")
    return value


# --- Hugging Face parquet releases: VQA-RAD, PathVQA ----------------------------------------------------

def _test_parquets(data: Path, hf_name: str) -> list[Path]:
    files = sorted(data.glob("data/test-*.parquet")) or sorted(data.glob("test-*.parquet"))
    if not files:
        raise DataError(f"{data}: no test split found. Expected the Hugging Face release {hf_name} as "
                        f"downloaded: DIR/data/test-*.parquet (`huggingface-cli download {hf_name} "
                        f"--repo-type dataset --local-dir DIR`)")
    return files


def _parquet_rows(files: list[Path]) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    for path in files:
        try:
            table = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        missing = {"image", "question", "answer"} - set(table.schema_arrow.names)
        if missing:
            raise DataError(f"{path}: columns {sorted(missing)} missing; the release has image, question, answer")
        row_no = 0
        for batch in table.iter_batches(batch_size=256, columns=["image", "question", "answer"]):
            for row in batch.to_pylist():
                yield f"{path.name} row {row_no}", row
                row_no += 1


def _save_embedded_image(cell: object, where: str, dest_stem: Path) -> Path:
    """The parquet image struct {bytes, path} -> a file (the client sends files); checked as it is written."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DataError(f"{where}: the image has no embedded bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            suffix = {"JPEG": ".jpg", "PNG": ".png"}.get(im.format or "", f".{(im.format or 'img').lower()}")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{where}: the embedded image is not readable ({e})") from None
    path = dest_stem.with_suffix(suffix)
    path.write_bytes(data)
    return path


def _load_hf_yes_no_open(data: Path, workdir: Path, limit: int | None, hf_name: str,
                         prompt_lowercases_answer: bool) -> LoadResult:
    """VQA-RAD and PathVQA: closed = the answer is "yes"/"no", scored by the yes/no rule; others open."""
    items: list[BenchItem] = []
    workdir.mkdir(parents=True, exist_ok=True)
    for where, row in _parquet_rows(_test_parquets(data, hf_name)):
        if limit is not None and len(items) >= limit:
            break
        question = _text(row["question"], "question", where)
        answer = _text(row["answer"], "answer", where)
        image = _save_embedded_image(row["image"], where, workdir / f"{len(items):06d}")
        # VQA_RAD.construct_messages lower-cases before choosing the prompt; PATH_VQA's does not.
        prompt_closed = (answer.lower() if prompt_lowercases_answer else answer) in ("yes", "no")
        items.append(BenchItem(
            id=str(len(items)), source_id=where, question=question, answer=answer, image=image,
            prompt=question_prompt(question, "judgement" if prompt_closed else "open"),
            rule="judgement" if answer.lower().strip() in ("yes", "no") else "open"))
    return LoadResult(items, f"Hugging Face {hf_name}, test split (parquet)")


def load_vqa_rad(data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """flaviagiammarino/vqa-rad test split (451 questions), as MedEvalKit's VQA_RAD loads it."""
    return _load_hf_yes_no_open(data, workdir, limit, "flaviagiammarino/vqa-rad", prompt_lowercases_answer=True)


def load_pathvqa(data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """flaviagiammarino/path-vqa test split (6,719 questions), as MedEvalKit's PATH_VQA loads it."""
    return _load_hf_yes_no_open(data, workdir, limit, "flaviagiammarino/path-vqa", prompt_lowercases_answer=False)


# --- SLAKE: the original release folder (test.json + imgs/) ---------------------------------------------

def load_slake(data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """SLAKE 1.0 test.json, both languages, as MedEvalKit's SLAKE loads it (BoKelvin/SLAKE mirror).

    OPEN questions are scored open; CLOSED ones by the yes/no rule when the answer is exactly "yes" or
    "no" (case-sensitive, so the release's "Yes"/"No" fall through) and otherwise by exact match.
    """
    test_json, imgs = data / "test.json", data / "imgs"
    if not test_json.is_file() or not imgs.is_dir():
        raise DataError(f"{data}: expected the SLAKE release layout DIR/test.json and DIR/imgs/<img_name> "
                        "(BoKelvin/SLAKE: unzip imgs.zip inside DIR)")
    rows = read_question_list(test_json)
    items: list[BenchItem] = []
    checked: set[Path] = set()
    for n, row in enumerate(rows):
        if limit is not None and len(items) >= limit:
            break
        where = f"{test_json} item {n}" + (f" (qid {row.get('qid')})" if isinstance(row, dict) else "")
        if not isinstance(row, dict):
            raise DataError(f"{where}: not a JSON object")
        missing = [k for k in ("img_name", "question", "answer", "answer_type", "q_lang") if k not in row]
        if missing:
            raise DataError(f"{where}: fields {missing} missing")
        answer_type, lang = row["answer_type"], row["q_lang"]
        if answer_type not in ("OPEN", "CLOSED"):
            raise DataError(f"{where}: unknown answer_type {answer_type!r}; SLAKE uses OPEN or CLOSED")
        if lang not in LANGUAGES:
            raise DataError(f"{where}: unknown q_lang {lang!r}; SLAKE uses en or zh")
        question = _text(row["question"], "question", where)
        answer = _text(row["answer"], "answer", where)
        image = imgs / _text(row["img_name"], "img_name", where)
        if image not in checked:
            check_image(image, where)
            checked.add(image)
        if answer_type == "OPEN":
            rule = "open"
        else:
            rule = "judgement" if answer in ("yes", "no") else "close_exact"
        items.append(BenchItem(
            id=str(len(items)), source_id=str(row.get("qid", n)), question=question, answer=answer, image=image,
            rule=rule,
            prompt=question_prompt(question, "open" if answer_type == "OPEN" else "closed", lang),
            groups={"modality": str(row.get("modality") or UNKNOWN), "language": lang}))
    return LoadResult(items, "SLAKE 1.0 release (BoKelvin/SLAKE): test.json, English and Chinese, imgs/")


# --- PMC-VQA: test_2.csv + figures/ or images/ ----------------------------------------------------------

def load_pmc_vqa(data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """PMC-VQA version 2 test set (test_2.csv), as MedEvalKit's PMC_VQA loads it (RadGenome/PMC-VQA mirror).

    Images are looked up in DIR/figures/ and then DIR/images/ (where images.zip / images_2.zip unpack).
    """
    csv_path = data / "test_2.csv"
    if not csv_path.is_file():
        raise DataError(f"{data}: expected the PMC-VQA release layout DIR/test_2.csv with images under "
                        "DIR/images/ or DIR/figures/ (RadGenome/PMC-VQA or xmcmic/PMC-VQA: unzip images.zip "
                        "and images_2.zip inside DIR)")
    items: list[BenchItem] = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != len(PMC_COLUMNS) or any(
                header[i].strip().lower() not in names for i, names in _PMC_NAMED.items()):
            raise DataError(f"{csv_path}: header {header} is not PMC-VQA test_2.csv's {list(PMC_COLUMNS)}")
        for row in reader:
            if limit is not None and len(items) >= limit:
                break
            where = f"{csv_path} line {reader.line_num}"
            if len(row) != len(PMC_COLUMNS):
                raise DataError(f"{where}: {len(row)} fields, expected {len(PMC_COLUMNS)}")
            _, figure, _, question, *choices, answer, _ = row
            _text(question, "Question", where)
            if answer.strip().upper() not in OPTION_LETTERS:
                raise DataError(f"{where}: Answer {answer!r} is not an option letter A-D")
            image = data / "figures" / figure
            if not image.is_file():
                image = data / "images" / figure
            if not image.is_file():
                raise DataError(f"{where}: image file {figure!r} not found in {data / 'figures'} or {data / 'images'}")
            check_image(image, where)
            items.append(BenchItem(id=str(len(items)), source_id=row[0], question=question, answer=answer,
                                   image=image, rule="multi_choice",
                                   choices=tuple(choices), prompt=choice_prompt(question, choices)))
    return LoadResult(items, "PMC-VQA version 2 test set (test_2.csv), RadGenome/PMC-VQA or xmcmic/PMC-VQA")


# --- OmniMedVQA: QA_information/Open-access/*.json + Images/ --------------------------------------------

def load_omnimedvqa(data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """OmniMedVQA open-access questions (QA_information/Open-access/*.json), as MedEvalKit's OmniMedVQA loads them.

    Options become "A. text"; the answer becomes the letter of the option equal to gt_answer, and stays
    gt_answer's text when no option equals it (MedEvalKit does the same; such items are counted).
    """
    qa_dir = data / "QA_information" / "Open-access"
    files = sorted(qa_dir.glob("*.json")) if qa_dir.is_dir() else []
    if not files:
        raise DataError(f"{data}: expected the OmniMedVQA release layout DIR/QA_information/Open-access/*.json "
                        "with DIR/<image_path> (foreverbeliever/OmniMedVQA: unzip OmniMedVQA.zip; DIR is the "
                        "folder holding QA_information/ and Images/)")
    items: list[BenchItem] = []
    unmatched = 0
    checked: set[Path] = set()
    for path in files:
        rows = read_question_list(path)
        for n, row in enumerate(rows):
            if limit is not None and len(items) >= limit:
                break
            where = f"{path} item {n}"
            if not isinstance(row, dict):
                raise DataError(f"{where}: not a JSON object")
            missing = [k for k in ("question", "gt_answer", "image_path", "question_type") if k not in row]
            # One released entry (Chest CT Scan.json) spells modality_type as modality.
            if "modality_type" not in row and "modality" not in row:
                missing.append("modality_type")
            if missing:
                raise DataError(f"{where}: fields {missing} missing")
            question = _text(row["question"], "question", where)
            gt = _text(row["gt_answer"], "gt_answer", where)
            choices, answer, matched = [], gt, False
            for letter in OPTION_LETTERS:
                if f"option_{letter}" in row:
                    option = str(row[f"option_{letter}"])
                    if option == gt:
                        answer, matched = letter, True
                    choices.append(f"{letter}. {option}")
            if len(choices) < 2:
                raise DataError(f"{where}: {len(choices)} option_A..option_D fields, a choice needs at least 2")
            unmatched += not matched
            image = data / _text(row["image_path"], "image_path", where)
            if image not in checked:
                check_image(image, where)
                checked.add(image)
            items.append(BenchItem(
                id=str(len(items)), source_id=str(row.get("question_id", f"{path.name}#{n}")), question=question,
                answer=answer, image=image,
                rule="multi_choice", choices=tuple(choices), prompt=choice_prompt(question, choices),
                groups={"modality": str(row.get("modality_type") or row.get("modality") or UNKNOWN),
                        "question_type": str(row["question_type"] or UNKNOWN)}))
    notes = [f"{unmatched} item(s) whose gt_answer equals no option keep the answer text (MedEvalKit does too)"] \
        if unmatched else []
    return LoadResult(items, "OmniMedVQA release (foreverbeliever/OmniMedVQA): QA_information/Open-access", notes)


LOADERS: dict[str, Callable[[Path, Path, int | None], LoadResult]] = {
    "vqa-rad": load_vqa_rad, "slake": load_slake, "pathvqa": load_pathvqa, "pmc-vqa": load_pmc_vqa,
    "omnimedvqa": load_omnimedvqa,
}


def load(benchmark: str, data: Path, workdir: Path, limit: int | None = None) -> LoadResult:
    """The benchmark's validated items; DataError (with what to fix) for a missing folder or bad data."""
    if not data.is_dir():
        raise DataError(f"benchmark folder {data} does not exist")
    result = LOADERS[benchmark](data, workdir, limit)
    if not result.items:
        raise DataError(f"{data}: the {benchmark} test set has no questions")
    return result
