"""Request planning: a parsed request becomes a :class:`Plan` — validated against the server's
limits, its rows built, ready to run — or an error naming the field to change.

The checks, in order: the model's name (404); the sampling parameters and prompts
(``CompletionRequest.sampling_params``, ``prompts``; 400 naming the field); function tools
(chat only) and islands; a search's options; each prompt's tokens against ``max_prompt_tokens``
and prompt + ``max_tokens`` against the model's context (413, ``context_length_exceeded``);
the rows' memory against the server's budget (413 naming the prompt, ``max_tokens``, ``n`` or
``beams``; :mod:`sazanami.server.memory`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.sampling.beam_params import BeamParams
from sazanami.sampling.rows import RowRequest
from sazanami.seeds import seed_or_fresh
from sazanami.server.errors import ApiError
from sazanami.server.memory import check_fits, footprint
from sazanami.server.monitoring import Clock
from sazanami.server.responses import Choice, Shape
from sazanami.server.schemas import ChatCompletionRequest, CompletionRequest, Prompt
from sazanami.server.state import Server

__all__ = ["Plan"]


class Plan:
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
        self.params = params = server.speculative_params(params)
        self.prompts: list[Prompt] = req.prompts(limits)
        self.raw = req.raw
        """No chat template applied by the engine (completions, or a chat already rendered here)."""
        self.calling = req.function_calling(limits)
        """OpenAI function calling (:class:`~sazanami.server.tool_calls.FunctionCalling`), or None."""
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
        template with tools, or the fallback format; :func:`~sazanami.server.tool_calls.render_prompt`);
        the server tools' description, if any, goes into it first."""
        from sazanami.server.tool_calls import has_tool_messages, render_prompt

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
        from sazanami.server.tool_calls import message_of

        for c in choices:
            message, c.finish_reason = message_of(self.calling, c.text, c.finish_reason or "stop")
            c.text, c.tool_calls = message["content"] or "", message.get("tool_calls")

    def call_stream(self) -> Any:
        """A streaming parser for one choice (:class:`~sazanami.server.tool_calls.CallStream`), or None."""
        from sazanami.server.tool_calls import CallStream

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
