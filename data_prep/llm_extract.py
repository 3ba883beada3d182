"""Caption -> fields through any OpenAI-compatible chat endpoint (`convert --extract-with URL`).

The reference recipe restructured captions with a local LLM; this keeps that option for captions the
rules read poorly, without making the pipeline depend on a server: every failure (network, HTTP
status, unparsable or invalid answer) falls back to the rule-based `parse_caption` and is counted by
reason in `fallbacks`, so the quality report can say how many rows the LLM really produced.
Only the standard library is used (urllib), so worker processes can pickle the extractor.
"""
from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from data_prep.captions import FIELD_NAMES, CaptionFields, normalize_modality, parse_caption

__all__ = ["LlmExtractor", "SYSTEM_PROMPT", "fields_from_answer", "AnswerError"]

SYSTEM_PROMPT = (
    "You extract structured fields from one medical image caption. Answer with a single JSON object "
    "and nothing else, with exactly these keys (null when the caption does not say):\n"
    '  "modality": imaging modality, one of CT, MR, X-ray, ultrasound, pathology, fundus, endoscopy, '
    "dermoscopy, PET, OCT, mammography;\n"
    '  "organ": organ or body region, lowercase (e.g. "brain", "chest", "knee");\n'
    '  "roi_location": where the region of interest lies, as the caption words it (e.g. "upper left region");\n'
    '  "roi_area_pct": the share of the image the region covers, as a number in percent (e.g. 4.1);\n'
    '  "texture": the texture, density, signal or colour description of the region;\n'
    '  "relation": how the region relates to neighbouring structures;\n'
    '  "diagnosis": the disease hypothesis, as a short phrase.\n'
    "Copy wording from the caption; do not add findings it does not state."
)

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_TEXT_FIELDS = tuple(name for name in FIELD_NAMES if name != "roi_area_pct")


class AnswerError(ValueError):
    """The model's answer is not a valid field object; the message is the fallback reason."""


def _json_object(content: str) -> dict[str, Any]:
    fenced = _FENCE_RE.search(content)
    text = fenced.group(1) if fenced else content
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise AnswerError("no_json")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        raise AnswerError("invalid_json") from None
    if not isinstance(obj, dict):
        raise AnswerError("invalid_json")
    return obj


def _text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AnswerError(f"bad_{key}")
    value = " ".join(value.split())
    return None if value.lower() in ("", "null", "none", "n/a", "unknown") else value


def _pct(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise AnswerError("bad_roi_area_pct")
    if isinstance(value, str):
        value = value.strip().rstrip("%").strip()
    try:
        pct = float(value)
    except (TypeError, ValueError):
        raise AnswerError("bad_roi_area_pct") from None
    if not math.isfinite(pct) or not 0 < pct <= 100:
        raise AnswerError("bad_roi_area_pct")
    return pct


def fields_from_answer(content: str) -> CaptionFields:
    """Validate a model answer into CaptionFields; raises AnswerError naming what is wrong."""
    obj = _json_object(content)
    if not any(key in obj for key in FIELD_NAMES):
        raise AnswerError("no_fields")
    values: dict[str, Any] = {key: _text(obj.get(key), key) for key in _TEXT_FIELDS}
    if values["modality"] is not None:
        values["modality"] = normalize_modality(values["modality"]) or values["modality"]
    if values["organ"] is not None:
        values["organ"] = values["organ"].lower()
    return CaptionFields(roi_area_pct=_pct(obj.get("roi_area_pct")), **values)


def _endpoint(url: str) -> tuple[str, str]:
    """(chat completions URL, models URL) from a server root, a /v1 base or the full endpoint."""
    base = url.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}/v1/chat/completions", f"{base}/v1/models"


class LlmExtractor:
    """Callable caption -> CaptionFields backed by an OpenAI-compatible server, rules as fallback.

    `model=None` asks the server's /v1/models for its first model (once). Counters: `calls`,
    `answered` (fields came from the model) and `fallbacks` (reason -> count).
    """

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60) -> None:
        self.chat_url, self.models_url = _endpoint(url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.calls = 0
        self.answered = 0
        self.fallbacks: Counter[str] = Counter()

    def _request(self, url: str, payload: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _model_name(self) -> str:
        if self.model is None:
            listing = self._request(self.models_url)
            try:
                self.model = str(listing["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise AnswerError("no_model") from None
        return self.model

    def _ask(self, caption: str) -> CaptionFields:
        body = self._request(self.chat_url, {
            "model": self._model_name(),
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": caption}],
            "temperature": 0,
            "max_tokens": 512,
        })
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AnswerError("bad_response") from None
        if not isinstance(content, str):
            raise AnswerError("bad_response")
        return fields_from_answer(content)

    def __call__(self, caption: str) -> CaptionFields:
        self.calls += 1
        try:
            fields = self._ask(caption)
        except AnswerError as err:
            reason = str(err)
        except urllib.error.HTTPError as err:
            reason = f"http_{err.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            reason = "unreachable"
        except (json.JSONDecodeError, UnicodeDecodeError):
            reason = "bad_response"
        else:
            self.answered += 1
            return fields
        self.fallbacks[reason] += 1
        return parse_caption(caption)
