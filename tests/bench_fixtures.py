"""Tiny copies of the five benchmarks in their exact release layouts, built from the bundled sample's images.

Each `write_*` lays out a folder as the public release ships it (Hugging Face parquet for VQA-RAD and
PathVQA, SLAKE's test.json + imgs/, PMC-VQA's test_2.csv + images/, OmniMedVQA's
QA_information/Open-access/*.json + Images/) and returns it. The questions are few and chosen to hit
each scoring rule.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import SAMPLE

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

VQA_RAD = [  # (question, answer) as the release writes them
    ("is there evidence of an aortic aneurysm?", "yes"),
    ("is the heart enlarged?", "no"),
    ("what organ is shown?", "liver"),
    ("where is the lesion located?", "right lobe"),
    ("Is this a CT scan?", "Yes"),
]
PATHVQA = [
    ("is there fibrosis?", "yes"),
    ("does this image show necrosis?", "no"),
    ("what is present?", "granuloma"),
    ("Is the nucleus enlarged?", "Yes"),  # capital Y: open prompt (PATH_VQA checks the raw answer), closed rule
]
SLAKE = [  # qid, img, question, answer, q_lang, answer_type, modality
    (11934, "xmlab102/source.jpg", "What modality is used to take this image?", "CT", "en", "OPEN", "CT"),
    (11939, "xmlab102/source.jpg", "Does the picture contain lung?", "Yes", "en", "CLOSED", "CT"),
    (11940, "xmlab102/source.jpg", "Does the picture contain heart?", "no", "en", "CLOSED", "CT"),
    (11975, "xmlab13/source.jpg", "Which organ is abnormal, heart or lung?", "Heart", "en", "CLOSED", "MRI"),
    (11980, "xmlab130/source.jpg", "What is the largest organ in the picture?", "Lung", "en", "OPEN", "X-Ray"),
    (12001, "xmlab130/source.jpg", "图片中最大的器官是什么?", "肺", "zh", "OPEN", "X-Ray"),
    (12002, "xmlab130/source.jpg", "这张图片包含肺吗?", "是", "zh", "CLOSED", "X-Ray"),
]
PMC_VQA = [  # index, Figure_path, Question, choices, Answer (letter), folder the image ships in
    ("0", "PMC1064097_F1.jpg", "What is the uptake pattern in the breast?",
     ("A:Diffuse uptake pattern", "B:Focal uptake pattern", "C:No uptake pattern",
      "D:Cannot determine from the information given"), "B", "images"),
    ("1", "PMC2000000_F2.jpg", "Which imaging modality was used?",
     ("A:CT", "B:MRI", "C:Ultrasound", "D:PET"), "A", "figures"),
    ("2", "PMC3000000_F3.jpg", "Where is the lesion?",
     ("A:Left lobe", "B:Right lobe", "C:Caudate lobe", "D:Gallbladder fossa"), "C", "images"),
]
OMNI = {  # file -> entries (question_id, question, gt_answer, options, modality key, modality, question_type, image)
    "ACRIMA.json": [
        ("ACRIMA_0001", "What is the diagnosis?", "Glaucoma", ("Normal", "Glaucoma", "Cataract", "Myopia"),
         "modality_type", "Fundus Photography", "Disease Diagnosis", "Images/ACRIMA/Im001.jpg"),
        ("ACRIMA_0002", "Is this eye normal?", "No", ("Yes", "No"),
         "modality_type", "Fundus Photography", "Disease Diagnosis", "Images/ACRIMA/Im002.jpg"),
    ],
    "Chest CT Scan.json": [
        ("CT_0001", "What imaging modality is this?", "CT", ("MR", "CT", "X-ray", "Ultrasound"),
         "modality", "CT(Computed Tomography)", "Modality Recognition", "Images/Chest CT Scan/ct1.jpg"),
        ("CT_0002", "Which organ is shown?", "Lungs.", ("Lung", "Liver", "Brain", "Kidney"),  # matches no option
         "modality_type", "CT(Computed Tomography)", "Anatomy Identification", "Images/Chest CT Scan/ct2.jpg"),
    ],
}


def sample_images(n: int) -> list[bytes]:
    """The first n JPEGs of the bundled sample (real medical images, see data/sample/SOURCES.md)."""
    return [row["image"]["bytes"] for row in pq.read_table(SAMPLE, columns=["image"]).slice(0, n).to_pylist()]


def _hf_parquet(path: Path, rows: list[tuple[str, str]], images: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "image": pa.array([{"bytes": images[i % len(images)], "path": f"synpic{i}.jpg"} for i in range(len(rows))],
                          type=IMAGE_TYPE),
        "question": [q for q, _ in rows], "answer": [a for _, a in rows]})
    pq.write_table(table, path)


def write_vqa_rad(root: Path) -> Path:
    """flaviagiammarino/vqa-rad as `huggingface-cli download` lays it out (train shard included, and ignored)."""
    images = sample_images(3)
    _hf_parquet(root / "data" / "test-00000-of-00001-e5bc3d208bb4deeb.parquet", VQA_RAD, images)
    _hf_parquet(root / "data" / "train-00000-of-00001-eb8844602202be60.parquet", [("ignored?", "yes")], images)
    (root / "README.md").write_text("# Dataset Card for VQA-RAD (fixture)\n")
    return root


def write_pathvqa(root: Path) -> Path:
    """flaviagiammarino/path-vqa as downloaded: the test split in two shards, plus a validation shard."""
    images = sample_images(2)
    _hf_parquet(root / "data" / "test-00000-of-00002.parquet", PATHVQA[:2], images)
    _hf_parquet(root / "data" / "test-00001-of-00002.parquet", PATHVQA[2:], images)
    _hf_parquet(root / "data" / "validation-00000-of-00001.parquet", [("ignored?", "no")], images)
    return root


def write_slake(root: Path) -> Path:
    """SLAKE's release folder: test.json (the original fields) and imgs/xmlabN/source.jpg."""
    images = sample_images(3)
    names = sorted({img for _, img, *_ in SLAKE})
    for name, data in zip(names, images):
        (root / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "imgs" / name).write_bytes(data)
    rows = [{"img_id": int(img.split("/")[0].removeprefix("xmlab")), "img_name": img, "question": q, "answer": a,
             "q_lang": lang, "location": "Lung", "modality": modality, "answer_type": answer_type,
             "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid}
            for qid, img, q, a, lang, answer_type, modality in SLAKE]
    (root / "test.json").write_text(json.dumps(rows, ensure_ascii=False))
    (root / "train.json").write_text("[]")
    return root


def write_pmc_vqa(root: Path) -> Path:
    """PMC-VQA version 2: test_2.csv with its ten columns, images unpacked under images/ (and figures/)."""
    images = sample_images(len(PMC_VQA))
    with (root / "test_2.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C",
                         "Choice D", "Answer", "split"])
        for (index, figure, question, choices, answer, folder), data in zip(PMC_VQA, images):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / figure).write_bytes(data)
            writer.writerow([index, figure, "A caption, with a comma.", question, *choices, answer, "test"])
    return root


def write_omnimedvqa(root: Path) -> Path:
    """OmniMedVQA's release: QA_information/Open-access/<dataset>.json and the images they point to."""
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    (root / "QA_information" / "Restricted-access").mkdir()
    images = iter(sample_images(sum(len(v) for v in OMNI.values())))
    for name, entries in OMNI.items():
        rows = []
        for qid, question, gt, options, modality_key, modality, qtype, image in entries:
            (root / image).parent.mkdir(parents=True, exist_ok=True)
            (root / image).write_bytes(next(images))
            rows.append({"dataset": name.removesuffix(".json"), "question_id": qid, "question_type": qtype,
                         "question": question, "gt_answer": gt, "image_path": image, modality_key: modality,
                         **{f"option_{letter}": option for letter, option in zip("ABCD", options)}})
        (qa / name).write_text(json.dumps(rows))
    return root


WRITERS = {"vqa-rad": write_vqa_rad, "slake": write_slake, "pathvqa": write_pathvqa, "pmc-vqa": write_pmc_vqa,
           "omnimedvqa": write_omnimedvqa}
