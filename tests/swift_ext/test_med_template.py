"""med_* templates: token spans per task and family, and negatives that never leak."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data_prep.captions import parse_caption
from data_prep.tasks import multitask_row, task_rows
from medvlm_vocab import FAMILIES, IGNORE_INDEX, KEEP_KEY, TINY_FAMILIES
from tests.conftest import ROOT, SAMPLE

IGNORE = IGNORE_INDEX
MANIFEST = ROOT / "data" / "sample" / "manifest.jsonl"


@pytest.fixture(scope="module")
def sample_rows(tmp_path_factory) -> list[dict]:
    """Multi-turn rows (locate -> verify -> diagnose) for bundled images with distinct findings."""
    out = tmp_path_factory.mktemp("rows")
    manifest = {m["id"]: m for m in map(json.loads, MANIFEST.read_text().splitlines())}
    rows, seen_sources = [], set()
    for rec in pq.read_table(SAMPLE).to_pylist():
        meta = manifest[rec["id"]]
        if meta["source"] in seen_sources:
            continue
        fields = parse_caption(rec["caption"])
        image = out / f"{rec['id']}.jpg"
        image.write_bytes(rec["image"]["bytes"])
        per_task = task_rows(id=rec["id"], image=str(image), width=meta["width"], height=meta["height"],
                             boxes=meta["boxes"], fields=fields)
        if [r["task"] for r in per_task] == ["locate", "verify", "diagnose"]:
            rows.append(multitask_row(per_task))
            seen_sources.add(meta["source"])
        if len(rows) == 4:
            return rows
    raise AssertionError("the sample should hold 4 sources with all three tasks")


def make_template(family: str, models_dir: Path, monkeypatch, negative_ratio: float):
    monkeypatch.setenv("MAX_PIXELS", str(64 * 28 * 28))
    monkeypatch.setenv("IMAGE_MAX_TOKEN_NUM", "64")
    monkeypatch.setenv("MEDVLM_NEGATIVE_RATIO", str(negative_ratio))
    from swift import get_model_processor, get_template

    from swift_ext.templates import register_med_templates

    register_med_templates()
    model, processor = get_model_processor(str(models_dir / f"tiny-{family.replace('_', '-')}"),
                                           model_type=FAMILIES[family].swift_model_type)
    template = get_template(processor, template_type=f"med_{family}", remove_unused_columns=False)
    template.set_mode("train")
    template.model = model
    return template


def decode_where(template, encoded: dict, positions) -> str:
    return template.tokenizer.decode([encoded["input_ids"][i] for i in positions])


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_task_spans(family, sample_rows, models_dir, monkeypatch):
    template = make_template(family, models_dir, monkeypatch, 0.0)
    row = sample_rows[0]
    encoded = template.encode(row)
    med, labels = encoded["med"], encoded["labels"]
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE]
    assert [med["task"][i] for i in trained] == sorted(med["task"][i] for i in trained)  # locate, verify, diagnose
    assert all(med["task"][i] == 0 for i, lab in enumerate(labels) if lab == IGNORE)

    locate = decode_where(template, encoded, [i for i in trained if med["task"][i] == 1])
    assert locate.startswith("<|object_ref_start|>region of interest<|object_ref_end|><|box_start|>(")
    verify = [i for i in trained if med["task"][i] == 2]
    assert verify[0] == med["verify_pos"] and decode_where(template, encoded, verify[:1]) == "yes"
    assert med["decision"][verify[0]] == 1 and sum(d >= 0 for d in med["decision"]) == 1
    diagnose = decode_where(template, encoded, [i for i in trained if med["task"][i] == 3])
    assert diagnose.startswith("Modality: ")
    weighted = decode_where(template, encoded, [i for i, w in enumerate(med["weight"]) if w > 1])
    assert row["fields"]["diagnosis"][:20].lower() in weighted.lower()
    assert "Modality" not in weighted and "<|im_end|>" not in weighted
    s, e = med["finding"]
    assert template.tokenizer.decode(encoded["input_ids"][s:e]).strip() == row["finding"]
    start, n = med["image"]
    assert encoded["input_ids"][start:start + n] == [template.image_token_id] * n
    assert n == int(encoded["image_grid_thw"].prod()) // 4


def test_locate_box_count_matches_objects(sample_rows, models_dir, monkeypatch):
    template = make_template("qwen2_vl", models_dir, monkeypatch, 0.0)
    for row in sample_rows:
        encoded = template.encode(row)
        locate = decode_where(template, encoded, [i for i, t in enumerate(encoded["med"]["task"]) if t == 1])
        n_locate_boxes = row["messages"][1]["content"].count("<bbox>")
        assert locate.count("<|box_start|>") == n_locate_boxes


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_negatives_never_leak(family, sample_rows, models_dir, monkeypatch):
    template = make_template(family, models_dir, monkeypatch, 1.0)
    encoded = [template.encode(r) for r in sample_rows]
    positives = [dict(e) for e in encoded]
    no_id, yes_id = template.answer_token_id("no"), template.answer_token_id("yes")
    modes = set()
    rounds = [template.add_negatives([dict(e) for e in encoded]) for _ in range(4)]  # each batch draws anew
    for pos, neg in zip(positives * len(rounds), sum(rounds, [])):
        med = neg["med"]
        assert med["negative"] in {"image", "finding"}
        modes.add(med["negative"])
        trained = [k for k, lab in enumerate(neg["labels"]) if lab != IGNORE]
        # Only the verify answer is trained, and it is "no".
        assert all(med["task"][k] == 2 for k in trained)
        assert neg["labels"][med["verify_pos"]] == no_id == neg["input_ids"][med["verify_pos"]]
        assert med["decision"][med["verify_pos"]] == 0 and yes_id not in [neg["labels"][k] for k in trained]
        assert len(neg["input_ids"]) == len(neg["labels"]) == len(med["task"]) == len(med["weight"])
        n_image = neg["input_ids"].count(template.image_token_id)
        assert n_image == int(neg["image_grid_thw"].prod()) // 4
        if med["negative"] == "image":
            assert not torch.equal(neg["pixel_values"], pos["pixel_values"]) or \
                neg["pixel_values"].shape != pos["pixel_values"].shape
            partner = next(p for p in positives if p["pixel_values"] is neg["pixel_values"])
            assert partner["med"]["finding_key"] != pos["med"]["finding_key"]
        else:
            s, e = med["finding"]
            asked = template.tokenizer.decode(neg["input_ids"][s:e]).strip().lower()
            assert asked == med["finding_key"] != pos["med"]["finding_key"]
    assert modes == {"image", "finding"}

    batch = template.data_collator(encoded)
    assert set(batch["med_task"].tolist()) == {2}
    assert (batch["med_decision"] >= 0).sum() == len(encoded) and batch["med_decision"].max() == 0
    # Every label token knows its sample, in row-major order: the loss's per-sample means need it. The
    # labels reach the loss packed into one row (swift_ext.logit_positions); KEEP_KEY holds their rows.
    label_rows = batch[KEEP_KEY][0]
    assert torch.equal(batch["med_sample"], label_rows) and label_rows.tolist() == sorted(label_rows.tolist())
    assert batch["labels"].shape == (1, len(label_rows) + 1)
    assert "finding" not in batch and "tasks" not in batch  # row columns never reach the model


def test_negative_ratio(sample_rows, models_dir, monkeypatch):
    template = make_template("qwen2_vl", models_dir, monkeypatch, 0.3)
    encoded = [template.encode(r) for r in sample_rows]
    counts = []
    for _ in range(50):
        counts.append(sum(n["med"]["negative"] is not None for n in template.add_negatives(list(encoded))))
    share = sum(counts) / (50 * len(encoded))
    assert 0.2 < share < 0.4
    assert all(e["med"]["negative"] is None for e in encoded)


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_padding_free_batch_keeps_the_task_annotations(family, sample_rows, models_dir, monkeypatch):
    """padding_free packs the batch into one row in place; every per-label annotation must still
    follow its sample's labels, in the same order as the padded batch."""
    template = make_template(family, models_dir, monkeypatch, 0.0)
    encoded = [template.encode(r, return_length=True) for r in sample_rows]  # as swift's dataset map does
    padded = template.data_collator([dict(e) for e in encoded])
    template.padding_free = True
    packed = template.data_collator([dict(e) for e in encoded])
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert torch.equal(packed["labels"][packed["labels"] != IGNORE], padded["labels"][padded["labels"] != IGNORE])
    for key in ("med_task", "med_weight", "med_decision", "med_sample"):
        assert torch.equal(packed[key], padded[key]), key
    assert packed["med_sample"].unique().tolist() == list(range(len(sample_rows)))
