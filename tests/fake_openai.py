"""A local OpenAI chat-completions endpoint (stdlib http.server in a thread) for client tests.

Answers come from `responder(payload) -> (status, body)`; every request is recorded, and the
number of requests in flight at once is tracked (for concurrency bounds).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[dict], tuple[int, dict]]


def completion(text: str, top: list[tuple[str, float]] | None = None) -> tuple[int, dict]:
    """A 200 chat completion answering `text`, with top logprobs for its first token if given."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1],
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    return 200, {"id": "x", "object": "chat.completion", "model": "fake", "choices": [choice]}


class FakeServer:
    """An OpenAI chat-completions endpoint whose answers come from `responder(payload)`."""

    def __init__(self, responder: Responder, delay: float = 0.0, model_id: str = "fake-model") -> None:
        self.responder, self.delay = responder, delay
        self.requests: list[tuple[str, str, dict, dict | None]] = []  # method, path, headers, payload
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(("GET", self.path, dict(self.headers), None))
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": model_id, "object": "model"}]})
                else:
                    self._send(404, {"message": "not found"})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(("POST", self.path, dict(self.headers), payload))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    self._send(*server.responder(payload))
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def payloads(self) -> list[dict]:
        """The bodies of the POST requests, in arrival order."""
        return [payload for method, _, _, payload in self.requests if method == "POST"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
