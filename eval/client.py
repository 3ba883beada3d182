"""Asynchronous client of an OpenAI-compatible chat-completions endpoint (`swift deploy`, `vllm serve`).

Requests go out with bounded concurrency; connection errors, timeouts, 429 and 5xx are retried
with exponential backoff (the server may be busy or restarting), other 4xx are not (the request
itself is wrong, and repeating it cannot help). A request that still fails becomes a result with
an error, so one bad sample never stops a run.
"""
from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8000"
_RETRY_STATUS = frozenset({408, 429})


class EndpointError(Exception):
    """The endpoint cannot be used at all (unreachable, not OpenAI-compatible, refused the key)."""


@dataclass(frozen=True)
class ChatRequest:
    """One single-turn question; `prompt` holds an `<image>` tag where each image goes."""

    key: str
    prompt: str
    images: tuple[str, ...] = ()
    max_tokens: int = 512
    top_logprobs: int = 0  # > 0: return the first positions' top-k logprobs


@dataclass(frozen=True)
class ChatResult:
    key: str
    text: str | None
    top_logprobs: tuple[tuple[str, float], ...] | None  # of the first generated token
    error: str | None
    attempts: int


def api_base(url: str) -> str:
    """`http://host:port` or `.../v1` -> `.../v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def image_data_url(path: str | Path) -> str:
    """A base64 data URL: servers do not read client-side paths."""
    mime = mimetypes.guess_type(str(path))[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def to_messages(prompt: str, images: Sequence[str]) -> list[dict[str, Any]]:
    """One user message with the images at their `<image>` tags (swift's convention in the rows)."""
    texts = prompt.split("<image>")
    if len(texts) - 1 != len(images):
        raise ValueError(f"prompt has {len(texts) - 1} <image> tags for {len(images)} images")
    content: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        if i:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(images[i - 1])}})
        if text:
            content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def build_payload(req: ChatRequest, model: str, sampling: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Greedy decoding unless `sampling` (temperature, top_p, seed) says otherwise; special tokens kept
    (vLLM's skip_special_tokens=false; swift keeps them anyway)."""
    payload: dict[str, Any] = {
        "model": model, "messages": to_messages(req.prompt, req.images), "max_tokens": req.max_tokens,
        "temperature": 0.0, "skip_special_tokens": False, "spaces_between_special_tokens": False,
        **(sampling or {}),
    }
    if req.top_logprobs:
        payload.update(logprobs=True, top_logprobs=req.top_logprobs)
    return payload


def parse_completion(body: dict[str, Any]) -> tuple[str, tuple[tuple[str, float], ...] | None]:
    """(text, first token's top logprobs) of a chat-completions response."""
    choice = body["choices"][0]
    text = (choice.get("message") or {}).get("content") or ""
    content = (choice.get("logprobs") or {}).get("content") or []
    top = None
    if content:
        first = content[0]
        top = tuple((t["token"], float(t["logprob"])) for t in first.get("top_logprobs") or [])
        if not top and "token" in first:
            top = ((first["token"], float(first["logprob"])),)
    return text, top


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
        message = message or body.get("message") or body.get("detail") or body.get("error")
    except (ValueError, AttributeError):
        message = response.text
    return f"HTTP {response.status_code}: {str(message or response.reason_phrase)[:300]}"


def list_models(url: str, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """Model names served at `url` (GET /v1/models); EndpointError when there is no usable server."""
    target = f"{api_base(url)}/models"
    try:
        response = httpx.get(target, headers=_headers(api_key), timeout=timeout)
    except httpx.HTTPError as e:
        raise EndpointError(f"cannot reach {target} ({type(e).__name__}: {e}); is the server running "
                            "(`make serve` starts one) and is --url right?") from None
    if response.status_code in (401, 403):
        raise EndpointError(f"{target} refused the request ({_error_text(response)}); pass --api-key")
    if response.status_code != 200:
        raise EndpointError(f"{target} answered {_error_text(response)}; is --url an OpenAI-compatible server?")
    try:
        return [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise EndpointError(f"{target} did not answer an OpenAI model list") from None


def resolve_model(url: str, api_key: str | None = None, model: str | None = None) -> str:
    """`model`, checked against the server's list; the first served model when none is given."""
    models = list_models(url, api_key)
    if model is None:
        if not models:
            raise EndpointError(f"{api_base(url)} serves no model")
        return models[0]
    if models and model not in models:
        raise EndpointError(f"model {model!r} is not served at {api_base(url)}; served: {', '.join(models)}")
    return model


class ChatClient:
    """Sends ChatRequests to one model, `concurrency` at a time (greedy unless `sampling` is given)."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 retries: int = 3, backoff: float = 1.0, timeout: float = 600.0,
                 sampling: Mapping[str, Any] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.endpoint = f"{api_base(url)}/chat/completions"
        self.model, self.api_key, self.sampling = model, api_key, dict(sampling or {})
        self.concurrency, self.retries, self.backoff, self.timeout = concurrency, retries, backoff, timeout

    async def _send(self, http: httpx.AsyncClient, req: ChatRequest) -> ChatResult:
        try:
            payload = build_payload(req, self.model, self.sampling)
        except (OSError, ValueError) as e:
            return ChatResult(req.key, None, None, f"request not built: {e}", 0)
        error = ""
        for attempt in range(1, self.retries + 2):
            try:
                response = await http.post(self.endpoint, json=payload)
            except httpx.TransportError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    try:
                        text, top = parse_completion(response.json())
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        return ChatResult(req.key, None, None, f"unreadable response ({e})", attempt)
                    return ChatResult(req.key, text, top, None, attempt)
                error = _error_text(response)
                if response.status_code < 500 and response.status_code not in _RETRY_STATUS:
                    return ChatResult(req.key, None, None, error, attempt)
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        return ChatResult(req.key, None, None, error, self.retries + 1)

    async def gather(self, requests: Sequence[ChatRequest], desc: str | None = None) -> list[ChatResult]:
        """Results in request order; a tqdm bar when `desc` is given.

        `concurrency` workers pull from one iterator, so memory stays flat however many requests
        there are (images are read only when their request is sent).
        """
        results: list[ChatResult | None] = [None] * len(requests)
        pending = iter(enumerate(requests))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(headers=_headers(self.api_key), timeout=self.timeout, limits=limits) as http:
            with tqdm(total=len(requests), desc=desc, unit="req", disable=desc is None, dynamic_ncols=True) as bar:
                async def worker() -> None:
                    for i, req in pending:
                        results[i] = await self._send(http, req)
                        bar.update(1)

                await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(requests)))))
        return results  # type: ignore[return-value]

    def run(self, requests: Sequence[ChatRequest], desc: str | None = None) -> list[ChatResult]:
        return asyncio.run(self.gather(requests, desc))
