"""Flows over HTTP, and the flow editor page: ``app.include_router(flows_router())``.

- ``GET /flows`` — the node editor (static page; no build step);
- ``GET /v1/flows/examples`` — the shipped flows (``examples/flows/``), as text and parsed;
- ``GET /v1/flows/kinds`` — step kinds with their fields (the editor's palette and forms);
- ``POST /v1/flows/validate`` — ``{flow | text, format}``: the parsed document, its graph, its
  plan and warnings, or the error (OpenAI's error object plus ``node``, the step's id);
- ``POST /v1/flows/run`` — ``{flow | text, format, prompt, seed}``: server-sent events, one
  per step event (:data:`sazanami.search.flows.EVENTS`, ``object: "flow.event"``), then the
  result (``object: "flow.result"``, with the tree), then ``[DONE]``.

Limits as for search: the flow's budget at most ``max_search_budget``, ``max_tokens`` at
most the server's, a step's ``n`` and a strategy's rows at most ``max_batch_rows``, the
flow's size as :mod:`sazanami.search.flows` bounds it (steps run, repeats, document depth, no
YAML aliases), ``max_search_seconds`` of running, no Python verifiers, no file a request
names, only the server's tools; a run is admitted like any request (503 when full), holds a
slot and runs on the search pool, its rows on the batcher (``batch_invariant``: alone).
Parsing and validating a flow run on a worker thread, never on the event loop; a running
flow checks before every step whether its client has gone or its time is up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from sazanami.errors import ParameterError
from sazanami.islands import Islands, ToolRegistry
from sazanami.noise.fluctuation import PRESETS
from sazanami.search.budget import search_budget
from sazanami.search.flows import Flow, check_nesting, parse_document, step_fields
from sazanami.server.batcher import BatchedEngine, Cancelled, SearchTimeout
from sazanami.server.bodies import read_body
from sazanami.server.errors import api_error
from sazanami.server.responses import DONE, sse
from sazanami.server.schemas import check_scorer
from sazanami.speculative.spec import Speculative

__all__ = ["EXAMPLES", "FlowRequest", "flows_router"]

STATIC = Path(__file__).parent / "static"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
"""The shipped flows (a source checkout's ``examples/flows``; absent from a wheel)."""


class FlowRequest(BaseModel):
    """A flow to validate or run: the document as an object, or its JSON/YAML text."""

    model_config = ConfigDict(extra="forbid")
    flow: dict[str, Any] | None = Field(None, description="The flow document (as JSON).")
    text: str | None = Field(None, description="Or the document as JSON or YAML text.")
    format: Literal["json", "yaml"] | None = Field(None, description="The text's format (default: guessed).")
    prompt: str | list[dict[str, Any]] | None = Field(None, description="Overrides the flow's prompt.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Overrides the flow's seed.")
    batch_invariant: bool | None = Field(
        None,
        description="Run the flow's rows in engine batches of their own, so its tree does not depend on what "
        "else the server runs (default: the server's setting; the editor asks for it).",
    )

    def document(self) -> dict[str, Any]:
        if (self.flow is None) == (self.text is None):
            raise ParameterError("flow", "give the flow as 'flow' (an object) or as 'text' (JSON or YAML), not both")
        doc = self.flow if self.flow is not None else parse_document(self.text or "", self.format)
        if not isinstance(doc, dict):
            raise ParameterError("flow", f"a flow must be an object, got {type(doc).__name__}")
        check_nesting(doc)  # before anything walks it
        return doc


def examples(folder: Path = EXAMPLES) -> list[dict[str, Any]]:
    """Each shipped flow: file name, format, text and parsed document."""
    out = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
        if fmt is None:
            continue
        text = path.read_text()
        out.append(
            {"name": path.stem, "file": path.name, "format": fmt, "text": text, "flow": parse_document(text, fmt)}
        )
    return out


def check_document(doc: dict[str, Any]) -> None:
    """What a flow may not do over HTTP, checked before it is parsed: the server opens no file and
    imports no code a request names (fluctuation paths, ``islands.corpus``, a speculative corpus
    index, Python verifiers)."""

    def fluctuation(where: str, args: Any) -> None:
        fl = args.get("fluctuation") if isinstance(args, dict) else None
        if isinstance(fl, str) and fl.strip() not in PRESETS:
            raise ParameterError(
                f"{where}fluctuation",
                f"{where}fluctuation must be a preset ({', '.join(PRESETS)}) or an object over HTTP",
            )
        spec = Speculative.parse(args.get("speculative")) if isinstance(args, dict) else None
        if spec is not None and spec.corpus is not None:
            raise ParameterError(
                f"{where}speculative.corpus",
                f"{where}speculative.corpus names a folder; over HTTP a flow drafts from its prompt and siblings only",
            )

    def steps(items: Any, where: str) -> None:
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict) or len(item) != 1:
                continue  # Flow.from_dict names the problem
            kind, args = next(iter(item.items()))
            if not isinstance(args, dict):
                continue
            here = f"{where}[{i}].{kind}"
            fluctuation(f"{here}.", args)
            if kind == "score" and "scorer" in args:
                check_scorer(args["scorer"], f"{here}.scorer")
            if kind == "repeat":
                steps(args.get("steps"), f"{here}.steps")

    if "scorer" in doc:
        check_scorer(doc["scorer"], "scorer")
    for name, spec in (doc.get("scorers") or {}).items() if isinstance(doc.get("scorers"), dict) else ():
        check_scorer(spec, f"scorers.{name}")
    fluctuation("params.", doc.get("params"))
    if isinstance(doc.get("islands"), dict) and doc["islands"].get("corpus") is not None:
        raise ParameterError(
            "islands.corpus", "islands.corpus names files; over HTTP the tools use the server's corpus (serve --corpus)"
        )
    steps(doc.get("steps"), "steps")


def load_flow(doc: dict[str, Any], server: Any) -> tuple[Flow, Islands | None]:
    """The flow of ``doc`` as this server allows it (module docstring) and its islands here."""
    check_document(doc)
    flow = Flow.from_dict(doc, max_rows=server.limits.max_batch_rows)
    return flow, check_limits(flow, server)


def check_limits(flow: Flow, server: Any) -> Islands | None:
    """Refuse what this server does not allow (module docstring); returns the flow's islands here."""
    limits = server.limits
    server.check_model(flow.model)
    tokens = flow.budget.tokens if flow.budget is not None else None
    if tokens is not None and tokens > limits.max_search_budget:
        raise ParameterError(
            "budget", f"budget must be in [1, {limits.max_search_budget}] tokens on this server, got {tokens}"
        )
    if flow.params.max_tokens > limits.max_tokens:
        raise ParameterError(
            "params.max_tokens",
            f"params.max_tokens must be in [1, {limits.max_tokens}] on this server, got {flow.params.max_tokens}",
        )
    for step in Flow._all_steps(flow.steps):
        m = step.args.get("max_tokens")
        if isinstance(m, int) and m > limits.max_tokens:
            raise ParameterError(
                f"{step.where}.max_tokens", f"{step.where}.max_tokens must be in [1, {limits.max_tokens}], got {m}"
            )
    spec = flow.source.get("islands")
    if spec is None:
        return None
    available = server.tools if server.tools is not None else ToolRegistry()
    try:
        return Islands.from_dict(spec, available=available, tokenizer=server.engine.tokenizer, where="islands.")
    except ParameterError as exc:
        param = exc.param if exc.param.startswith("islands") else f"islands.{exc.param}"
        raise ParameterError(param, str(exc)) from exc


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def flows_router(folder: Path = EXAMPLES) -> APIRouter:
    """The routes (module docstring); errors are answered by :func:`~sazanami.server.errors.api_error`
    (with the step's ``node``), bodies read by :func:`~sazanami.server.bodies.read_body`."""
    router = APIRouter()

    def error(exc: BaseException) -> Any:
        """The app's error for ``exc``, with ``node`` (a flow step's id) in its body."""
        err = api_error(exc)
        body = err.body()
        body["error"]["node"] = getattr(exc, "node", None)
        return err, body

    async def parse(request: Request) -> tuple[FlowRequest, dict[str, Any]]:
        server = request.app.state.server
        body = await read_body(request, server.limits.max_body_bytes)

        def work() -> tuple[FlowRequest, dict[str, Any]]:
            req = FlowRequest.model_validate_json(body)
            return req, req.document()

        return await run_in_threadpool(work)  # a big document parses off the event loop

    @router.get("/flows", include_in_schema=False)
    async def editor() -> FileResponse:
        return FileResponse(STATIC / "flows.html")

    @router.get("/v1/flows/examples", summary="The shipped example flows")
    async def list_examples() -> dict[str, Any]:
        return {"object": "list", "data": examples(folder)}

    @router.get("/v1/flows/kinds", summary="Flow step kinds and their fields")
    async def list_kinds() -> dict[str, Any]:
        return step_fields()

    # the routes read their bodies by hand (read_body: the size limit first); the schema is published
    body = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": FlowRequest.model_json_schema()}}}
    }

    @router.post(
        "/v1/flows/validate",
        summary="Validate a flow (graph, plan, warnings, or the error and its node)",
        openapi_extra=body,
    )
    async def validate(request: Request) -> Any:
        server = request.app.state.server
        req, doc = await parse(request)

        def work() -> dict[str, Any]:
            try:
                flow, _ = load_flow(doc, server)
                warnings = flow.check_budget(flow.budget) if flow.budget is not None else []
            except Exception as exc:  # noqa: BLE001 - an invalid flow is this endpoint's answer
                err, body = error(exc)
                if err.status >= 500:
                    raise
                return {"valid": False, "flow": doc, **body}
            return {
                "valid": True,
                "flow": doc,
                "graph": flow.graph().to_dict(),
                "plan": flow.plan(),
                "warnings": warnings,
                "yaml": _yaml(doc),
            }

        return await run_in_threadpool(work)  # linear in the document, but not on the event loop

    @router.post("/v1/flows/run", summary="Run a flow: per-step events by SSE, then the tree", openapi_extra=body)
    async def run(request: Request) -> Any:
        server = request.app.state.server
        req, doc = await parse(request)
        try:
            flow, islands = await run_in_threadpool(load_flow, doc, server)
            if req.prompt is None and flow.prompt is None:
                raise ParameterError("prompt", "the flow has no prompt; pass one")
        except Exception as exc:  # noqa: BLE001 - answered with the step's id
            err, body = error(exc)
            return JSONResponse(body, status_code=err.status)
        budget = search_budget(flow.budget, flow.params.max_tokens, cap=server.limits.max_search_budget)
        release = server.admission.admit()
        return StreamingResponse(
            _stream(server, flow, req, islands, budget, release, error),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(release),
        )

    return router


async def _stream(
    server: Any,
    flow: Flow,
    req: FlowRequest,
    islands: Islands | None,
    budget: Any,
    release: Callable[[], None],
    error: Callable[[BaseException], Any],
) -> AsyncIterator[str]:
    """The run's events as SSE; a client that goes away cancels it (its rows leave the batcher)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def put(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    alone = bool(server.limits.batch_invariant if req.batch_invariant is None else req.batch_invariant)
    deadline = time.monotonic() + server.limits.max_search_seconds

    def check() -> None:
        """Before every step: a flow whose steps call no model stops here too."""
        if cancelled.is_set():
            raise Cancelled("the client went away")
        if time.monotonic() >= deadline:
            raise SearchTimeout("the flow ran past this server's time limit (max_search_seconds)")

    def work() -> None:
        with server._lock:  # counted in /health like a search
            server.searching += 1
        try:
            engine = BatchedEngine(server.engine, server.batcher, cancelled, alone, deadline)
            tree = flow.run(
                engine, req.prompt, seed=req.seed, budget=budget, islands=islands,
                on_event=lambda ev: put("event", ev), check=check,
            )  # fmt: skip
            put("done", tree)
        except BaseException as exc:  # noqa: BLE001 - reported to the client
            put("error", exc)
        finally:
            with server._lock:
                server.searching -= 1

    try:
        async with server.admission.slots:
            server.pool.submit(work)
            while True:
                kind, value = await queue.get()
                if kind == "event":
                    yield sse({"object": "flow.event", **value})
                elif kind == "error":
                    if isinstance(value, Cancelled):
                        return
                    yield sse(error(value)[1])
                    return
                else:
                    best = value.best_node
                    yield sse(
                        {
                            "object": "flow.result",
                            "best": value.best,
                            "score": best.score if best is not None else None,
                            "text": value.text,
                            "seed": value.seed,
                            "spend": value.spend,
                            "tree": value.to_dict(),
                        }
                    )
                    yield DONE
                    return
    finally:
        cancelled.set()  # no-op when finished; stops the search when the client went away
        release()
