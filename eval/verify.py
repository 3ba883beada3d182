"""The verify task at evaluation: yes-probability from logprobs, held-out negatives, questions from a report.

Verify is scored as a probability rather than a parsed word, so AUROC sees the model's confidence:
the answer is one token ("yes"/"no", as trained), and the server returns that position's top
logprobs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from data_prep.captions import CaptionFields
from data_prep.ids import unit
from data_prep.tasks import VERIFY_PROMPTS, finding_text, regions_phrase, subject_phrase
from medvlm_vocab import REPORT_LABELS

YES, NO = "yes", "no"
_FIELD_OF_LABEL = {label: key for key, label in REPORT_LABELS.items()}
_REPORT_FIELD = {"findings": "texture", "impression": "diagnosis", "modality": "modality", "organ": "organ",
                 "relation": "relation"}


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def yes_probability(top_logprobs: Sequence[tuple[str, float]] | None) -> float | None:
    """P(yes) renormalised over the yes/no answers among the first token's top logprobs.

    Spellings of one answer ("yes", "Yes", " yes") are pooled. When only one answer is listed, the
    other is given the lowest listed logprob, an upper bound on its real value (it did not make the
    top k), so the probability stays finite and still ranks. None when neither answer is listed:
    the caller counts that answer as malformed.
    """
    if not top_logprobs:
        return None
    pooled: dict[str, list[float]] = {YES: [], NO: []}
    for token, logprob in top_logprobs:
        word = token.strip().strip(".,!").lower()
        if word in pooled and logprob is not None and math.isfinite(logprob):
            pooled[word].append(logprob)
    if not pooled[YES] and not pooled[NO]:
        return None
    floor = min(lp for _, lp in top_logprobs if lp is not None and math.isfinite(lp))
    ly = _logsumexp(pooled[YES]) if pooled[YES] else floor
    ln = _logsumexp(pooled[NO]) if pooled[NO] else floor
    return 1.0 / (1.0 + math.exp(ln - ly))


def _diagnosis_key(row: dict) -> str:
    fields = row.get("fields") or {}
    return (fields.get("diagnosis") or row.get("finding") or "").strip().lower()


def negative_rows(positives: Sequence[dict], seed: int = 0) -> list[dict]:
    """One held-out negative per verify positive: the same image and region asked about the finding
    of another image with a different diagnosis.

    The partner finding is drawn by a hash of (seed, id) over the distinct findings of the split, so
    the set is the same on every run, and the question is the positive's own (trained) question with
    the finding phrase swapped, as the training negatives do (swift_ext.negatives, "finding" mode).
    Positives with no different-diagnosis partner, or whose question lacks the finding, get none.
    """
    distinct: dict[str, tuple[str, str]] = {}
    for row in positives:
        finding = row.get("finding")
        if finding:
            distinct.setdefault(finding.lower(), (finding, _diagnosis_key(row)))
    options = [distinct[k] for k in sorted(distinct)]
    out = []
    for row in positives:
        finding, prompt = row.get("finding"), row["messages"][0]["content"]
        if not finding or finding not in prompt or not options:
            continue
        key = _diagnosis_key(row)
        start = int(unit(f"{seed}:{row['id']}", b"verify-negative") * len(options))
        for step in range(len(options)):
            other, other_key = options[(start + step) % len(options)]
            if other_key != key and other.lower() != finding.lower():
                head, tail = prompt.rsplit(finding, 1)
                user = {**row["messages"][0], "content": head + other + tail}
                out.append({**row, "messages": [user, {"role": "assistant", "content": NO}],
                            "finding": other, "label": 0, "negative_of": finding})
                break
    return out


def report_fields(report: str) -> CaptionFields:
    """Caption fields read back from a structured report (data_prep.tasks.report_text's format).

    Values were sentence-cased when the report was written; a leading capital is lowered again
    unless the word is an acronym ("CT"), so the finding reads as in a trained verify question.
    """
    values: dict[str, str] = {}
    for line in report.splitlines():
        label, sep, value = line.partition(":")
        key = _FIELD_OF_LABEL.get(label.strip())
        if sep and key in _REPORT_FIELD and value.strip():
            text = value.strip()
            if key in ("findings", "impression", "relation") and not text[:2].isupper():
                text = text[:1].lower() + text[1:]
            values[_REPORT_FIELD[key]] = text
    return CaptionFields(**values)


def verify_question(fields: CaptionFields, n_boxes: int) -> tuple[str, str] | None:
    """(question with `<bbox>` tags, finding) for a report's finding, in a trained phrasing; None
    when the report names no finding to check."""
    finding = finding_text(fields)
    if not finding or n_boxes < 1:
        return None
    return VERIFY_PROMPTS[0].format(subject=subject_phrase(fields), regions=regions_phrase(n_boxes), finding=finding), finding
