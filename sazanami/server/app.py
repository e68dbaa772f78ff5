"""The OpenAI-compatible HTTP API and the web playground: ``create_app(model=..., limits=...)``.

Endpoints:

- ``GET /v1/models``, ``GET /v1/models/{id}`` — the served model;
- ``POST /v1/completions`` (plain text) and ``POST /v1/chat/completions`` (chat template),
  streamed as server-sent events with ``"stream": true``;
- ``GET /v1/sazanami`` — presets, strategies, scorers, tools and limits (the playground's menus);
- ``GET /`` — the playground; ``GET /health``; ``GET /metrics`` (Prometheus,
  :mod:`sazanami.server.monitoring`).

With ``api_key``, every ``/v1`` route and ``/metrics`` need ``Authorization: Bearer KEY``
(:mod:`sazanami.server.gates`); ``cors_origins`` lets those browser origins call the API.

A request goes: read its body (413 past ``max_body_bytes``, 408 past ``body_timeout``) → parse
and validate (400 with ``param``; 404 unknown model; 413 too large: a prompt past the context,
or rows whose memory exceeds the budget, :mod:`sazanami.server.memory`) →
admission (503 when ``max_concurrent + max_queue`` requests are in) → a running slot → the
:class:`~sazanami.server.batcher.Batcher` (plain sampling, rows sharing engine batches; stochastic
beams, a batch of their own) or a search thread (search; its engine calls go through the
batcher too) → the response. A client that goes away cancels its generation: a search stops
at its next engine call and its queued rows are dropped. A search runs for
``Limits.max_search_seconds`` at most: it starts no engine call after that (and answers with
its best so far), and a call still running then is cut (504, ``search_timeout``).

Request bodies are parsed by hand (to answer bad JSON, size and depth in OpenAI's error
format); their schemas are still published in the OpenAPI document (``/openapi.json``).

The parts, one module each: :mod:`~sazanami.server.errors` (exceptions → HTTP answers),
:mod:`~sazanami.server.bodies` (reading a body), :mod:`~sazanami.server.planning` (a request →
a validated plan), :mod:`~sazanami.server.admission` (503 and running slots),
:mod:`~sazanami.server.runs` (the batcher or a search thread), :mod:`~sazanami.server.answers`
(a whole response or server-sent events), :mod:`~sazanami.server.routes` (the routes) and
:mod:`~sazanami.server.state` (what they share); this module puts them together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from sazanami.engine.loop import Engine
from sazanami.models import DEFAULT_MODEL
from sazanami.server.errors import install as install_error_handlers
from sazanami.server.flows_api import flows_router
from sazanami.server.gates import ApiKeyGate
from sazanami.server.limits import Limits
from sazanami.server.monitoring import RequestMetrics
from sazanami.server.routes import STATIC, api_router, request_schemas
from sazanami.server.state import Server

__all__ = ["STATIC", "create_app", "model_id"]


def model_id(model: str) -> str:
    """The id ``model`` is served under: a registry name as it is; for a path, the file's stem
    (``.gguf``) or the directory's name, never the path (which would show the server's file
    system to every client): ``/srv/models/SmolLM2-135M.Q4_1.gguf`` → ``SmolLM2-135M.Q4_1``."""
    kind, sep, rest = model.partition(":")
    if sep and kind == "noise-lm":  # a research model: noise-lm:DIR
        return f"{kind}:{model_id(rest)}"
    path = Path(model).expanduser()
    if model.endswith(".gguf"):
        return path.stem
    if "/" in model or "\\" in model or path.is_dir():
        return path.resolve().name
    return model


def create_app(
    model: str = DEFAULT_MODEL,
    limits: Limits | None = None,
    *,
    engine: Engine | None = None,
    tools: Any = "builtin",
    backend: str = "auto",
    threads: int | None = None,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    indexes: dict[str, str] | None = None,
) -> FastAPI:
    """The server for ``model`` (a registry name, HF directory or ``.gguf``; or a ready ``engine``),
    served under :func:`model_id` (a path's file stem or directory name; requests may name it so
    or by the path they were given).

    ``tools``: the :class:`~sazanami.islands.ToolRegistry` requests may use; ``"builtin"``
    (default) is CALC; None allows none. ``backend`` (:data:`~sazanami.models.BACKENDS`):
    ``auto`` picks for the server's typical shape, a full batch of ``limits.max_batch_rows``
    rows (:func:`~sazanami.models.choose_backend`: torch for a model both run unless the batch
    is below the measured crossover, llama.cpp for GGUF-only models). ``threads``: llama.cpp's.
    ``api_key``: every ``/v1`` route and ``/metrics`` need ``Authorization: Bearer API_KEY``
    (:mod:`sazanami.server.gates`; None or empty: open). ``cors_origins``: browser origins
    allowed to call the API (``["*"]`` for any; None: no CORS headers). ``indexes``: corpus
    indexes (``sazanami index`` folders) by name, which a request's ``speculative.corpus`` names.
    """
    limits = limits or Limits()
    if engine is None:
        engine = _engine(model, limits, backend, threads)
    if tools == "builtin":
        from sazanami.islands import builtin_tools

        tools = builtin_tools(["calc"])
    server = Server(engine, model_id(model), limits, tools, aliases=(model,), indexes=indexes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        try:
            yield
        finally:
            server.batcher.stop()
            server.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(  # /docs and /redoc load Swagger UI and ReDoc from this server, not a CDN
        title="sazanami",
        version=_version(),
        lifespan=lifespan,
        summary="OpenAI-compatible API with fluctuation and search",
        favicon_url="/favicon.ico",
    )
    app.state.server = server
    # outermost last: CORS (answers preflights, adds its headers to every answer, 401s too) →
    # request metrics (counts every answer, 401s too) → the API key gate → the routes
    if api_key:
        app.add_middleware(ApiKeyGate, api_key=api_key)
    app.add_middleware(RequestMetrics, monitor=server.monitor)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])

    install_error_handlers(app)
    app.include_router(api_router())
    app.include_router(flows_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _engine(model: str, limits: Limits, backend: str, threads: int | None) -> Engine:
    """The engine for ``model``, its backend chosen for a full batch of ``limits.max_batch_rows``
    rows, its prefix cache ``limits.prefix_cache_mb`` large (none at 0)."""
    from sazanami.models import load_for

    engine = Engine(
        load_for(model, backend, limits.max_batch_rows, threads=threads), prefix_cache=limits.prefix_cache_mb > 0
    )
    if engine.prefix_cache is not None:
        engine.prefix_cache.max_bytes = limits.prefix_cache_mb * 2**20
    return engine


def _version() -> str:
    from sazanami import __version__

    return __version__
