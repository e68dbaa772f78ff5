"""How a plan's run becomes the client's answer: :func:`respond` (one JSON response) or
:func:`stream` (server-sent events: pieces per choice as they are generated, a search's nodes,
then usage and ``[DONE]``; :func:`guarded` sends its errors as an error event). The JSON shapes
are :mod:`sazanami.server.responses`'; the metrics they update, :mod:`sazanami.server.monitoring`'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import Request

from sazanami.sampling.rows import Completion
from sazanami.server.batcher import Cancelled
from sazanami.server.errors import api_error
from sazanami.server.planning import Plan
from sazanami.server.responses import DONE, Choice, sse, usage
from sazanami.server.runs import start
from sazanami.server.state import Server

__all__ = ["guarded", "respond", "stream"]


def _feed(server: Server, plan: Plan, choices: list[Choice], deltas: list[Any]) -> None:
    """Add one step's deltas to the choices (text, drawn-token count, finish)."""
    ignore_eos = plan.params.ignore_eos
    for d in deltas:
        c = choices[d.row]
        c.text += d.text
        ids = d.token_ids if d.token_ids is not None else [] if d.token_id is None else [d.token_id]
        eos = d.finished and d.finish_reason == "stop" and bool(ids) and ids[-1] in server.eos and not ignore_eos
        taken = ids[:-1] if eos else ids  # several when a draft was accepted (speculative decoding)
        c.tokens += len(taken)
        c.token_ids.extend(taken)
        c.drafted, c.accepted = d.drafted, d.accepted
        if d.finished:
            c.finish_reason = d.finish_reason
        plan.cached[d.row] = d.cached_tokens


def _complete(plan: Plan, choices: list[Choice], completions: list[Completion]) -> list[Choice]:
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


def _search_result(plan: Plan, tree: Any) -> tuple[Choice, dict[str, Any]]:
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


async def respond(server: Server, plan: Plan, request: Request) -> dict[str, Any]:
    """A whole (non-streamed) response."""
    choices = plan.choices()
    extra: dict[str, Any] = {"seed": plan.params.seed}
    completion_tokens = None
    async with aclosing(start(server, plan).events(request)) as events:
        async for kind, value in events:
            if kind == "error":
                raise value
            if kind == "deltas":
                server.monitor.output(plan.clock)
                _feed(server, plan, choices, value)
                if not plan.needs_completion and all(c.finish_reason for c in choices):
                    break  # every row is done; the rest of its batch is someone else's
            elif plan.kind == "search":
                choice, extra["search"] = _search_result(plan, value)
                choices = [choice]
                completion_tokens = value.spend.get("generated_tokens")
            else:
                if plan.kind == "beams":  # a beam search's samples come all at once
                    server.monitor.output(plan.clock)
                choices = _complete(plan, choices, value)
    for i, c in enumerate(choices):
        c.text = plan.echo(i) + c.text
    plan.finish_calls(choices)
    if completion_tokens is None:
        completion_tokens = sum(c.tokens for c in choices)
    predictions = plan.predictions(choices)
    server.monitor.tokens(plan.prompt_tokens, completion_tokens, predictions)
    tokens = usage(plan.prompt_tokens, completion_tokens, plan.cached_tokens(), predictions)
    return plan.shape.response(choices, tokens, server.engine.tokenizer, plan.want_logprobs, **extra)


async def stream(server: Server, plan: Plan, request: Request) -> AsyncIterator[str]:
    """Server-sent events: pieces per choice index as they are generated, then [DONE]."""
    shape, tok, seed = plan.shape, server.engine.tokenizer, plan.params.seed
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
    async with aclosing(start(server, plan).events(request)) as events:
        async for kind, value in events:
            if kind == "error":
                raise value
            if kind == "node":  # a search's tree as it grows: an empty piece of choice 0 carries it
                yield shape.chunk([shape.piece(0, "")], search_node=value)
            elif kind == "deltas":
                server.monitor.output(plan.clock)
                _feed(server, plan, choices, value)
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
                choice, info = _search_result(plan, value)
                completion_tokens = value.spend.get("generated_tokens")
                choices = [choice]
                for line in pieces(0, choice.text) + rest(choice):
                    yield line
                yield shape.chunk([shape.end(choice, tok, plan.want_logprobs)], search=info, seed=seed)
            elif plan.kind == "beams":  # nothing was streamed: all of it now
                server.monitor.output(plan.clock)
                choices = _complete(plan, [], value)
                for c in choices:
                    if shape.chat:
                        yield shape.chunk([shape.start(c.index)], seed=seed)
                    for line in pieces(c.index, plan.echo(c.index) + c.text) + rest(c):
                        yield line
                    yield shape.chunk([shape.end(c, tok, plan.want_logprobs)])
            else:
                choices = _complete(plan, choices, value)
                for c in choices:
                    if c.index not in ended:
                        for line in rest(c):
                            yield line
                        yield shape.chunk([shape.end(c, tok, plan.want_logprobs)])
    if completion_tokens is None:
        completion_tokens = sum(c.tokens for c in choices)
    predictions = plan.predictions(choices)
    server.monitor.tokens(plan.prompt_tokens, completion_tokens, predictions)
    if plan.req.wants_usage():
        tokens = usage(plan.prompt_tokens, completion_tokens, plan.cached_tokens(), predictions)
        yield shape.chunk([], tokens, seed=seed)
    yield DONE


async def guarded(server: Server, plan: Plan, request: Request, release: Callable[[], None]) -> AsyncIterator[str]:
    """The stream, with errors sent as an error event (the status line is already out)."""
    try:
        async with server.admission.slot():
            async for line in stream(server, plan, request):
                yield line
    except Cancelled:
        return
    except Exception as exc:  # noqa: BLE001 - reported in the stream
        err = api_error(exc)
        yield sse(err.body())
    finally:
        release()
