"""Asking the served model: eval.ask's three questions, recorded turn by turn, with progress and sampling.

The review app reuses eval.ask.ask (same prompts, same box mapping, same verify gate) through a client
that records each question and answer (the DPO row needs the exact prompts) and reports each step
before it is sent (the page shows progress while the model answers).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eval.ask import ask
from eval.client import ChatClient, ChatRequest, ChatResult, resolve_model

STEPS = {"diagnose": "writing the report", "locate": "locating the region", "verify": "verifying the finding"}


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server the app may ask; `model` None means its first served model."""

    name: str
    url: str
    model: str | None = None


class RecordingClient(ChatClient):
    """A ChatClient that keeps every (task, prompt, answer) and calls `on_step(task)` before sending."""

    def __init__(self, *args: Any, on_step: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_step = on_step
        self.turns: list[dict[str, str]] = []

    def run(self, requests: Sequence[ChatRequest], desc: str | None = None) -> list[ChatResult]:
        for request in requests:
            if self.on_step:
                self.on_step(request.key)
        results = super().run(requests, desc)
        self.turns += [{"task": q.key, "prompt": q.prompt, "answer": r.text or ""} for q, r in zip(requests, results)]
        return results


def ask_model(image: str, endpoint: Endpoint, *, family: str, api_key: str | None, threshold: float = 0.5,
              max_pixels: int | None = None, min_pixels: int | None = None,
              sampling: dict[str, float] | None = None, on_step: Callable[[str], None] | None = None,
              timeout: float = 600.0) -> dict[str, Any]:
    """eval.ask's answer for `image` (a local file), plus the turns, the endpoint and the sampling used.

    Raises eval.client.EndpointError when the server cannot be used.
    """
    sampling = {"temperature": 0.0, "top_p": 1.0, **(sampling or {})}
    model = resolve_model(endpoint.url, api_key, endpoint.model)
    client = RecordingClient(endpoint.url, model, api_key=api_key, concurrency=1, timeout=timeout,
                             sampling=sampling, on_step=on_step)
    answer = ask(image, client, family, threshold, max_pixels, min_pixels)
    answer.pop("image")  # a server-side path: never sent to the page
    return {**answer, "endpoint": endpoint.name, "sampling": sampling, "turns": client.turns}
