"""MedTrinity-25M caption -> structured fields, by precompiled rules.

MedTrinity captions follow a loose template: modality and organ first, then the ROI (location in
words, share of the image area), its texture/density/signal, its relation to the neighbourhood and a
disease hypothesis. The rules below read that template sentence by sentence; they are deterministic
and fast enough for 25M rows, and `llm_extract.LlmExtractor` can replace them per caption.

Speed (the target is >= 5k captions/s on one core): patterns run on ASCII-lowercased text without
re.I; word patterns lead with a character class instead of \\b and keyword lists are compiled as
prefix tries, so Python's regex engine skips most positions and alternatives in one comparison.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Iterable

__all__ = ["CaptionFields", "FIELD_NAMES", "parse_caption", "normalize_modality", "is_normal_finding"]


@dataclass(frozen=True)
class CaptionFields:
    """What one caption says about its image; None where the caption is silent."""

    modality: str | None = None
    organ: str | None = None
    roi_location: str | None = None
    roi_area_pct: float | None = None
    texture: str | None = None
    relation: str | None = None
    diagnosis: str | None = None

    def filled(self) -> dict[str, bool]:
        """Per field, whether it has a value (for the fill-rate report)."""
        return {f.name: getattr(self, f.name) is not None for f in fields(self)}

    def as_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CaptionFields))


def _word_re(body: str) -> re.Pattern[str]:
    """A word pattern that matches from the non-word character before the word; the word is group 1.

    A leading character class lets the engine skip most positions at once, where a leading \\b would
    try every alternative at every position. Texts are padded with a space so a first word matches.
    """
    return re.compile(r"[^a-z0-9](" + body + ")")


def _trie(words: Iterable[str], *, whole: bool) -> str:
    """A regex for many literal phrases, factored by common prefixes.

    Python's engine tries alternatives one after another; sharing prefixes makes a failing position
    cost a few comparisons instead of one per phrase. With whole=False a phrase that extends a shorter
    one is dropped (enough to find where keywords start); with whole=True every phrase stays matchable
    in full, for use before a \\b.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        if ends and not whole:
            return ""
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return build(trie)


# --- vocabularies (lowercase) -------------------------------------------------------------------

# Order breaks ties at one position: PET before CT so "PET/CT" is PET.
_MODALITIES: tuple[tuple[str, str], ...] = (
    ("PET", r"pet\b|positron emission|fdg\b"),
    ("CT", r"cta?\b|hrct\b|computed tomograph|computeri[sz]ed tomograph"),
    ("MR", r"mri?\b|mra\b|magnetic resonance|t[12][- ]weighted|flair\b|diffusion[- ]weighted"),
    ("mammography", r"mammogra"),
    ("X-ray", r"x[- ]?rays?\b|radiograph|cxr\b|plain film|fluoroscop"),
    ("ultrasound", r"ultrasound|ultrasonograph|sonograph|sonogram|echocardiogra|doppler\b|us (?:image|scan)"),
    ("OCT", r"optical coherence tomograph|oct\b"),
    ("fundus", r"fundus|fundoscop|funduscop|ophthalmoscop|retinal (?:photograph|image)"),
    ("dermoscopy", r"dermoscop|dermatoscop|epiluminescence"),
    ("endoscopy", r"endoscop|colonoscop|gastroscop|laparoscop|bronchoscop|cystoscop|arthroscop|egd\b"),
    ("pathology", r"histopatholog|histolog|patholog|hematoxylin|haematoxylin|h ?& ?e\b|immunohistochem"
                  r"|ihc\b|microscop|micrograph|cytolog|whole[- ]slide|stained (?:section|slide|tissue)"),
)
_MODALITY_RE = _word_re("|".join(p for _, p in _MODALITIES))
_MODALITY_AT = tuple((label, re.compile(p)) for label, p in _MODALITIES)

# surface form -> canonical organ / body region
_ORGANS: dict[str, str] = {
    **{k: "brain" for k in ("brain", "cerebral", "cerebrum", "intracranial")},
    **{k: "head" for k in ("head", "skull", "cranium")},
    **{k: "chest" for k in ("chest", "thorax", "thoracic", "mediastinum", "mediastinal")},
    **{k: "lung" for k in ("lung", "lungs", "pulmonary", "pleura", "pleural")},
    **{k: "heart" for k in ("heart", "cardiac")},
    **{k: "breast" for k in ("breast", "breasts", "mammary")},
    **{k: "abdomen" for k in ("abdomen", "abdominal")},
    **{k: "liver" for k in ("liver", "hepatic")},
    **{k: "kidney" for k in ("kidney", "kidneys", "renal")},
    **{k: "pancreas" for k in ("pancreas", "pancreatic")},
    **{k: "spleen" for k in ("spleen", "splenic")},
    **{k: "stomach" for k in ("stomach", "gastric")},
    **{k: "colon" for k in ("colon", "colonic", "colorectal")},
    **{k: "rectum" for k in ("rectum", "rectal")},
    **{k: "small intestine" for k in ("small intestine", "small bowel")},
    **{k: "esophagus" for k in ("esophagus", "oesophagus", "esophageal", "oesophageal")},
    **{k: "pelvis" for k in ("pelvis", "pelvic")},
    **{k: "uterus" for k in ("uterus", "uterine")},
    **{k: "ovary" for k in ("ovary", "ovaries", "ovarian")},
    **{k: "spine" for k in ("spine", "spinal", "vertebra", "vertebrae", "vertebral")},
    **{k: k for k in ("cervical spine", "thoracic spine", "lumbar spine", "gallbladder", "bladder",
                      "prostate", "duodenum", "bowel", "knee", "shoulder", "hip", "hand", "wrist",
                      "ankle", "elbow", "femur", "neck", "thyroid", "eye", "retina", "skin",
                      "lymph node", "soft tissue", "bone", "sinus", "jaw", "teeth")},
    **{k: "foot" for k in ("foot", "feet")},
    **{k: "eye" for k in ("eyes", "ocular", "orbit", "orbital")},
    "retinal": "retina", "cutaneous": "skin", "lymph nodes": "lymph node", "tooth": "teeth",
    "dental": "teeth", "mandible": "jaw",
}
# Longest names first, so "lumbar spine" wins over "lumbar"... and "thoracic spine" over "thoracic".
_ORGAN_RE = _word_re("(?:" + "|".join(sorted(map(re.escape, _ORGANS), key=len, reverse=True)) + r")\b")
_DEFAULT_ORGAN = {"fundus": "retina", "dermoscopy": "skin", "mammography": "breast"}

# --- sentence roles -----------------------------------------------------------------------------

_SENTENCE_END_RE = re.compile(r"[.!?]\s+(?=[A-Z0-9\"'(])")
_ROI_CUE_RE = re.compile(_trie(whole=False, words=(
    "region of interest", "roi ", "roi,", "(roi", "area of interest", "highlighted", "marked", "outlined",
    "boxed", "bounding box", "annotated", "occup", "located", "situated", "positioned", "%", "percent")))

_DIR = r"(?:upper|lower|top|bottom|left|right|central|center|centre|middle|mid|superior|inferior)"
_FRAME_NOUN = r"(?:region|area|quadrant|portion|part|side|aspect|half|corner|section|third)s?"
_LOC_NOUN = rf"(?:{_FRAME_NOUN}|(?:zone|field|lobe|hemisphere)s?)"
_LOCATION_RE = _word_re(
    rf"(?:{_DIR}(?:[\s-]+{_DIR}){{0,2}}[\s-]+{_LOC_NOUN}\b|centrally\b|centered\b|centred\b"
    r"|(?:in|at|near|around|towards?) the (?:center|centre|middle)\b)")
# A location in the image frame ("in the upper left region"), as opposed to an anatomical one.
_FRAME_LOCATION_RE = _word_re(rf"{_DIR}(?:[\s-]+{_DIR}){{0,2}}[\s-]+{_FRAME_NOUN}\b|centrally\b")
_CENTRAL_WORDS = frozenset({"centrally", "centered", "centred", "center", "centre", "middle"})

_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent\b|per cent\b)")
_AREA_CUE_RE = re.compile(r"occup|area|of the image|cover|span|takes? up|account|compris|constitut")

_TEXTURE_RE = re.compile(_trie(whole=False, words=(
    "dense", "densit", "attenuat", "hypodense", "hypointense", "hypoechoic", "hyperdense",
    "hyperintense", "hyperechoic", "hyperchromatic", "isodense", "isointense", "isoechoic", "anechoic",
    "echoic", "echogenic", "echotexture", "intensity", "intense", "signal", "textur", "heterogene",
    "homogene", "opaci", "lucen", "radiopaque", "radiodense", "enhanc", "calcif", "pigment", "color",
    "colour", "stain", "cellular", "nuclei", "nucleus", "cytoplasm", "chromatin", "granular", "nodular",
    "reticular", "ground-glass", "ground glass", "bright", "dark", "reddish", "pink", "purple", "brown",
    "yellow", "whitish", "erythem", "hyperemi", "scaly", "ulcerat", "irregular", "well-defined",
    "well defined", "ill-defined", "ill defined", "cystic", "solid", "uptake", "opaque", "echo-free",
    "echo-poor", "echo-rich", "pale", "demarcated")))
_DESCRIBE_CUE_RE = _word_re(
    r"(?:appears? to be|appear(?:s|ing)? as|appears?|appearing|shows?|showing|exhibits?|exhibiting"
    r"|demonstrates?|demonstrating|displays?|displaying|reveals?|revealing|is characteri[sz]ed by"
    r"|characteri[sz]ed by|contains?|containing|there is|there are|consists? of|image of|photograph of"
    r"|scan of|slide of|radiograph of|micrograph of|view of)\s+")

_RELATION_CUES = _trie(whole=True, words=(
    "adjacent to", "next to", "close to", "nearby", "near", "in proximity to", "in close proximity to",
    "abuts", "abutting", "abut", "borders on", "bordering", "surrounded by", "neighboring",
    "neighbouring", "compresses", "compressing", "displaces", "displacing", "displacement of",
    *(f"{verb} {prep}" for verb in ("extend", "extends", "extending")
      for prep in ("into", "to", "toward", "towards", "beyond", "through")),
    "involves", "involving", "encases", "encasing", "invades", "invading", "infiltrates", "infiltrate",
    "infiltrating", "in contact with", "contiguous with", "overlying", "underlying", "medial to",
    "lateral to", "anterior to", "posterior to", "superior to", "inferior to", "deep to",
    "superficial to", "temporal to", "nasal to", "mass effect on", "beside", "beneath", "underneath",
    "below", "above", "behind", "in front of", "between", "away from", "articulating with", "covered by",
    "bounded by", "encircled by", "attached to", "arising from", "at the origin of", "at the interface",
)) + "|(?<!the )surrounding"  # "the surrounding cortex" is an adjective, not a relation
_RELATION_RE = _word_re(rf"(?:{_RELATION_CUES})\b")
# ... or a placing verb: in "It lies in the lower zone of the lung" the relation is what follows it.
_PLACED_OR_RELATION_RE = _word_re(
    "(?P<placed>" + _trie(whole=True, words=(
        "lies", "lying", "is situated", "is located", "is positioned", "is found", "is seen", "situated",
        "located", "positioned", "found", "seen", "projected"))
    + r")\s+(?=in |within |at |on |over |along |near )" + rf"|(?:{_RELATION_CUES})\b")

_HYPOTHESIS_RE = _word_re(
    r"(?:indicative of|suggestive of|consistent with|compatible with|in keeping with|characteristic of"
    r"|typical of|concerning for|worrisome for|suspicious for|suspicious of|representative of"
    r"|(?:could|may|might|can|would)(?: potentially| possibly| likely)? (?:be )?"
    r"(?:related to|due to|associated with|indicative of|suggestive of|consistent with|caused by"
    r"|attributed to|a sign of|an indication of|represent|indicate|suggest|signify|reflect|correspond to)"
    r"|likely represents?|likely indicates?|likely reflects?|likely due to|probably represents?"
    r"|possibly represents?|suggests?\b|suggesting|indicates?\b|indicating"
    r"|raising (?:the )?(?:possibility|suspicion|concern) (?:of|for)|differential (?:diagnosis )?(?:includes?|of)"
    r"|(?:explanations|possibilities|considerations|diagnoses) include)")
# Words that belong to the hypothesis when they precede its marker ("potentially indicative of").
_QUALIFIERS = ("most likely", "potentially", "possibly", "likely", "highly", "strongly", "probably",
               "which is", "which are", "is", "are")
# Hedges about anatomy, not disease ("may suggest a relationship with the ventricles").
_RELATIONAL_HYPOTHESIS_RE = re.compile(
    r"(?:an? )?(?:relationship|relation|association|connection|continuity|communication)\b")

# A caption that states a normal image ("with no focal abnormality"): its impression, when no
# hypothesis is given, so normal images still get a diagnose row.
_NORMAL_RE = _word_re(
    r"no (?:focal |acute |significant |obvious |definite |visible |evident )?"
    r"(?:abnormalit(?:y|ies)|lesions?|pathology|findings?)\b"
    r"|(?:normal|unremarkable) (?:study|examination|exam|appearance)\b|within normal limits")

# Advice that closes many hypotheses and says nothing about the disease.
_BOILERPLATE_RE = re.compile(
    r"[;,]\s*(?:and\s+)?(?:clinical correlation|further evaluation|follow-up|correlation with)[^;]*$", re.I)
_CLAUSE_END_RE = re.compile(r"[,;:]|\s(?:which|that)\b")
_LEADING_ARTICLE_RE = re.compile(r"(?:a|an|the)\s+", re.I)
_TRAILING_WORDS = ("which", "that", "and", "with", "or", "is", "are", "being", "it")
_PUNCT = " \t,;:."
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class _Sentence:
    """One caption sentence with its lowercased twin and (lazily) where its hypothesis starts."""

    __slots__ = ("text", "low", "roi", "_hyp")

    def __init__(self, text: str) -> None:
        self.text = " " + text  # the pad gives a word at the start its non-word lead (see _word_re)
        self.low = _lower(self.text)  # same length as text, so match offsets apply to both
        self.roi = _ROI_CUE_RE.search(self.low) is not None
        self._hyp: tuple[int, int] | None = None

    @property
    def hyp_start(self) -> int:
        """Start of the disease hypothesis, qualifiers included; len(text) if there is none."""
        return self._hypothesis()[0]

    @property
    def hyp_end(self) -> int:
        """End of the first hypothesis marker; -1 if there is none."""
        return self._hypothesis()[1]

    def _hypothesis(self) -> tuple[int, int]:
        if self._hyp is None:
            self._hyp = _hypothesis_span(self.low)
        return self._hyp


def _lower(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _clean(text: str) -> str | None:
    """Trim punctuation, dangling conjunctions and a leading article; None if nothing is left."""
    text = text.strip(_PUNCT)
    while True:
        head, _, last = text.rpartition(" ")
        if not head or _lower(last) not in _TRAILING_WORDS:
            break
        text = head.strip(_PUNCT)
    m = _LEADING_ARTICLE_RE.match(text)
    text = text[m.end():] if m else text
    return text.strip(_PUNCT) or None


def _hypothesis_span(low: str) -> tuple[int, int]:
    m = _HYPOTHESIS_RE.search(low)
    if not m:
        return len(low), -1
    start = m.start(1)
    extended = True
    while extended:
        extended = False
        before = low[:start].rstrip()
        for q in _QUALIFIERS:
            if before.endswith(q) and before[-len(q) - 1:-len(q)] in (" ", ",", ";", "("):
                start, extended = len(before) - len(q), True
                break
    return start, m.end()


def _sentences(text: str) -> list[_Sentence]:
    text = " ".join(text.split())
    pieces, start = [], 0
    for m in _SENTENCE_END_RE.finditer(text):
        pieces.append(text[start:m.start() + 1])
        start = m.end()
    pieces.append(text[start:])
    return [_Sentence(piece) for piece in pieces if piece]


def _search_order(sentences: list[_Sentence]) -> list[_Sentence]:
    """ROI sentences first, then the rest, the opening (whole-image) sentence last."""
    roi = [s for s in sentences[1:] if s.roi]
    if not roi:
        return sentences
    return roi + [s for s in sentences[1:] if not s.roi] + sentences[:1]


def normalize_modality(text: str | None) -> str | None:
    """Map free text ("computed tomography", "MRI", "H&E slide") to the modality vocabulary."""
    if not text:
        return None
    low = " " + _lower(text)
    m = _MODALITY_RE.search(low)
    if not m:
        return None
    return next(label for label, rx in _MODALITY_AT if rx.match(low, m.start(1)))


def _modality(sentences: list[_Sentence]) -> str | None:
    for chunk in (sentences[:1], sentences[1:]):
        found = normalize_modality(" ".join(s.text for s in chunk))
        if found:
            return found
    return None


def _organ(sentences: list[_Sentence], modality: str | None) -> str | None:
    """The earliest organ name, in the opening sentence first."""
    for chunk in (sentences[:1], sentences[1:]):
        m = _ORGAN_RE.search(" ".join(s.low for s in chunk))
        if m:
            return _ORGANS[m.group(1)]
    return _DEFAULT_ORGAN.get(modality or "")


def _location(ordered: Iterable[_Sentence]) -> str | None:
    for s in ordered:
        m = _LOCATION_RE.search(s.low)
        if m:
            phrase = m.group(1)
            return "central" if phrase.rsplit(" ", 1)[-1] in _CENTRAL_WORDS else phrase
    return None


def _area_pct(ordered: Iterable[_Sentence]) -> float | None:
    for s in ordered:
        if not _AREA_CUE_RE.search(s.low):
            continue
        for m in _PERCENT_RE.finditer(s.low):
            value = float(m.group(1))
            if 0 < value <= 100:
                return value
    return None


def _texture(ordered: list[_Sentence]) -> str | None:
    """The description after the last describing verb before the first texture word.

    Only the part before the hypothesis is read (that part is the diagnosis) and the text stops at
    the first relation cue (that part is the relation), so the fields do not repeat each other.
    Without any texture word, what an ROI sentence says the region "shows"/"appears to be" stands in.
    """
    for s in ordered:
        low = s.low[:s.hyp_start]
        kw = _TEXTURE_RE.search(low)
        if not kw:
            continue
        cue_end = -1
        for c in _DESCRIBE_CUE_RE.finditer(low, 0, kw.start()):
            cue_end = c.end()
        if cue_end >= 0:
            start, end = cue_end, _semicolon_or_end(low, cue_end)
        else:
            start = max(low.rfind(",", 0, kw.start()), low.rfind(";", 0, kw.start())) + 1
            stop = _CLAUSE_END_RE.search(low, kw.end())
            end = stop.start() if stop else len(low)
        if cleaned := _description(s, start, end):
            return cleaned
    for s in ordered:
        low = s.low[:s.hyp_start]
        cue = _DESCRIBE_CUE_RE.search(low) if s.roi else None
        if cue and (cleaned := _description(s, cue.end(), _semicolon_or_end(low, cue.end()))):
            return cleaned
    return None


def _semicolon_or_end(low: str, start: int) -> int:
    """Descriptions run to the end of the clause; commas stay (they separate adjectives)."""
    end = low.find(";", start)
    return end if end >= 0 else len(low)


def _description(s: _Sentence, start: int, end: int) -> str | None:
    rel = _RELATION_RE.search(s.low, start, end)
    return _clean(s.text[start:rel.start(1) if rel else end])


def _relation(ordered: list[_Sentence]) -> str | None:
    """From the first relation cue to the end of its clause, skipping positions in the image frame.

    A cue is a relational phrase ("adjacent to") or a placing verb ("lies in", "situated at"); after
    a verb the relation is what follows it, unless that is just the ROI's place in the image.
    """
    for s in ordered:
        low = s.low[:s.hyp_start]
        for m in _PLACED_OR_RELATION_RE.finditer(low):
            placed = m.group("placed") is not None
            start = m.end(1) if placed else m.start(1)
            stop = _CLAUSE_END_RE.search(low, start)
            end = stop.start() if stop else len(low)
            text = low[start:end]
            if "image" in text or (placed and _FRAME_LOCATION_RE.search(" " + text)):
                continue
            if cleaned := _clean(s.text[start:end]):
                return cleaned
    return None


def _diagnosis(sentences: list[_Sentence]) -> str | None:
    """The hypothesis of the last sentence that states one (captions end on their best guess);
    failing that, a statement that the image is normal."""
    for s in reversed(sentences):
        pos = s.hyp_end
        while pos >= 0:
            rest = s.low[pos:].lstrip()
            if not _RELATIONAL_HYPOTHESIS_RE.match(rest):
                cleaned = _clean(_BOILERPLATE_RE.sub("", s.text[pos:]))
                if cleaned:
                    return cleaned
            nxt = _HYPOTHESIS_RE.search(s.low, pos)
            pos = nxt.end() if nxt else -1
    for s in sentences:
        m = _NORMAL_RE.search(s.low)
        if m:
            return s.text[m.start(1):m.end(1)]
    return None


def is_normal_finding(text: str | None) -> bool:
    """Whether a diagnosis is only the statement of a normal image (as `parse_caption` extracts it)."""
    low = " " + _lower((text or "").strip(_PUNCT))
    m = _NORMAL_RE.match(low)
    return m is not None and m.end() == len(low)


def parse_caption(text: str) -> CaptionFields:
    """Extract the seven fields from one caption; never raises on odd text."""
    sentences = _sentences(text or "")
    if not sentences:
        return CaptionFields()
    ordered = _search_order(sentences)
    modality = _modality(sentences)
    return CaptionFields(
        modality=modality,
        organ=_organ(sentences, modality),
        roi_location=_location(ordered),
        roi_area_pct=_area_pct(ordered),
        texture=_texture(ordered),
        relation=_relation(ordered),
        diagnosis=_diagnosis(sentences),
    )
