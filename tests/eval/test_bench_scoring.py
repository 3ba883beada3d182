"""MedEvalKit's rules (eval.bench.scoring) against values worked out by hand from the rules' definitions.

Each case states the rule's steps in its comment, so a failing case shows which step changed.
"""
from __future__ import annotations

import pytest

from eval.bench.scoring import (boxed_content, final_answer_text, judge_choice, judge_exact, judge_open,
                                judge_yes_no, most_similar, score, strip_special_tokens, tagged, token_overlap)

PMC = ["A:Diffuse uptake pattern", "B:Focal uptake pattern", "C:No uptake pattern",
       "D:Cannot determine from the information given"]
OMNI = ["A. Normal", "B. Glaucoma", "C. Cataract", "D. Myopia"]


# --- answer extraction ----------------------------------------------------------------------------------

@pytest.mark.parametrize("response,expected", [
    ("Liver", "liver"),                                    # lower-cased, nothing else
    ("\\boxed{Right {upper} lobe}", "right {upper} lobe"),  # braces balanced inside \boxed{}
    ("It is boxed in by fat", "None"),                     # "boxed" without \boxed{...}: MedEvalKit's literal "None"
    ("<think>maybe</think><answer> Right lobe </answer>", "right lobe"),
    ("**Answer**: lung", " lung"),                          # split after the marker, not stripped
    ("The answer is: Yes.", ": yes."),                     # "answer is" comes before "answer:" in the list
    ("Final answer: C", " c"),                             # "answer:" splits first, "final answer" no longer occurs
])
def test_final_answer_text(response, expected):
    assert final_answer_text(response) == expected


def test_boxed_and_tagged_helpers():
    assert boxed_content("first \\boxed{a} then \\boxed{b}") == "b"  # the last one
    assert boxed_content("\\boxed{unclosed") is None
    assert tagged("<answer>a</answer> and <answer>b</answer>", "answer") == "a b"
    assert tagged("<answer>a", "answer") == "<answer>a"  # no closing tag: the text itself
    assert tagged("<answer>  </answer>", "answer") == "<answer>  </answer>"  # blank span: the text itself
    assert strip_special_tokens("Yes<|im_end|><|endoftext|>") == "Yes"


# --- closed questions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer,response,expected", [
    ("yes", "Yes.", True),
    ("no", "No, there is not.", True),         # "no" occurs, "yes" does not, and "no" is in it
    ("yes", "Yes, no doubt.", False),          # both occur: never right
    ("no", "The heart appears normal", True),  # "normal" contains "no": MedEvalKit's substring quirk
    ("yes", "The eyes are open", True),        # "eyes" contains "yes"
    ("yes", "Y", False),
    ("no", "", False),
])
def test_yes_no_rule(answer, response, expected):
    assert judge_yes_no(answer, response) is expected


@pytest.mark.parametrize("answer,response,expected", [
    ("Yes", "Yes.", True),             # periods dropped, answer lower-cased
    ("Yes", "Yes, it does.", False),   # whole-string match only
    ("Heart", "The heart", False),     # articles are not removed
    ("Heart", "heart\n", True),        # newlines dropped
    ("是", "是。", False),               # only ASCII periods are removed
    ("Left Lung, Right", "left lung, right", True),
])
def test_closed_exact_rule(answer, response, expected):
    assert judge_exact(answer, response) is expected


# --- open questions -------------------------------------------------------------------------------------

def test_open_exact_answer_scores_em_but_no_3_or_4_gram_bleu():
    m = judge_open("right lobe", "right lobe")
    assert m["em"] == 1.0 and m["bleu1"] == pytest.approx(1.0) and m["bleu2"] == pytest.approx(1.0)
    # A 2-token answer has no 3-grams: NLTK (no smoothing) puts the smallest float in for the zero
    # precision, so BLEU-3/4 are ~1e-103, i.e. 0 for any average.
    assert m["bleu3"] < 1e-100 and m["bleu4"] < 1e-100
    assert m["rouge1"] == pytest.approx(1.0, abs=1e-6) and m["rougel"] == pytest.approx(1.0, abs=1e-6)
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)


def test_open_partial_answer_metrics():
    # prediction tokens {the, right, upper, lobe}, reference {right, lobe}: 2 shared
    m = judge_open("Right lobe", "The right upper lobe")
    assert m["em"] == 0.0
    assert (m["precision"], m["recall"]) == (0.5, 1.0) and m["f1"] == pytest.approx(2 / 3)
    assert m["bleu1"] == pytest.approx(0.5)  # 2 of 4 unigrams clipped-match; prediction longer: no brevity penalty
    assert m["bleu2"] < 1e-100               # no shared bigram (NLTK's smallest-float stand-in for 0)
    assert m["rouge1"] == pytest.approx(2 / 3, abs=1e-6)  # P 2/4, R 2/2
    assert m["rouge2"] == pytest.approx(0.0, abs=1e-6)
    assert m["rougel"] == pytest.approx(2 / 3, abs=1e-6)  # LCS "right lobe" = 2


def test_open_empty_answer_scores_zero_instead_of_crashing():
    m = judge_open("liver", "")
    assert all(v == 0.0 for v in m.values())
    assert token_overlap("", "liver") == (0.0, 0.0, 0.0)
    assert token_overlap("kidney", "liver") == (0.0, 0.0, 0.0)


# --- multiple choice ------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,answer,expected", [
    ("B", "B", True),                                     # the letter itself
    ("b.", "B", True),                                    # text before the first period
    ("The answer is B.", "B", True),                      # after the "answer is" marker: " b." -> "b"
    ("B:Focal uptake pattern", "B", True),                # after the colon "focal uptake pattern": no exact hit,
                                                          # most similar option is B's own text
    ("Focal uptake pattern", "B", True),                  # option text without its letter: most similar is B
    ("b\n\nBecause the uptake is focal.", "B", True),     # a bare letter as first paragraph wins
    ("The uptake is focal.\n\nC. No uptake", "B", False),  # last paragraph's letter (C) is taken
    ("Answer: D", "C", False),
    ("", "A", True),                                      # nothing similar: option A is taken
    ("", "B", False),
])
def test_choice_rule_pmc_style_options(response, answer, expected):
    assert judge_choice(PMC, answer, response) is expected


def test_choice_rule_letter_vs_text_answers():
    assert judge_choice(OMNI, "B", "Glaucoma")          # "glaucoma" is most similar to "b. glaucoma"
    assert judge_choice(OMNI, "B", "B. Glaucoma")
    assert not judge_choice(OMNI, "B", "A")
    # An answer given as text (OmniMedVQA gt_answer that equals no option): neither a letter nor an
    # option's text can equal it, so the item is wrong whatever the model says.
    lung = ["A. Lung", "B. Liver", "C. Brain", "D. Kidney"]
    assert not judge_choice(lung, "Lungs.", "A") and not judge_choice(lung, "Lungs.", "Lungs.")
    assert most_similar(["a. yes", "b. no"], "no") == 1 and most_similar(["x", "y"], "") == 0


# --- per-benchmark pre-processing -----------------------------------------------------------------------

def test_vqa_rad_and_pathvqa_lower_and_strip_before_the_rule():
    assert score("vqa-rad", "judgement", "Yes", "  YES  ").correct
    assert score("vqa-rad", "judgement", "yes", "Yes, it does.").correct  # the yes/no rule tolerates words
    assert score("pathvqa", "open", "granuloma", "The answer is \\boxed{Granuloma}").correct
    verdict = score("pathvqa", "open", "granuloma", "A granuloma.")
    assert not verdict.correct and verdict.parsed == "a granuloma."  # article and period stay: no exact match
    # Token sets split on whitespace only, so "granuloma." is not "granuloma": recall 0. BLEU's tokeniser
    # splits the period off: 1 of the 3 tokens "a", "granuloma", "." matches.
    assert verdict.open_metrics["recall"] == 0.0 and verdict.open_metrics["bleu1"] == pytest.approx(1 / 3)


def test_slake_keeps_case_so_yes_answers_need_an_exact_match():
    # The release writes "Yes"/"No"; MedEvalKit's SLAKE checks `answer in ["yes", "no"]` before lower-casing,
    # so those closed questions go to the exact-match rule (the loader assigns it), not the yes/no rule.
    assert not score("slake", "close_exact", "Yes", "Yes, it does.").correct
    assert score("slake", "close_exact", "Yes", "yes.").correct
    assert score("slake", "open", "Lung", "<answer>Lung</answer>").correct


def test_omnimedvqa_unwraps_answer_tags_and_pmc_does_not_need_to():
    assert score("omnimedvqa", "multi_choice", "B", "<answer>B</answer>", OMNI).correct
    assert score("pmc-vqa", "multi_choice", "B", "<answer>B</answer>", PMC).correct  # final_answer_text unwraps it
    assert score("pmc-vqa", "multi_choice", "B", "B<|im_end|>", PMC).correct
    with pytest.raises(ValueError, match="unknown rule"):
        score("slake", "fuzzy", "a", "a")
