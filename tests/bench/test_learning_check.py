"""The learning check's data: `make data` on generated lesions, split by image id (the held-out set of every
ladder rung) or by group, each split in its own folder so that --reuse never scores a run on the other one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.learning_check import build_parser, prepare_data
from data_prep.splits import split_of


def ids_of(path: Path) -> set[str]:
    return {json.loads(line)["id"] for line in path.read_text().splitlines()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("learning-check")


def test_the_id_split_holds_out_what_a_hash_of_each_id_picks(work: Path) -> None:
    args = build_parser().parse_args(["--images", "200", "--work", str(work), "--split-by", "id"])
    data, truth, notes = prepare_data(args)
    expected = {i for i in truth if split_of(i, 0.05, 0.05) == "test"}
    assert data == work / "data" and notes["split_by"] == "id" and len(truth) == 200
    assert expected and ids_of(data / "test_multitask.jsonl") == expected


def test_reuse_keeps_only_data_of_the_same_split(work: Path) -> None:
    reused = build_parser().parse_args(["--images", "200", "--work", str(work), "--split-by", "id", "--reuse"])
    assert prepare_data(reused)[2]["data"].startswith("reused")
    grouped = build_parser().parse_args(["--images", "200", "--work", str(work), "--split-by", "group", "--reuse"])
    data, truth, notes = prepare_data(grouped)
    assert data == work / "data-group" and "data" not in notes and notes["split_by"] == "group"
    assert set().union(*(ids_of(data / f"{s}_multitask.jsonl") for s in ("train", "val", "test"))) == set(truth)
    # at 200 images the perceptual hash links a few lesions on alike backgrounds: the group split differs
    assert ids_of(data / "test_multitask.jsonl") != ids_of(work / "data" / "test_multitask.jsonl")
