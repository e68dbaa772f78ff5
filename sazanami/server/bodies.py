"""Reading a request body by hand: at most ``Limits.max_body_bytes`` (413, refused before it is
all read), within ``Limits.body_timeout`` seconds (408), and JSON (400) — so that a bad body is
answered in OpenAI's error format with ``param: "body"``, before pydantic parses it."""

from __future__ import annotations

import asyncio
import json

from fastapi import Request

from sazanami.server.errors import ApiError

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes (413) before reading it all, and a body not
    received within the server's ``body_timeout`` seconds (408: a client that sends half a body
    and stalls — slowloris — does not hold its connection for ever)."""
    timeout = request.app.state.server.limits.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await _read_body_now(request, limit)
    except TimeoutError as exc:
        raise ApiError(
            408,
            f"the request body did not arrive within this server's body_timeout of {timeout:g} s",
            param="body",
            code="request_timeout",
        ) from exc


async def _read_body_now(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ApiError(
            413,
            f"request body of {size} bytes exceeds this server's limit of {limit}",
            param="body",
            code="request_too_large",
        )
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(
                413,
                f"request body exceeds this server's limit of {limit} bytes",
                param="body",
                code="request_too_large",
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "the body is empty; send a JSON object", param="body", code="invalid_json")
    try:
        json.loads(body)
    except RecursionError as exc:
        raise ApiError(400, "the body is nested too deeply", param="body", code="invalid_json") from exc
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", param="body", code="invalid_json") from exc
    return body
