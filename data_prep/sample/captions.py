"""MedTrinity-style captions: modality + organ, ROI location and area share, appearance,
relation to neighbouring structures, and a disease hypothesis.

Location and area share are computed from the drawn box (data_prep.pixel_boxes), in image terms
(viewer's left/right), like MedTrinity. Several templates per part keep a parser from
overfitting one sentence.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_prep.pixel_boxes import area_share, location_phrase
from data_prep.sample.catalog import Finding, SourceSpec

OPENINGS = (
    "The image is {study}, {context}.",
    "This is {study}, {context}.",
    "Shown is {study}, {context}.",
)
SINGLE_ROI = (
    "The region of interest, located {where}, occupies approximately {share}% of the image area "
    "and appears to be {appearance}.",
    "A region of interest is marked {where}; it occupies approximately {share}% of the image area "
    "and shows {appearance}.",
    "Within the highlighted box {where}, which occupies approximately {share}% of the image area, "
    "there is {appearance}.",
)
RELATIONS = (
    "This region is situated {neighbours}, which may indicate a relationship with the surrounding structures.",
    "It lies {neighbours}.",
    "The marked area is found {neighbours}.",
)
HYPOTHESES = (
    "The appearance in this area could be related to {hypothesis}.",
    "These features may be indicative of {hypothesis}.",
    "Possible explanations include {hypothesis}, and clinical correlation is advised.",
)
PAIR_ROI = (
    "Two regions of interest are marked. The first, located {where1}, occupies approximately {share1}% "
    "of the image area and shows {appearance1}; it lies {neighbours1}. The second, located {where2}, "
    "occupies approximately {share2}% of the image area and shows {appearance2}, {neighbours2}.",
    "There are two regions of interest: one {where1} occupying approximately {share1}% of the image area, "
    "with {appearance1}, situated {neighbours1}; and another {where2} occupying approximately {share2}% "
    "of the image area, with {appearance2}, situated {neighbours2}.",
)


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def where_words(box: Sequence[float], width: int, height: int) -> str:
    """`location_phrase` as a prepositional phrase ("in the upper left region of the image")."""
    phrase = location_phrase(box, width, height)
    return "centrally within the image" if phrase == "central" else f"in the {phrase} region of the image"


def share_text(box: Sequence[float], width: int, height: int) -> str:
    """Area share in percent with one decimal, the way MedTrinity writes it."""
    return f"{100.0 * area_share(box, width, height):.1f}"


def caption(rng: np.random.Generator, spec: SourceSpec, boxes: Sequence[Sequence[float]],
            findings: Sequence[Finding], width: int, height: int) -> str:
    """A caption for one row; `boxes[i]` is described by `findings[i]`."""
    opening = pick(rng, OPENINGS).format(study=pick(rng, spec.study), context=pick(rng, spec.context))
    first = findings[0]
    if len(boxes) == 1:
        roi = pick(rng, SINGLE_ROI).format(where=where_words(boxes[0], width, height),
                                           share=share_text(boxes[0], width, height),
                                           appearance=pick(rng, first.appearance))
        relation = pick(rng, RELATIONS).format(neighbours=pick(rng, first.neighbours))
        body = f"{roi} {relation}"
    else:
        second = findings[1]
        body = pick(rng, PAIR_ROI).format(
            where1=where_words(boxes[0], width, height), share1=share_text(boxes[0], width, height),
            appearance1=pick(rng, first.appearance), neighbours1=pick(rng, first.neighbours),
            where2=where_words(boxes[1], width, height), share2=share_text(boxes[1], width, height),
            appearance2=pick(rng, second.appearance), neighbours2=pick(rng, second.neighbours))
    hypothesis = pick(rng, HYPOTHESES).format(hypothesis=pick(rng, first.hypotheses))
    return f"{opening} {body} {hypothesis}"
