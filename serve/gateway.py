"""The medvlm gateway: the only port `make serve` exposes, in front of `swift deploy` on loopback.

swift deploy has an API key option but no bound on the request size or the image size, and it
fetches remote image URLs server-side. The gateway adds what a hospital deployment needs before a
request reaches the model:
- a bearer API key (compared in constant time), required by the launcher off loopback;
- a bound on the request body (413) and on the pixels of every image (413);
- images only as base64 (data: URLs or bare base64): remote URLs are refused (400), local paths
  too unless the launcher allow-listed a folder (the backend then checks it,
  SWIFT_MEDIA_ALLOWED_DIRS);
- malformed payloads (bad base64, bytes that are not an image, invalid JSON, JSON nested deeper
  than MAX_JSON_DEPTH) answered 400 here, so the backend only sees requests it can serve;
- a bound on `n`, the choices one request may ask for (each costs a full generation).
Everything else (/v1/models, the completion itself, streaming) is passed through unchanged.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

from aiohttp import ClientConnectionError, ClientSession, ClientTimeout, web
from PIL import Image, UnidentifiedImageError

from medvlm_vocab import API_KEY_ENV, MAX_IMAGE_PIXELS, MAX_N, MAX_REQUEST_MB
_DATA_URL = re.compile(r"data:([^;,]*)(;base64)?,(.*)", re.DOTALL)
# An OpenAI chat request is about 6 levels deep (messages -> content -> part -> image_url -> url);
# tool schemas add a few more. Deeper bodies are rejected before the backend parses them again.
MAX_JSON_DEPTH = 64
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
                "authorization"}


class Rejected(Exception):
    """A request the gateway answers itself, with an HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def image_values(body: dict[str, Any]) -> Iterator[Any]:
    """Every image a chat request carries: OpenAI content parts and swift's `images` field."""
    yield from body.get("images") or []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                value = part.get("image_url")
                yield value.get("url") if isinstance(value, dict) else value
            elif isinstance(part, dict) and part.get("type") == "image":
                yield part.get("image")


def decode_base64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(400, "image: invalid base64 data") from None


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image header, without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError:
        raise Rejected(413, "image: too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise Rejected(400, "image: the data is not an image this server can read") from None


def check_image(value: Any, *, max_pixels: int, allow_local: bool) -> None:
    """Raise Rejected unless `value` is an image the backend may load."""
    if not isinstance(value, str) or not value.strip():
        raise Rejected(400, "image: expected a base64 data URL string")
    value = value.strip()
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        raise Rejected(400, "image: remote URLs are not fetched; send the image as a base64 data URL")
    match = _DATA_URL.fullmatch(value)
    if match:
        if not match.group(2):
            raise Rejected(400, "image: data URLs must be base64-encoded")
        data = decode_base64(match.group(3))
    else:
        try:
            data = decode_base64(value)
            image_size(data)
        except Rejected as e:
            if e.status != 400:
                raise
            if allow_local:
                return  # a path: the backend reads it only inside SWIFT_MEDIA_ALLOWED_DIRS
            raise Rejected(400, "image: neither a base64 image nor a data URL (local paths are off "
                                "on this server)") from None
    width, height = image_size(data)
    if width * height > max_pixels:
        raise Rejected(413, f"image: {width}x{height} = {width * height} pixels, the limit is {max_pixels}")


def json_depth(value: Any, stop_after: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), level by level: no recursion, and it stops
    counting past `stop_after`, so a wide or deep body costs one pass over its containers."""
    depth, level = 0, [value]
    while depth <= stop_after:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


def check_n(body: dict[str, Any], max_n: int) -> None:
    """`n` choices cost n generations: an integer from 1 to max_n, or absent/null (one)."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_n):
        raise Rejected(400, f"field 'n' must be an integer from 1 to {max_n} (this server's bound)")


def check_chat_request(raw: bytes, *, max_pixels: int, allow_local: bool, max_n: int = MAX_N) -> None:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejected(400, "request body is not valid JSON") from None
    except RecursionError:  # the C decoder recurses once per level: [[[[...]]]] 100,000 deep
        raise Rejected(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise Rejected(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise Rejected(400, "request body must be a JSON object")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise Rejected(400, "field 'messages' is required and must be a non-empty list")
    check_n(body, max_n)
    for value in image_values(body):
        check_image(value, max_pixels=max_pixels, allow_local=allow_local)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"object": "error", "message": message, "code": status}, status=status)


def authorised(request: web.Request, api_key: str | None) -> bool:
    if not api_key:
        return True
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and secrets.compare_digest(header[7:].encode(), api_key.encode())


def make_app(backend: str, *, api_key: str | None, max_request_bytes: int, max_pixels: int,
             allow_local: bool, timeout_s: float, max_n: int = MAX_N) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler):
        if request.path != "/health" and not authorised(request, api_key):
            return error(401, "missing or wrong API key (Authorization: Bearer KEY)")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body larger than {max_request_bytes} bytes")
        except Rejected as e:
            return error(e.status, str(e))

    async def forward(request: web.Request, body: bytes | None) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        session: ClientSession = request.app["session"]
        try:
            async with session.request(request.method, backend + request.path_qs, data=body,
                                       headers=headers) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (ClientConnectionError, TimeoutError):
            return error(502, "the model server is not answering")

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        check_chat_request(raw, max_pixels=max_pixels, allow_local=allow_local, max_n=max_n)
        return await forward(request, raw)

    async def passthrough(request: web.Request) -> web.StreamResponse:
        return await forward(request, None)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def open_session(app: web.Application):
        app["session"] = ClientSession(timeout=ClientTimeout(total=timeout_s), auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application(middlewares=[guard], client_max_size=max_request_bytes)
    app.cleanup_ctx.append(open_session)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", passthrough)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", required=True, help="URL of swift deploy, e.g. http://127.0.0.1:8001")
    parser.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_MB)
    parser.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS)
    parser.add_argument("--allow-local-images", action="store_true")
    parser.add_argument("--max-n", type=int, default=MAX_N, help="most choices (`n`) one request may ask for")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one request may take")
    args = parser.parse_args(argv)
    Image.MAX_IMAGE_PIXELS = max(args.max_image_pixels, Image.MAX_IMAGE_PIXELS or 0)
    app = make_app(args.backend.rstrip("/"), api_key=os.environ.get(API_KEY_ENV) or None,
                   max_request_bytes=int(args.max_request_mb * 2**20), max_pixels=args.max_image_pixels,
                   allow_local=args.allow_local_images, timeout_s=args.timeout, max_n=args.max_n)
    web.run_app(app, host=args.host, port=args.port, print=lambda *_: None, access_log=None)


if __name__ == "__main__":
    main()
