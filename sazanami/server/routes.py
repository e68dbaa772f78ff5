"""The API's routes (:func:`api_router`): completions and chat completions, the model list,
``/v1/sazanami`` (the playground's menus), ``/health``, ``/metrics``, and the playground page.
A completion's way through the server is told in :mod:`sazanami.server.app`; the routes find the
:class:`~sazanami.server.state.Server` in ``request.app.state.server``. Request bodies are read
by hand; their schemas are published in the OpenAPI document all the same
(:func:`request_schemas`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from sazanami.sampling.params import SamplingParams
from sazanami.server.answers import guarded, respond
from sazanami.server.bodies import read_body
from sazanami.server.errors import api_error
from sazanami.server.monitoring import Clock
from sazanami.server.planning import Plan
from sazanami.server.schemas import ChatCompletionRequest, CompletionRequest
from sazanami.server.state import Server

__all__ = ["STATIC", "api_router", "request_schemas"]

STATIC = Path(__file__).parent / "static"
"""The playground's files."""


def api_router() -> APIRouter:
    """The routes (module docstring)."""
    router = APIRouter()

    async def generate(request: Request, cls: type[CompletionRequest] | type[ChatCompletionRequest]) -> Any:
        clock = Clock()
        server: Server = request.app.state.server
        body = await read_body(request, server.limits.max_body_bytes)
        try:
            req = cls.model_validate_json(body)
            plan = Plan(server, req, cls is ChatCompletionRequest, clock)
        except Exception as exc:  # noqa: BLE001
            raise api_error(exc) from exc
        release = server.admission.admit()
        if not req.stream:
            try:
                async with server.admission.slot():
                    return await respond(server, plan, request)
            except Exception as exc:  # noqa: BLE001
                raise api_error(exc) from exc
            finally:
                release()
        return StreamingResponse(
            guarded(server, plan, request, release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(release),
        )

    @router.post(
        "/v1/completions",
        summary="Complete prompts (OpenAI-compatible; no chat template)",
        openapi_extra=_body(CompletionRequest),
    )
    async def completions(request: Request) -> Any:
        return await generate(request, CompletionRequest)

    @router.post(
        "/v1/chat/completions",
        summary="Chat completions (OpenAI-compatible)",
        openapi_extra=_body(ChatCompletionRequest),
    )
    async def chat_completions(request: Request) -> Any:
        return await generate(request, ChatCompletionRequest)

    def model_card(server: Server) -> dict[str, Any]:
        return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "sazanami"}

    @router.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(request.app.state.server)]}

    @router.get("/v1/models/{model_id:path}")
    async def model_info(request: Request, model_id: str) -> dict[str, Any]:
        server: Server = request.app.state.server
        server.check_model(model_id)
        return model_card(server)

    @router.get("/v1/sazanami", summary="Presets, strategies, scorers, speculative sources, tools and limits")
    async def info(request: Request) -> dict[str, Any]:
        return _info(request.app.state.server)

    @router.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        server: Server = request.app.state.server
        b = server.batcher
        return {
            "status": "ok",
            "model": server.model_name,
            "admitted": server.admission.admitted,
            "searching": server.searching,
            "running_rows": b.running_rows,
            "waiting": b.waiting,
            "stats": b.stats,
            "prefix_cache": _cache_info(server.engine),
            "memory": {"bytes": b.memory_bytes, "budget": server.memory_budget},
        }

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        text, content_type = request.app.state.server.monitor.exposition()
        return Response(text, media_type=content_type)

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    return router


_REF = "#/components/schemas/{model}"


def _body(cls: type) -> dict[str, Any]:
    """The route's request body in OpenAPI (the route reads it by hand; see
    :func:`~sazanami.server.bodies.read_body`)."""
    ref = {"$ref": _REF.format(model=cls.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def request_schemas() -> dict[str, Any]:
    """JSON schemas of the request bodies (generated from the pydantic models) and their parts."""
    out: dict[str, Any] = {}
    for cls in (CompletionRequest, ChatCompletionRequest):
        schema = cls.model_json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[cls.__name__] = schema
    return out


def _cache_info(engine: Any) -> dict[str, Any] | None:
    """The prefix cache's counters and size, or None when the engine has none."""
    pc = getattr(engine, "prefix_cache", None)
    return None if pc is None else pc.stats.to_dict() | {"bytes": pc.nbytes, "max_bytes": pc.max_bytes}


def _info(server: Server) -> dict[str, Any]:
    from sazanami.noise.fluctuation import PRESETS
    from sazanami.search import STRATEGIES, strategy_options
    from sazanami.search.scorer_specs import SCORER_NAMES
    from sazanami.speculative.spec import SOURCES

    def plain(x: Any) -> Any:
        return json.loads(json.dumps(x, default=str))

    return {
        "model": server.model_name,
        "backend": server.engine.backend.capabilities.backend,
        "presets": {name: fl.to_dict() for name, fl in PRESETS.items()},
        "strategies": {name: plain(strategy_options(name)) for name in STRATEGIES},
        "scorers": [s for s in SCORER_NAMES if not s.startswith("py:")],
        "tools": server.tools.names if server.tools is not None else [],
        "speculative": {"sources": list(SOURCES)},
        "limits": server.limits.to_dict() | {"memory_budget": server.memory_budget},
        "defaults": {k: v for k, v in SamplingParams().to_dict().items() if k != "fluctuation"},
    }
