"""MedEvalKit's rule-based answer checks, as pure functions (no model, no files).

The published table (Lingshu, arXiv 2506.07044) was made with MedEvalKit, whose rules have quirks
(substring yes/no checks, a case-sensitive yes/no test in SLAKE, a string-similarity fallback for
multiple choice). They are reproduced here on purpose, quirks included, because a cleaner rule gives
numbers that do not compare with that table. Each function names the MedEvalKit function it
reproduces (utils/utils.py at commit 9b12e3b unless stated); docs/eval.md lists them with examples.
"""
from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Phrases after which MedEvalKit keeps only the text that follows (parse_response), in its order.
ANSWER_MARKERS = ("**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:",
                  "final answer", "final answer is")
YES_NO = ("yes", "no")
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,40}\|>")

Rule = str  # "judgement" | "close_exact" | "open" | "multi_choice"


def strip_special_tokens(text: str) -> str:
    """Drop `<|im_end|>`-style tokens: MedEvalKit decoded with vLLM's default skip_special_tokens=True,
    while eval.client asks the server to keep them (the grounding answers need them)."""
    return _SPECIAL_TOKEN.sub("", text)


def boxed_content(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (braces balanced), stripped; None when there is none.

    mathruler.grader.extract_boxed_content, which MedEvalKit calls, returns the string "None" in
    that case; callers that need that quirk substitute it.
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    body = text[start + len("\\boxed{"):]
    for i, char in enumerate(body):
        depth += (char == "{") - (char == "}")
        if depth < 0:
            return body[:i].strip()
    return None


def tagged(text: str, tag: str, fallback_to_text: bool = True) -> str:
    """Every `<tag>...</tag>` span joined by spaces (utils.extract / get_content_between_a_b).

    An opening tag without its closing tag ends the search; with no non-blank span the whole text
    comes back (MedEvalKit's `hard=True`), so a plain answer passes through unchanged.
    """
    if not text:
        return ""
    opening, closing = f"<{tag}>", f"</{tag}>"
    spans, pos = [], text.find(opening)
    while pos >= 0:
        end = text.find(closing, pos + len(opening))
        if end < 0:
            break
        spans.append(text[pos + len(opening):end])
        pos = text.find(opening, end + len(closing))
    joined = " ".join(spans).strip()
    return joined or (text if fallback_to_text else "")


def final_answer_text(response: str) -> str:
    """Lower-case, unwrap \\boxed{} or <answer>, keep what follows an "answer:"-style marker (parse_response).

    A response that mentions "boxed" without a complete \\boxed{...} becomes the literal "None",
    as in MedEvalKit.
    """
    text = response.lower()
    if "boxed" in text:
        found = boxed_content(text)
        text = "None" if found is None else found
    elif "<answer>" in text:
        text = tagged(text, "answer")
    for marker in ANSWER_MARKERS:
        if marker in text:
            text = text.split(marker)[-1]
    return text


def _closed_form(response: str) -> str:
    return final_answer_text(response).replace("\n", "").replace(".", "")


def judge_yes_no(answer: str, response: str) -> bool:
    """judge_judgement: right when exactly one of the substrings "yes"/"no" occurs in the normalised
    response and the answer is a substring of it ("not", "normal" and "know" contain "no")."""
    text = _closed_form(response)
    return (("yes" in text) != ("no" in text)) and answer.lower() in text


def judge_exact(answer: str, response: str) -> bool:
    """judge_close_end_vqa: the normalised response (no newlines, no periods) equals the lower-cased answer."""
    return _closed_form(response) == answer.lower()


def _bleu_tokens(text: str) -> list[str]:
    return text.lower().replace(".", " .").split(" ")


def bleu(prediction: str, reference: str, n: int) -> float:
    """utils.bleu: NLTK sentence BLEU-n (uniform weights, no smoothing) on space-split tokens, periods apart."""
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns for every zero n-gram count; the score is then 0
        return float(sentence_bleu([_bleu_tokens(reference)], _bleu_tokens(prediction), weights=[1 / n] * n))


def rouge_f(prediction: str, reference: str) -> dict[str, float]:
    """utils.rouge: the `rouge` package's ROUGE-1/2/L F-scores on lower-cased text.

    MedEvalKit crashes on an empty prediction (the package raises); here it scores 0.
    """
    from rouge import Rouge

    try:
        scores = Rouge().get_scores(prediction.lower(), reference.lower())[0]
    except (ValueError, RecursionError):
        return {"rouge1": 0.0, "rouge2": 0.0, "rougel": 0.0}
    return {"rouge1": scores["rouge-1"]["f"], "rouge2": scores["rouge-2"]["f"], "rougel": scores["rouge-l"]["f"]}


def token_overlap(prediction: str, reference: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of the lower-cased whitespace token *sets* (utils.calculate_f1).

    MedEvalKit's caller unpacks the returned (f1, precision, recall) as (precision, recall, f1), so its
    metrics.json labels them rotated; these are the values under their right names. An empty side
    scores 0 (MedEvalKit crashes there).
    """
    pred, ref = set(prediction.lower().split()), set(reference.lower().split())
    common = pred & ref
    if not pred or not ref or not common:
        return 0.0, 0.0, 0.0
    precision, recall = len(common) / len(pred), len(common) / len(ref)
    return precision, recall, 2 * precision * recall / (precision + recall)


OPEN_METRICS = ("em", "bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougel", "precision", "recall", "f1")


def judge_open(answer: str, response: str) -> dict[str, float]:
    """judge_open_end_vqa: exact match of the parsed response with the lower-cased answer (the "right"
    count), plus BLEU-1..4, ROUGE-1/2/L and token precision/recall/F1 as further open-question metrics."""
    reference, text = answer.lower(), final_answer_text(response)
    precision, recall, f1 = token_overlap(text, reference)
    return {"em": float(text == reference), **{f"bleu{n}": bleu(text, reference, n) for n in range(1, 5)},
            **rouge_f(text, reference), "precision": precision, "recall": recall, "f1": f1}


def _letters(count: int) -> list[str]:
    return [chr(ord("a") + i) for i in range(count)]


def most_similar(options: Sequence[str], text: str) -> int:
    """Index of the option with the highest difflib ratio to `text`; the first wins ties, and 0 when
    nothing is similar at all (find_most_similar_index)."""
    best, best_ratio = 0, 0.0
    for i, option in enumerate(options):
        ratio = difflib.SequenceMatcher(None, option, text).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    return best


def judge_choice(choices: Sequence[str], answer: str, response: str) -> bool:
    """judge_multi_choice: reduce the response to an option letter or text and compare with the answer.

    1. A first paragraph that is a bare letter, or a last paragraph whose text before the first period
       is one, replaces the response.
    2. final_answer_text; then newlines are dropped and the text before the first period, after its
       last colon, is the candidate ("B. Focal uptake" -> "b", "Answer: C" -> "c").
    3. Right if the candidate equals the answer, or is a letter whose option equals the answer, or is
       an option's text and the answer is that option's letter.
    4. Otherwise the option most similar (difflib) to the whole normalised response is taken: right if
       its letter or text equals the answer. An empty response therefore counts as option A.
    """
    letters = _letters(len(choices))
    text = response.lower()
    paragraphs = text.split("\n\n")
    if paragraphs[0] in letters:
        text = paragraphs[0]
    elif paragraphs[-1].split(".")[0] in letters:
        text = paragraphs[-1].split(".")[0]
    text = final_answer_text(text).strip().lower().replace("\n", "")
    candidate = text.split(".")[0].split(":")[-1]
    options = [c.lower() for c in choices]
    answer = answer.strip().lower()
    if candidate == answer:
        return True
    if candidate in letters:
        return options[letters.index(candidate)] == answer
    if candidate in options:
        return answer in letters and candidate == options[letters.index(answer)]
    index = most_similar(options, text)
    return letters[index] == answer or options[index] == answer


@dataclass
class Verdict:
    """One scored answer: what was compared, whether it counts as right, and the open-question metrics."""

    parsed: str
    correct: bool
    open_metrics: dict[str, float] = field(default_factory=dict)


def unwrap_vqa_response(response: str) -> str:
    """The answer text MedEvalKit's VQA-RAD/SLAKE/PathVQA cal_metrics start from: the \\boxed{} content
    if any, else the <answer> span if any, else the response."""
    found = boxed_content(response)
    if found is not None:
        return found
    return tagged(response, "answer") if "<answer>" in response else response


def score(benchmark: str, rule: Rule, answer: str, response: str, choices: Sequence[str] = ()) -> Verdict:
    """Score one response with the benchmark's rule, including its benchmark-specific pre-processing.

    VQA-RAD and PathVQA lower-case and strip both answer and response first; SLAKE does neither;
    OmniMedVQA unwraps <answer> before the choice check; PMC-VQA passes the response as it is.
    """
    response = strip_special_tokens(response)
    if rule == "multi_choice":
        if benchmark == "omnimedvqa":
            response = tagged(response, "answer")
        return Verdict(parsed=response, correct=judge_choice(choices, answer, response))
    text = unwrap_vqa_response(response)
    if benchmark in ("vqa-rad", "pathvqa"):
        answer, text = answer.lower().strip(), text.lower().strip()
    if rule == "judgement":
        return Verdict(parsed=text, correct=judge_yes_no(answer, text))
    if rule == "close_exact":
        return Verdict(parsed=text, correct=judge_exact(answer, text))
    if rule == "open":
        metrics = judge_open(answer, text)
        return Verdict(parsed=text, correct=bool(metrics["em"]), open_metrics=metrics)
    raise ValueError(f"unknown rule {rule!r}")


def accuracy_block(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"total", "right", "accuracy"} of scored records (accuracy None for none, not a ZeroDivisionError)."""
    right = sum(bool(r["correct"]) for r in records)
    return {"total": len(records), "right": right, "accuracy": right / len(records) if records else None}


def open_block(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """accuracy_block plus the mean of every open-question metric (MedEvalKit's "open" entry)."""
    out = accuracy_block(records)
    for key in OPEN_METRICS:
        out[key] = sum(r["open_metrics"][key] for r in records) / len(records) if records else None
    return out
