"""Metric functions against hand-computed values (and sacrebleu's own documented example)."""
from __future__ import annotations

import math

import pytest

from eval import metrics
from eval.metrics import accuracy, auroc, bleu_scores, cider, matched_iou, mean, rouge_l, tokenize


def test_iou_of_hand_boxes():
    assert matched_iou([[0, 0, 10, 10]], [[0, 0, 10, 10]]) == 1.0
    assert matched_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]]) == pytest.approx(50 / 150)  # 5x10 overlap
    assert matched_iou([[0, 0, 10, 10]], [[2, 2, 4, 4]]) == pytest.approx(4 / 100)  # inside
    assert matched_iou([[0, 0, 10, 10]], [[20, 20, 30, 30]]) == 0.0
    assert matched_iou([[0, 0, 10, 10]], []) == 0.0
    assert matched_iou([], [[0, 0, 1, 1]]) == 0.0


def test_iou_of_box_sets_pairs_one_to_one_and_counts_misses_and_extras():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert matched_iou(gt, [[0, 0, 10, 10]]) == pytest.approx(0.5)  # one GT box missed
    assert matched_iou(gt, [[20, 20, 30, 30], [0, 0, 10, 10]]) == 1.0  # order does not matter
    assert matched_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [50, 50, 60, 60]]) == pytest.approx(0.5)  # extra box
    # One prediction cannot serve two GT boxes: best pair (IoU 1) taken, the other GT box gets nothing.
    assert matched_iou([[0, 0, 10, 10], [0, 0, 10, 20]], [[0, 0, 10, 10]]) == pytest.approx(0.5)
    # Greedy by IoU: (g0, p0) = 1 is taken first, which leaves (g1, p1) = 50 / (200 + 100 - 50).
    assert matched_iou([[0, 0, 10, 10], [0, 0, 10, 20]], [[0, 0, 10, 10], [5, 0, 15, 10]]) == pytest.approx(
        (1.0 + 50 / 250) / 2)


def test_bleu_matches_sacrebleus_documented_example():
    # sacrebleu README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [["The dog bit the man.", "The dog had bit the man."],
            ["It was not unexpected.", "No one was surprised."],
            ["The man bit him first.", "The man had bitten the dog."]]
    scores = bleu_scores(hyps, refs)
    assert scores["bleu_4"] == pytest.approx(48.53, abs=0.005)
    bp = math.exp(1 - 18 / 17)
    precisions = [14 / 17, 7 / 14, 5 / 11, 3 / 8]  # matched / total n-grams, from the printed percentages
    for n in range(1, 5):
        geo = math.exp(sum(math.log(p) for p in precisions[:n]) / n)
        assert scores[f"bleu_{n}"] == pytest.approx(100 * bp * geo, abs=1e-6)


def test_bleu_single_reference_and_empty():
    assert bleu_scores(["a b c d e"], ["a b c d e"])["bleu_4"] == pytest.approx(100.0)
    assert bleu_scores([], []) == {"bleu_1": None, "bleu_2": None, "bleu_3": None, "bleu_4": None}


def test_rouge_l_is_lcs_f_measure():
    # LCS("the cat on the mat", "the cat sat on the mat") = 5: P = 5/5, R = 5/6, F = 2PR/(P+R) = 10/11.
    # LCS("d c b a", "a b c d") = 1: P = R = F = 1/4.
    score = rouge_l(["the cat on the mat", "d c b a"], ["the cat sat on the mat", "a b c d"])
    assert score == pytest.approx((10 / 11 + 0.25) / 2)
    assert rouge_l([], []) is None


def test_cider_of_exact_answers_is_ten():
    # Each n-gram appears in one of two documents (idf log 2), so hypothesis and reference vectors are
    # equal and non-zero: cosine 1 for n = 1..4, no length penalty, times CIDEr-D's factor 10.
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]
    assert cider(texts, texts) == pytest.approx(10.0)
    assert cider(["iota kappa lambda mu", "nu xi omicron pi"], texts) == 0.0
    assert cider([], []) is None


def test_tokenize_for_coco_scorers():
    assert tokenize("Modality: CT\nFindings: Soft-tissue mass (3.5 cm), it's there.") == \
        "modality ct findings soft tissue mass 3.5 cm it's there"


def test_meteor_skipped_without_java(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    assert metrics.meteor(["a"], ["a"]) is None


def test_auroc_hand_computed():
    # Positive/negative pairs: (0.9, 0.6) (0.9, 0.1) (0.4, 0.1) ordered right, (0.4, 0.6) wrong -> 3/4.
    assert auroc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.8, 0.2]) == 1.0
    assert auroc([1, 0], [0.2, 0.8]) == 0.0


def test_auroc_ties_count_half():
    # Pairs: (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) = 1, (0.8 vs 0.5) = 1, (0.8 vs 0.2) = 1 -> 3.5/4.
    assert auroc([1, 0, 1, 0], [0.5, 0.5, 0.8, 0.2]) == pytest.approx(0.875)
    assert auroc([1, 0, 1, 0, 1], [0.5] * 5) == pytest.approx(0.5)
    # Mid-ranks over a run of three ties: pos {0.3, 0.3, 0.9}, neg {0.3, 0.1}:
    # 0.3-0.3 tie 1/2, 0.3-0.1 1 (twice each), 0.9 beats both -> (0.5 + 1) * 2 + 2 = 5 of 6.
    assert auroc([1, 1, 1, 0, 0], [0.3, 0.3, 0.9, 0.3, 0.1]) == pytest.approx(5 / 6)


def test_auroc_needs_both_classes():
    assert auroc([1, 1], [0.2, 0.3]) is None
    assert auroc([], []) is None


def test_accuracy_counts_unreadable_answers_wrong():
    assert accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5]) == pytest.approx(0.5)  # 0.5 >= threshold -> yes
    assert accuracy([1, 0], [0.5, 0.5], valid=[False, False]) == 0.0
    assert accuracy([], []) is None


def test_mean_of_nothing_is_undefined():
    assert mean([]) is None
    assert mean([1.0, 2.0]) == 1.5


def test_a_report_is_complete_with_a_line_for_every_field_of_its_reference():
    from eval.client import ChatResult
    from eval.score import report_labels, score_diagnose

    def result(text: str) -> ChatResult:
        return ChatResult(key="a", text=text, top_logprobs=None, error=None, attempts=1)

    reference = "Modality: CT\nOrgan: abdomen\nFindings: hyperdense lesion\nImpression: hemorrhage"
    row = {"id": "a", "task": "diagnose", "images": ["x.jpg"], "fields": {"modality": "CT"},
           "messages": [{"role": "user", "content": "<image>Report."}, {"role": "assistant", "content": reference}]}
    assert report_labels(reference) == {"Modality:", "Organ:", "Findings:", "Impression:"}
    repeated = "Modality: CT\nOrgan: CT\nOrgan: CT\nFindings: Findings: x"
    missing = score_diagnose(row, result(repeated))
    assert not missing["malformed"] and not missing["fields_complete"]  # no Impression line
    extra = score_diagnose(row, result(reference + "\nRelation: near the liver"))
    assert extra["fields_complete"]
    inline = score_diagnose(row, result("Modality: CT Organ: abdomen Findings: x Impression: y"))
    assert not inline["fields_complete"]  # labels count only at the start of a line
