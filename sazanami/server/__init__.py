"""An OpenAI-compatible HTTP API with fluctuation and search, and a web playground.

>>> from sazanami.server import create_app, Limits
>>> app = create_app("tiny-random", Limits(max_tokens=64))   # any ASGI server runs it

``sazanami serve`` (:mod:`sazanami.cli.serve`) runs it under uvicorn. FastAPI is imported
only when the app is built, so the CLI stays quick to start.
"""

from __future__ import annotations

from typing import Any

from sazanami.server.limits import Limits

__all__ = ["Limits", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`sazanami.server.app.create_app`."""
    from sazanami.server.app import create_app as build

    return build(*args, **kwargs)
