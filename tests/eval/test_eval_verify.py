"""Verify at evaluation: P(yes) from logprobs, held-out negatives, questions from a generated report."""
from __future__ import annotations

import math

import pytest

from data_prep.captions import CaptionFields
from data_prep.tasks import VERIFY_PROMPTS, finding_text, report_text, task_rows
from eval.verify import negative_rows, report_fields, verify_question, yes_probability

FIELDS = {
    "a": CaptionFields(modality="CT", organ="brain", texture="hyperdense area", diagnosis="intracranial hemorrhage"),
    "b": CaptionFields(modality="CT", organ="brain", texture="hypodense area", diagnosis="intracranial hemorrhage"),
    "c": CaptionFields(modality="MRI", organ="knee", texture="bright signal", diagnosis="meniscal tear"),
    "d": CaptionFields(modality="X-ray", organ="chest", texture="opacity", diagnosis="pneumonia"),
}


def verify_row(id_: str) -> dict:
    rows = task_rows(id=id_, image=f"/img/{id_}.png", width=100, height=80, boxes=[[10, 10, 50, 40]],
                     fields=FIELDS[id_])
    return next(r for r in rows if r["task"] == "verify")


def test_yes_probability_renormalises_over_yes_and_no():
    top = [("yes", math.log(0.6)), ("no", math.log(0.2)), ("maybe", math.log(0.1))]
    assert yes_probability(top) == pytest.approx(0.75)


def test_spellings_of_one_answer_are_pooled():
    top = [("yes", math.log(0.3)), (" Yes", math.log(0.3)), ("No", math.log(0.2)), ("no.", math.log(0.2))]
    assert yes_probability(top) == pytest.approx(0.6)


def test_a_missing_answer_gets_the_lowest_listed_logprob():
    top = [("yes", math.log(0.9)), ("Y", math.log(0.05)), ("sure", math.log(0.01))]
    assert yes_probability(top) == pytest.approx(0.9 / (0.9 + 0.01))
    assert yes_probability([("no", math.log(0.7)), ("x", math.log(0.1))]) == pytest.approx(0.1 / 0.8)


@pytest.mark.parametrize("top", [None, [], [("maybe", -0.1), ("perhaps", -2.0)], [("yes", float("-inf"))]])
def test_no_answer_among_logprobs_is_unreadable(top):
    assert yes_probability(top) is None


def test_negatives_swap_in_a_finding_of_another_diagnosis():
    positives = [verify_row(i) for i in "abcd"]
    negatives = negative_rows(positives, seed=0)
    assert len(negatives) == 4
    diagnosis_of = {p["finding"]: p["fields"]["diagnosis"] for p in positives}
    for pos, neg in zip(positives, negatives):
        assert neg["id"] == pos["id"] and neg["label"] == 0 and neg["messages"][1]["content"] == "no"
        assert diagnosis_of[neg["finding"]] != pos["fields"]["diagnosis"]  # "a" and "b" never swap with each other
        assert neg["messages"][0]["content"] == pos["messages"][0]["content"].replace(pos["finding"], neg["finding"])
        assert neg["objects"] == pos["objects"] and neg["images"] == pos["images"]


def test_negatives_are_deterministic_and_seeded():
    positives = [verify_row(i) for i in "abcd"]
    assert negative_rows(positives, seed=0) == negative_rows(list(positives), seed=0)
    picks = {tuple(n["finding"] for n in negative_rows(positives, seed=s)) for s in range(20)}
    assert len(picks) > 1


def test_no_negative_without_another_diagnosis():
    assert negative_rows([verify_row("a"), verify_row("b")]) == []


def test_report_fields_read_a_report_back():
    fields = CaptionFields(modality="MRI", organ="knee", texture="bright signal in the posterior horn",
                           relation="next to the tibial plateau", diagnosis="meniscal tear")
    back = report_fields(report_text(fields, [[10, 10, 50, 40]], 100, 80))
    assert (back.modality, back.organ, back.texture, back.relation, back.diagnosis) == (
        "MRI", "knee", "bright signal in the posterior horn", "next to the tibial plateau", "meniscal tear")
    assert finding_text(back) == finding_text(fields)
    assert report_fields("CT of something, no structure") == CaptionFields()
    assert report_fields("Impression: CT-guided biopsy advised").diagnosis == "CT-guided biopsy advised"


def test_verify_question_is_a_trained_phrasing():
    question, finding = verify_question(FIELDS["c"], 2)
    assert finding == "meniscal tear"
    assert question == VERIFY_PROMPTS[0].format(subject="MRI image of the knee", regions="regions <bbox> and <bbox>",
                                                finding="meniscal tear")
    assert verify_question(FIELDS["c"], 0) is None
    assert verify_question(CaptionFields(modality="CT"), 1) is None
