"""Published scores of reference models, each with where it was published.

Only numbers from one harness (MedEvalKit) are listed: model cards that define the metric
differently report other numbers for the same model, and mixing them would compare definitions,
not models.
"""
from __future__ import annotations

from dataclasses import dataclass

BENCHMARKS = ("vqa-rad", "slake", "pathvqa", "pmc-vqa", "omnimedvqa")
TITLES = {"vqa-rad": "VQA-RAD", "slake": "SLAKE", "pathvqa": "PathVQA", "pmc-vqa": "PMC-VQA",
          "omnimedvqa": "OmniMedVQA"}

LINGSHU_TABLE = ("Lingshu (arXiv 2506.07044) multimodal VQA table, MedEvalKit; also MedEvalKit README "
                 "assets/mm_eval.png (commit b527462)")


@dataclass(frozen=True)
class PublishedRow:
    model: str
    scores: dict[str, float]  # benchmark -> accuracy in percent
    source: str


PUBLISHED: tuple[PublishedRow, ...] = tuple(
    PublishedRow(model, dict(zip(BENCHMARKS, scores, strict=True)), LINGSHU_TABLE) for model, scores in (
        ("Qwen2.5-VL-7B", (64.5, 67.2, 44.1, 51.9, 63.6)),
        ("MedGemma-4B-IT", (72.5, 76.4, 48.8, 49.9, 69.8)),
        ("Lingshu-7B", (67.9, 83.1, 61.9, 56.3, 82.9)),
    )
)


def published_for(benchmark: str) -> list[dict[str, object]]:
    """The reference rows for one benchmark, JSON-ready: model, accuracy (percent), source."""
    return [{"model": r.model, "accuracy_percent": r.scores[benchmark], "source": r.source} for r in PUBLISHED]
