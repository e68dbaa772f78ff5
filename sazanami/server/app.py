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
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from sazanami.beam_params import BeamParams
from sazanami.engine import Engine
from sazanami.errors import ModelNotFoundError, ParameterError, SazanamiError
from sazanami.models import DEFAULT_MODEL
from sazanami.params import SamplingParams
from sazanami.rows import Completion, RowRequest
from sazanami.seeds import seed_or_fresh
from sazanami.server.batcher import BatchedEngine, Batcher, Cancelled, Event, SearchTimeout
from sazanami.server.flows_api import flows_router
from sazanami.server.gates import ApiKeyGate
from sazanami.server.limits import Limits
from sazanami.server.memory import MemoryTooLarge, check_fits, default_memory_budget, footprint
from sazanami.server.monitoring import Clock, Monitor, RequestMetrics
from sazanami.server.responses import DONE, Choice, Shape, error_body, sse, usage
from sazanami.server.schemas import ChatCompletionRequest, CompletionRequest, Prompt, SchemaTooLarge

STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def api_error(exc: BaseException) -> ApiError:
    """The HTTP answer to an exception (sazanami's own errors are the client's; others are 500s)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SchemaTooLarge):
        return ApiError(413, str(exc), param=exc.param, code="schema_too_large")
    if isinstance(exc, MemoryTooLarge):
        return ApiError(413, str(exc), param=exc.param, code="memory_budget_exceeded")
    if isinstance(exc, ParameterError):
        return ApiError(400, str(exc), param=exc.param, code="invalid_value")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ValidationError):
        return _validation_error(exc.errors())
    if isinstance(exc, Cancelled):
        return ApiError(499, str(exc), "cancelled", code="client_closed_request")
    if isinstance(exc, SearchTimeout):
        return ApiError(504, str(exc), "server_error", param="search", code="search_timeout")
    if isinstance(exc, SazanamiError):
        return ApiError(400, str(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


def _validation_error(errors: list[Any]) -> ApiError:
    e = errors[0]
    param = ".".join(str(x) for x in e["loc"] if x not in ("body",)) or None
    if e["type"] == "json_invalid":  # an empty body, a lone surrogate …
        reason = str((e.get("ctx") or {}).get("error") or e["msg"])
        if "hex escape" in reason or "surrogate" in reason:
            reason += " (a \\u escape that is a lone UTF-16 surrogate is not text)"
        elif "recursion limit" in reason:
            reason = f"nested too deeply ({reason})"
        return ApiError(400, f"the body is not valid JSON: {reason}", param="body", code="invalid_json")
    if param is None:
        return ApiError(400, f"the body must be a JSON object: {e['msg']}", param="body", code="invalid_type")
    if e["type"] == "extra_forbidden":
        return ApiError(400, f"unknown field {param!r} (see /docs for the fields)", param=param, code="unknown_field")
    if e["type"] == "missing":
        return ApiError(400, f"{param} is required", param=param, code="missing_field")
    return ApiError(400, f"{param}: {e['msg']}, got {e.get('input')!r}", param=param, code="invalid_type")


class _Run:
    """The events of one running request, delivered on the event loop; ``cancel`` drops it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.ended = False
        self.cancel: Callable[[], None] = lambda: None

    def sink(self, event: Event) -> None:
        """Called from any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def events(self, request: Request) -> AsyncIterator[Event]:
        """Events until done/error (deltas and a search's nodes come before); a client
        disconnect cancels the run and ends them."""
        watcher = asyncio.create_task(_disconnected(request))
        try:
            while True:
                getter = asyncio.create_task(self.queue.get())
                await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    raise Cancelled("the client went away")
                event = getter.result()
                if event[0] not in ("deltas", "node"):
                    self.ended = True
                yield event
                if self.ended:
                    return
        finally:
            watcher.cancel()
            if not self.ended:
                self.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Plan:
    """A validated request, ready to run."""

    def __init__(
        self, server: Server, req: CompletionRequest | ChatCompletionRequest, chat: bool, clock: Clock | None = None
    ) -> None:
        self.req, self.chat = req, chat
        self.clock = clock or Clock()
        """When it arrived, when it last produced output (/metrics' latencies)."""
        limits, engine = server.limits, server.engine
        server.check_model(req.model)
        params = req.sampling_params(limits)
        params = params.replace(seed=seed_or_fresh(params.seed))  # reported back, so any request can be rerun
        self.params = params
        self.prompts: list[Prompt] = req.prompts(limits)
        self.raw = req.raw
        """No chat template applied by the engine (completions, or a chat already rendered here)."""
        self.calling = req.function_calling(limits)
        """OpenAI function calling (:class:`~sazanami.tool_calls.FunctionCalling`), or None."""
        if self.calling is not None and not chat:
            raise ParameterError("tools", "function objects in tools need /v1/chat/completions (messages)")
        self.islands = req.islands(server.tools, self.calling, engine.tokenizer)
        if chat:
            self._render_tools(engine)
        req.check_search(params, limits)
        self.kind = "search" if req.search is not None else "sample"
        if self.kind == "sample" and params.beams is not None:
            self.kind = "beams"
        self.rows: list[RowRequest] = []
        if self.kind == "beams":  # a beam search of its own (Engine.beam_search's rows); a field it
            beams = BeamParams.from_sampling(params)  # does not honour is a 400 naming it
            self.rows = engine.beam_rows(self.prompts, beams, self.raw, self.islands)
        elif self.kind != "search":
            self.rows = engine.rows_for(self.prompts, params, self.raw, self.islands)
        if self.kind != "search":
            ids = {tuple(r.prompt_ids) for r in self.rows}
        else:
            isl = self.islands
            ids = {tuple(engine.encode(isl.apply_to_prompt(p, self.raw) if isl else p, self.raw)) for p in self.prompts}
        self.prompt_tokens = sum(len(i) for i in ids)
        where = "messages" if chat else "prompt"
        for i in ids:
            if len(i) > limits.max_prompt_tokens:
                raise ApiError(
                    413,
                    f"{where} has {len(i)} tokens; this server takes at most {limits.max_prompt_tokens}",
                    param=where,
                    code="context_length_exceeded",
                )
            if server.max_positions and len(i) + params.max_tokens > server.max_positions:
                raise ApiError(
                    413,
                    f"{where} ({len(i)} tokens) + max_tokens ({params.max_tokens}) exceeds "
                    f"the model's context of {server.max_positions}",
                    param=where,
                    code="context_length_exceeded",
                )
        self._check_memory(server, ids, where)
        self.alone = bool(limits.batch_invariant if req.batch_invariant is None else req.batch_invariant)
        """Run in engine batches of its own (batch-invariant)."""
        self.shape = Shape(chat, server.model_name)
        self.want_logprobs = req.wants_logprobs()
        has_tools = self.islands is not None and self.islands.has_tools
        # logprobs, traces and tool spans come with the engine's completions, at the end of a batch
        self.needs_completion = self.want_logprobs or params.trace or has_tools
        self.cached: dict[int, int] = {}
        """Row index → its prompt tokens that came from the engine's prefix cache."""

    def _render_tools(self, engine: Engine) -> None:
        """A conversation with function tools or tool messages is rendered here (the model's
        template with tools, or the fallback format; :func:`~sazanami.tool_calls.render_prompt`);
        the server tools' description, if any, goes into it first."""
        from sazanami.tool_calls import has_tool_messages, render_prompt

        (messages,) = self.prompts
        assert isinstance(messages, list)
        if self.calling is None and not has_tool_messages(messages):
            return
        isl = self.islands
        if isl is not None and isl.preamble() is not None:
            messages = isl.apply_to_prompt(messages)  # type: ignore[assignment]
            self.islands = dataclasses.replace(isl, describe_tools=False)
        functions = self.calling.functions if self.calling is not None else ()
        self.prompts = [render_prompt(engine.tokenizer, messages, functions)]
        self.raw = True

    def finish_calls(self, choices: list[Choice]) -> None:
        """Split each whole choice into content and tool calls (finish reason ``tool_calls``)."""
        if self.calling is None:
            return
        from sazanami.tool_calls import message_of

        for c in choices:
            message, c.finish_reason = message_of(self.calling, c.text, c.finish_reason or "stop")
            c.text, c.tool_calls = message["content"] or "", message.get("tool_calls")

    def call_stream(self) -> Any:
        """A streaming parser for one choice (:class:`~sazanami.tool_calls.CallStream`), or None."""
        from sazanami.tool_calls import CallStream

        return CallStream(self.calling) if self.calling is not None and self.calling.calls else None

    def _check_memory(self, server: Server, ids: set[tuple[int, ...]], where: str) -> None:
        """Refuse (413) rows whose memory exceeds the server's whole budget, naming the field to
        lower: the prompt or max_tokens when one row is too much, else n (or the prompts).

        A search is checked for one row of its prompt (its engine calls are checked as they
        come, by the batcher, against the same budget). A beam row counts ``width`` rows."""
        backend, params = server.engine.backend, self.params
        rows = self.rows or [RowRequest(list(i), params, 0, islands=self.islands) for i in ids]
        fp = footprint(rows, backend)
        longest = max(rows, key=lambda r: len(r.prompt_ids))
        one = footprint([RowRequest(longest.prompt_ids, params.replace(beams=None), 0, islands=self.islands)], backend)
        if one.nbytes > server.memory_budget:
            param = where if max(len(i) for i in ids) >= params.max_tokens else self._max_tokens_name()
        elif self.kind == "beams" and params.beams is not None and params.beams.width > 1:
            param = "beams"
        else:
            param = "n" if params.n > 1 else where
        check_fits(one if self.kind == "search" else fp, server.memory_budget, param)

    def _max_tokens_name(self) -> str:
        """The field the client gave max_tokens as (chat may say max_completion_tokens)."""
        return "max_completion_tokens" if getattr(self.req, "max_completion_tokens", None) is not None else "max_tokens"

    def choices(self) -> list[Choice]:
        """One per row; none for beams (their choices come with the completions)."""
        return [Choice(i, seed=r.seed) for i, r in enumerate(self.rows)] if self.kind == "sample" else []

    def predictions(self, choices: list[Choice]) -> tuple[int, int] | None:
        """(drafted, accepted) tokens of speculative decoding over the choices; None without it."""
        if self.params.speculative is None or self.kind != "sample":
            return None
        return sum(c.drafted for c in choices), sum(c.accepted for c in choices)

    def cached_tokens(self) -> int | None:
        """Prompt tokens of this request the prefix cache served, each distinct prompt once
        (as ``prompt_tokens`` counts them); None for a search (its ``spend`` reports them)."""
        if self.kind == "search":
            return None
        first: dict[tuple[int, ...], int] = {}
        for i, r in enumerate(self.rows):
            first.setdefault(tuple(r.prompt_ids), i)
        return sum(self.cached.get(i, 0) for i in first.values())

    def echo(self, index: int) -> str:
        req = self.req
        if isinstance(req, CompletionRequest) and req.echo:
            return str(self.prompts[self.rows[index].prompt_index] if self.kind == "sample" else self.prompts[0])
        return ""


class Server:
    """What the routes share: the engine, its batcher, the limits and the admission counter."""

    def __init__(
        self, engine: Engine, model_name: str, limits: Limits, tools: Any = None, aliases: tuple[str, ...] = ()
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        """The id the model is served under (:func:`model_id`): /v1/models, every response's ``model``."""
        self.aliases = aliases
        """Other names a request may give the model by (the path it was loaded from); never shown."""
        self.limits = limits
        self.tools = tools
        pc = getattr(engine, "prefix_cache", None)
        self.memory_budget: int = limits.memory_budget or default_memory_budget(  # type: ignore[assignment]
            prefix_cache_bytes=pc.max_bytes if pc is not None else 0
        )
        """Bytes the running rows' keys/values and logits may take (:mod:`sazanami.server.memory`)."""
        self.batcher = Batcher(engine, limits.max_batch_rows, limits.cohorts, self.memory_budget)
        self.pool = ThreadPoolExecutor(limits.max_searches, thread_name_prefix="sazanami-search")
        self.admitted = 0
        self.waiting = 0
        """Admitted requests waiting for a running slot."""
        self.searching = 0
        """Searches (and beam searches) running on the pool's threads now."""
        self._lock = threading.Lock()
        self.created = int(time.time())
        self._slots: asyncio.Semaphore | None = None
        self.eos = set(engine.tokenizer.eos_token_ids)
        self.max_positions: int = engine.backend.max_positions
        """The model's context (every backend says it): a prompt + max_tokens past it is 413."""
        self.monitor = Monitor(self)

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrent)
        return self._slots

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A running slot (counted in ``waiting`` until it is free)."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.slots.release()

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in (self.model_name, self.engine.backend.name, *self.aliases):
            raise ApiError(
                404,
                f"The model {model!r} does not exist; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    # -- admission ------------------------------------------------------------------------------
    def admit(self) -> Callable[[], None]:
        """Count a request in (503 when full); returns its idempotent release."""
        room = self.limits.max_concurrent + self.limits.max_queue
        if self.admitted >= room:
            raise ApiError(
                503,
                f"the server is overloaded ({self.admitted} requests running or waiting); retry later",
                "server_error",
                code="server_overloaded",
            )
        self.admitted += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.admitted -= 1

        return release

    # -- running --------------------------------------------------------------------------------
    def start(self, plan: _Plan) -> _Run:
        """Start the plan's generation; its events arrive on the returned run."""
        run = _Run()
        if plan.kind != "search":  # sampling and beams: the batcher runs their rows
            job = self.batcher.submit(plan.rows, run.sink, plan.alone)
            run.cancel = job.cancel
            return run
        cancelled = threading.Event()
        run.cancel = cancelled.set
        deadline = time.monotonic() + self.limits.max_search_seconds
        engine = BatchedEngine(self.engine, self.batcher, cancelled, plan.alone, deadline)
        fn = partial(self._search, plan, engine, run.sink if plan.req.stream else None)

        def work() -> None:
            with self._lock:
                self.searching += 1
            try:
                run.sink(("done", fn()))
            except BaseException as exc:  # noqa: BLE001 - reported to the client
                run.sink(("error", exc))
            finally:
                with self._lock:
                    self.searching -= 1

        self.pool.submit(work)
        return run

    def _search(self, plan: _Plan, engine: BatchedEngine, sink: Callable[[Event], None] | None = None) -> Any:
        """Run the plan's search; with ``sink`` (a streamed request), each node as it is added
        or scored goes to it as a ``("node", payload)`` event (:func:`_search_node`)."""
        from sazanami.search import search

        spec = plan.req.search
        assert spec is not None
        kw: dict[str, Any] = {"scorer": spec.scorer} if spec.scorer is not None else {}
        if sink is not None:
            kw["on_node"] = lambda event: sink(("node", _search_node(event)))
        return search(
            engine,
            plan.prompts[0],
            spec.strategy,
            budget=plan.req.search_budget(plan.params, self.limits),
            params=plan.params,
            seed=plan.params.seed,
            raw=plan.raw,
            islands=plan.islands,
            **kw,
            **spec.options,
        )

    # -- results --------------------------------------------------------------------------------
    def feed(self, plan: _Plan, choices: list[Choice], deltas: list[Any]) -> None:
        """Add one step's deltas to the choices (text, drawn-token count, finish)."""
        ignore_eos = plan.params.ignore_eos
        for d in deltas:
            c = choices[d.row]
            c.text += d.text
            ids = d.token_ids if d.token_ids is not None else [] if d.token_id is None else [d.token_id]
            eos = d.finished and d.finish_reason == "stop" and bool(ids) and ids[-1] in self.eos and not ignore_eos
            taken = ids[:-1] if eos else ids  # several when a draft was accepted (speculative decoding)
            c.tokens += len(taken)
            c.token_ids.extend(taken)
            c.drafted, c.accepted = d.drafted, d.accepted
            if d.finished:
                c.finish_reason = d.finish_reason
            plan.cached[d.row] = d.cached_tokens

    def complete(self, plan: _Plan, choices: list[Choice], completions: list[Completion]) -> list[Choice]:
        """The exact results from the engine's completions (or a beam search's)."""
        if not choices:
            choices = [Choice(i) for i in range(len(completions))]
        for i, comp in enumerate(completions):  # beams: one row per prompt, many completions
            plan.cached.setdefault(comp.prompt_index if plan.kind == "beams" else i, comp.cached_tokens)
        for c, comp in zip(choices, completions, strict=True):
            c.text, c.finish_reason, c.tokens = comp.text, comp.finish_reason, comp.completion_tokens
            c.seed, c.token_ids, c.logprobs = comp.seed, comp.token_ids, comp.logprobs
            c.trace, c.spans = comp.trace or None, comp.spans or None
            c.top_logprobs = comp.top_logprobs or None
            c.drafted, c.accepted = comp.drafted_tokens, comp.accepted_tokens
        return choices

    def search_result(self, plan: _Plan, tree: Any) -> tuple[Choice, dict[str, Any]]:
        best = tree.best_node
        choice = Choice(
            0,
            text=tree.text,
            finish_reason=(best.finish_reason if best else None) or "stop",
            seed=best.seed if best else None,
        )
        if best is not None:
            choice.tokens, choice.token_ids, choice.logprobs = best.tokens, best.token_ids, best.logprobs
            choice.trace = best.meta.get("trace")
            choice.spans = best.spans or None
        info: dict[str, Any] = {
            "strategy": tree.strategy,
            "seed": tree.seed,
            "best": tree.best,
            "score": best.score if best is not None else None,
            "nodes": len(tree),
            "spend": tree.spend,
        }
        if plan.req.search is not None and plan.req.search.return_tree:
            info["tree"] = tree.to_dict()
        return choice, info

    # -- the two ways of answering ----------------------------------------------------------------
    async def respond(self, plan: _Plan, request: Request) -> dict[str, Any]:
        """A whole (non-streamed) response."""
        choices = plan.choices()
        extra: dict[str, Any] = {"seed": plan.params.seed}
        completion_tokens = None
        async with aclosing(self.start(plan).events(request)) as events:
            async for kind, value in events:
                if kind == "error":
                    raise value
                if kind == "deltas":
                    self.monitor.output(plan.clock)
                    self.feed(plan, choices, value)
                    if not plan.needs_completion and all(c.finish_reason for c in choices):
                        break  # every row is done; the rest of its batch is someone else's
                elif plan.kind == "search":
                    choice, extra["search"] = self.search_result(plan, value)
                    choices = [choice]
                    completion_tokens = value.spend.get("generated_tokens")
                else:
                    if plan.kind == "beams":  # a beam search's samples come all at once
                        self.monitor.output(plan.clock)
                    choices = self.complete(plan, choices, value)
        for i, c in enumerate(choices):
            c.text = plan.echo(i) + c.text
        plan.finish_calls(choices)
        if completion_tokens is None:
            completion_tokens = sum(c.tokens for c in choices)
        self.monitor.tokens(plan.prompt_tokens, completion_tokens)
        tokens = usage(plan.prompt_tokens, completion_tokens, plan.cached_tokens(), plan.predictions(choices))
        return plan.shape.response(choices, tokens, self.engine.tokenizer, plan.want_logprobs, **extra)

    async def stream(self, plan: _Plan, request: Request) -> AsyncIterator[str]:
        """Server-sent events: pieces per choice index as they are generated, then [DONE]."""
        shape, tok, seed = plan.shape, self.engine.tokenizer, plan.params.seed
        choices = plan.choices()
        ended: set[int] = set()
        completion_tokens = None
        parsers: dict[int, Any] = {}  # choice index → its CallStream (function calling)

        def pieces(index: int, text: str) -> list[str]:
            """Chunks of a choice's new text: content, or tool-call deltas."""
            parser = parsers.setdefault(index, plan.call_stream())
            if parser is None:
                return [shape.chunk([shape.piece(index, text)])] if text else []
            return [shape.chunk([shape.delta(index, d)]) for d in parser.feed(text)]

        def rest(c: Choice) -> list[str]:
            """Chunks a choice's call parser held back; its finish reason becomes tool_calls if it called."""
            parser = parsers.setdefault(c.index, plan.call_stream())
            if parser is None:
                return []
            out = [shape.chunk([shape.delta(c.index, d)]) for d in parser.finish()]
            if parser.called and c.finish_reason == "stop":
                c.finish_reason = "tool_calls"
            return out

        if shape.chat and plan.kind != "beams":
            for c in choices or [Choice(0)]:
                yield shape.chunk([shape.start(c.index)], seed=seed)
        for c in choices:
            if plan.echo(c.index):
                yield shape.chunk([shape.piece(c.index, plan.echo(c.index))])
        async with aclosing(self.start(plan).events(request)) as events:
            async for kind, value in events:
                if kind == "error":
                    raise value
                if kind == "node":  # a search's tree as it grows: an empty piece of choice 0 carries it
                    yield shape.chunk([shape.piece(0, "")], search_node=value)
                elif kind == "deltas":
                    self.monitor.output(plan.clock)
                    self.feed(plan, choices, value)
                    for d in value:
                        for line in pieces(d.row, d.text) if d.text else []:
                            yield line
                        if d.finished and not plan.needs_completion:
                            ended.add(d.row)
                            for line in rest(choices[d.row]):
                                yield line
                            yield shape.chunk([shape.end(choices[d.row])])
                    if not plan.needs_completion and len(ended) == len(choices):
                        break
                elif plan.kind == "search":
                    choice, info = self.search_result(plan, value)
                    completion_tokens = value.spend.get("generated_tokens")
                    choices = [choice]
                    for line in pieces(0, choice.text) + rest(choice):
                        yield line
                    yield shape.chunk([shape.end(choice, tok, plan.want_logprobs)], search=info, seed=seed)
                elif plan.kind == "beams":  # nothing was streamed: all of it now
                    self.monitor.output(plan.clock)
                    choices = self.complete(plan, [], value)
                    for c in choices:
                        if shape.chat:
                            yield shape.chunk([shape.start(c.index)], seed=seed)
                        for line in pieces(c.index, plan.echo(c.index) + c.text) + rest(c):
                            yield line
                        yield shape.chunk([shape.end(c, tok, plan.want_logprobs)])
                else:
                    choices = self.complete(plan, choices, value)
                    for c in choices:
                        if c.index not in ended:
                            for line in rest(c):
                                yield line
                            yield shape.chunk([shape.end(c, tok, plan.want_logprobs)])
        if completion_tokens is None:
            completion_tokens = sum(c.tokens for c in choices)
        self.monitor.tokens(plan.prompt_tokens, completion_tokens)
        if plan.req.wants_usage():
            tokens = usage(plan.prompt_tokens, completion_tokens, plan.cached_tokens(), plan.predictions(choices))
            yield shape.chunk([], tokens, seed=seed)
        yield DONE


_NODE_ADDED = ("id", "parent", "kind", "round", "seed", "temperature", "tokens", "text", "finish_reason")


def _search_node(event: Any) -> dict[str, Any]:
    """A streamed search's ``search_node`` object (docs/guide/server.md): a node just added
    (its place in the tree, seed and text) or just scored (its score and the scorer's reason),
    with the tokens generated so far and the budget. Built on the search's thread, so it is a
    snapshot: the node may change later."""
    n = event.node
    if event.stage == "added":
        node = {k: getattr(n, k) for k in _NODE_ADDED} | {"sources": list(n.sources), "spans": list(n.spans)}
    else:  # JSON has no NaN or infinity: such a score is sent as null, as the tree writes it
        finite = {k: v if v is None or math.isfinite(v) else None for k, v in n.scores.items()}
        score = n.score if n.score is None or math.isfinite(n.score) else None
        node = {"id": n.id, "score": score, "scores": finite, "reason": n.reason, "pruned": n.pruned}
    return {
        "event": event.stage,
        "node": node,
        "generated_tokens": event.generated_tokens,
        "budget_tokens": event.budget_tokens,
    }


def _cache_info(engine: Any) -> dict[str, Any] | None:
    """The prefix cache's counters and size, or None when the engine has none."""
    pc = getattr(engine, "prefix_cache", None)
    return None if pc is None else pc.stats.to_dict() | {"bytes": pc.nbytes, "max_bytes": pc.max_bytes}


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
    allowed to call the API (``["*"]`` for any; None: no CORS headers).
    """
    limits = limits or Limits()
    if engine is None:
        from sazanami.models import load_for

        engine = Engine(
            load_for(model, backend, limits.max_batch_rows, threads=threads), prefix_cache=limits.prefix_cache_mb > 0
        )
        if engine.prefix_cache is not None:
            engine.prefix_cache.max_bytes = limits.prefix_cache_mb * 2**20
    if tools == "builtin":
        from sazanami.islands import builtin_tools

        tools = builtin_tools(["calc"])
    server = Server(engine, model_id(model), limits, tools, aliases=(model,))

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

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code=str(exc.status_code)), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        err = api_error(exc)
        return JSONResponse(err.body(), status_code=err.status)

    async def generate(request: Request, cls: type[CompletionRequest] | type[ChatCompletionRequest]) -> Any:
        clock = Clock()
        body = await _read_body(request, limits.max_body_bytes)
        try:
            req = cls.model_validate_json(body)
            plan = _Plan(server, req, cls is ChatCompletionRequest, clock)
        except Exception as exc:  # noqa: BLE001
            raise api_error(exc) from exc
        release = server.admit()
        if not req.stream:
            try:
                async with server.slot():
                    return await server.respond(plan, request)
            except Exception as exc:  # noqa: BLE001
                raise api_error(exc) from exc
            finally:
                release()
        return StreamingResponse(
            _guarded(server, plan, request, release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(release),
        )

    @app.post(
        "/v1/completions",
        summary="Complete prompts (OpenAI-compatible; no chat template)",
        openapi_extra=_body(CompletionRequest),
    )
    async def completions(request: Request) -> Any:
        return await generate(request, CompletionRequest)

    @app.post(
        "/v1/chat/completions",
        summary="Chat completions (OpenAI-compatible)",
        openapi_extra=_body(ChatCompletionRequest),
    )
    async def chat_completions(request: Request) -> Any:
        return await generate(request, ChatCompletionRequest)

    def model_card() -> dict[str, Any]:
        return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "sazanami"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> dict[str, Any]:
        server.check_model(model_id)
        return model_card()

    @app.get("/v1/sazanami", summary="Presets, strategies, scorers, tools and limits")
    async def info() -> dict[str, Any]:
        return _info(server)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        b = server.batcher
        return {
            "status": "ok",
            "model": server.model_name,
            "admitted": server.admitted,
            "searching": server.searching,
            "running_rows": b.running_rows,
            "waiting": b.waiting,
            "stats": b.stats,
            "prefix_cache": _cache_info(server.engine),
            "memory": {"bytes": b.memory_bytes, "budget": server.memory_budget},
        }

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        text, content_type = server.monitor.exposition()
        return Response(text, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.include_router(flows_router(api_error, _read_body))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(_request_schemas())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_REF = "#/components/schemas/{model}"


def _body(cls: type) -> dict[str, Any]:
    """The route's request body in OpenAPI (the route reads it by hand; see :func:`_read_body`)."""
    ref = {"$ref": _REF.format(model=cls.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _request_schemas() -> dict[str, Any]:
    """JSON schemas of the request bodies (generated from the pydantic models) and their parts."""
    out: dict[str, Any] = {}
    for cls in (CompletionRequest, ChatCompletionRequest):
        schema = cls.model_json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[cls.__name__] = schema
    return out


async def _guarded(server: Server, plan: _Plan, request: Request, release: Callable[[], None]) -> AsyncIterator[str]:
    """The stream, with errors sent as an error event (the status line is already out)."""
    try:
        async with server.slot():
            async for line in server.stream(plan, request):
                yield line
    except Cancelled:
        return
    except Exception as exc:  # noqa: BLE001 - reported in the stream
        err = api_error(exc)
        yield sse(err.body())
    finally:
        release()


async def _read_body(request: Request, limit: int) -> bytes:
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


def _info(server: Server) -> dict[str, Any]:
    from sazanami.fluctuation import PRESETS
    from sazanami.search import STRATEGIES, strategy_options
    from sazanami.search.scorer_specs import SCORER_NAMES

    def plain(x: Any) -> Any:
        return json.loads(json.dumps(x, default=str))

    return {
        "model": server.model_name,
        "backend": server.engine.backend.capabilities.backend,
        "presets": {name: fl.to_dict() for name, fl in PRESETS.items()},
        "strategies": {name: plain(strategy_options(name)) for name in STRATEGIES},
        "scorers": [s for s in SCORER_NAMES if not s.startswith("py:")],
        "tools": server.tools.names if server.tools is not None else [],
        "limits": server.limits.to_dict() | {"memory_budget": server.memory_budget},
        "defaults": {k: v for k, v in SamplingParams().to_dict().items() if k != "fluctuation"},
    }


def _version() -> str:
    from sazanami import __version__

    return __version__
