"""The API key gate: ``Authorization: Bearer KEY`` on every API route (``sazanami serve --api-key``).

Gated: every path under ``/v1`` (completions, chat, models, the flows API …) and ``/metrics``.
Open: ``/health`` (for load balancers), the playground's and the flow editor's pages and their
static files (their API calls send the key; they ask for it once and keep it in the tab's
``sessionStorage``), and the OpenAPI document and its viewer (``/docs``, ``/openapi.json``).

The key is compared in constant time (:func:`hmac.compare_digest`); a missing or wrong key is
401 in OpenAI's error format (``code: invalid_api_key``), as OpenAI and vLLM answer it.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from sazanami.server.responses import error_body

GATED_PREFIXES = ("/v1/", "/metrics")
"""Paths that need the key (``/v1`` itself too)."""


def gated(path: str) -> bool:
    """Whether ``path`` needs the API key."""
    return path == "/v1" or path.startswith(GATED_PREFIXES)


def bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class ApiKeyGate:
    """ASGI middleware: 401 for a gated path without ``Authorization: Bearer`` ``api_key``."""

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not gated(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = bearer(scope["headers"])
        if token is not None and hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        message = (
            "Missing API key: send it as the header 'Authorization: Bearer KEY'"
            if token is None
            else "Incorrect API key provided"
        )
        body = json.dumps(error_body(message, "invalid_request_error", None, "invalid_api_key")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
