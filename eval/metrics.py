"""Metric functions: report text (BLEU, ROUGE-L, CIDEr, METEOR), boxes (matched IoU), verify (accuracy, AUROC).

Text metrics delegate to the reference implementations (sacrebleu, rouge-score, pycocoevalcap) so
the numbers are theirs; only the glue (tokenisation for the COCO scorers, box matching, the
rank-based AUROC, since scikit-learn is not a dependency) is written here.
"""
from __future__ import annotations

import atexit
import re
import shutil
from collections.abc import Sequence
from functools import lru_cache

from data_prep.pixel_boxes import box_iou

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean; None for no values (a metric over an empty set is undefined, not 0)."""
    return sum(values) / len(values) if values else None


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float | None]:
    """Corpus BLEU-1..4 from sacrebleu (0-100, 13a tokenisation), one or more references per hypothesis.

    BLEU-n is sacrebleu's BLEU with max_ngram_order=n: brevity penalty times the geometric mean of
    the 1..n-gram precisions.
    """
    from sacrebleu.metrics import BLEU

    keys = [f"bleu_{n}" for n in range(1, 5)]
    if not hypotheses:
        return dict.fromkeys(keys)
    per_hyp = [[r] if isinstance(r, str) else list(r) for r in references]
    n_refs = max(len(r) for r in per_hyp)
    streams = [[r[i] if i < len(r) else None for r in per_hyp] for i in range(n_refs)]
    return {key: BLEU(max_ngram_order=n).corpus_score(list(hypotheses), streams).score
            for n, key in enumerate(keys, start=1)}


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float | None:
    """Mean ROUGE-L F-measure (rouge-score, no stemming) over hypothesis/reference pairs."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    return mean([scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)])


def tokenize(text: str) -> str:
    """Lower-cased words joined by single spaces: the input pycocoevalcap's scorers expect.

    Replaces COCO's Java PTB tokenizer, so CIDEr needs no Java; newlines must go anyway, since
    METEOR's line protocol would break on them.
    """
    return " ".join(_WORD_RE.findall(text.lower()))


def _coco_inputs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[dict, dict]:
    gts = {i: [tokenize(r)] for i, r in enumerate(references)}
    res = {i: [tokenize(h)] for i, h in enumerate(hypotheses)}
    return gts, res


def cider(hypotheses: Sequence[str], references: Sequence[str]) -> float | None:
    """Corpus CIDEr-D (pycocoevalcap); document frequencies come from these references."""
    from pycocoevalcap.cider.cider import Cider

    if not hypotheses:
        return None
    score, _ = Cider().compute_score(*_coco_inputs(hypotheses, references))
    return float(score)


def java_available() -> bool:
    """METEOR runs pycocoevalcap's Java jar."""
    return shutil.which("java") is not None


@lru_cache(maxsize=1)
def _meteor_process():
    """One METEOR jar per process: it takes seconds to load its paraphrase tables."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    atexit.register(scorer.meteor_p.kill)
    return scorer


def meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float | None:
    """Corpus METEOR 1.5 (pycocoevalcap); None when there is nothing to score or no Java."""
    if not hypotheses or not java_available():
        return None
    score, _ = _meteor_process().compute_score(*_coco_inputs(hypotheses, references))
    return float(score)


def matched_iou(gt: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> float:
    """IoU of a set of predicted boxes against the ground-truth set, in [0, 1].

    Boxes are paired one-to-one greedily by descending IoU (the usual detection matching), and the
    summed IoU of the pairs is divided by max(#gt, #pred): a missed box and a spurious extra box
    both count as IoU 0, so answering many boxes cannot game the score. One box each: their IoU.
    """
    if not gt or not pred:
        return 0.0
    pairs = sorted(((box_iou(g, p), i, j) for i, g in enumerate(gt) for j, p in enumerate(pred)), reverse=True)
    used_gt, used_pred, total = set(), set(), 0.0
    for iou, i, j in pairs:
        if iou <= 0.0:
            break
        if i not in used_gt and j not in used_pred:
            used_gt.add(i)
            used_pred.add(j)
            total += iou
    return total / max(len(gt), len(pred))


def accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5,
             valid: Sequence[bool] | None = None) -> float | None:
    """Share of labels matched by the decision `score >= threshold`; an entry marked not valid (an
    unreadable answer) counts as wrong whatever its placeholder score."""
    valid = [True] * len(labels) if valid is None else valid
    return mean([float(ok and (s >= threshold) == bool(y)) for y, s, ok in zip(labels, scores, valid)])


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic; ties get mid-ranks (count 1/2).

    AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos the rank sum of the positives.
    None unless both classes are present.
    """
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda k: scores[k])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2.0 + 1.0  # mid-rank of positions i..j (1-based)
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
