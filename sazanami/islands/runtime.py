"""Islands in the engine: the per-request configuration and the per-batch runtime.

``Islands`` says what may come from outside the model (tools, a grammar) and the limits;
it rides on each ``RowRequest``. ``IslandBatch`` is what the engine loop talks to, at
three points of a step (the rows it reads and changes are :class:`~sazanami.sampling.rows.RunningRow`):

1. ``mask(logits)`` before the sampler — −inf outside each constrained row's grammar;
2. ``observe(b, row, token)`` after the draw — advances the row's grammar, ends the row
   when the grammar is complete;
3. ``inject(rows, logits)`` after every row took its token — finds complete tool calls,
   runs them (concurrently, each with its time limit), appends each result's tokens to
   its row and returns them so the engine can run them through the model for that row
   only. Other rows take their normal step in the same iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sazanami.errors import ParameterError, check_int, check_range
from sazanami.islands.builtins import Corpus, builtin_tools
from sazanami.islands.constraints import Constraint, ConstraintBatch
from sazanami.islands.tools import MAX_NAME_CHARS, Call, CallResult, CallSyntax, CallWatcher, ToolRegistry, run_calls
from sazanami.sampling.rows import RunningRow, Span

Prompt = str | list[dict[str, str]]

ISLAND_INPUTS: dict[str, str] = {
    "tools": "Tools the model may call, comma-separated: calc, search, load, copy. It writes NAME(args); "
    "the result is injected as ' => result'.",
    "corpus": "Documents for SEARCH/LOAD/COPY: a folder of .txt files or a JSONL file of {id, text}.",
    "regex": "The output must match this regular expression.",
    "json_schema": "The output must be JSON following this schema.",
    "grammar": "The output must follow this Lark grammar.",
}
"""What an islands spec (:meth:`Islands.from_dict`) builds ``tools`` and ``constraint`` from."""
ISLAND_LIMITS = ("max_calls", "timeout", "max_result_chars", "max_result_tokens", "describe_tools")
"""The :class:`Islands` fields an islands spec may set directly."""


@dataclass
class Islands:
    """Tools and/or a grammar for the rows of a request (the same object for all its rows).

    Identical calls (same tool, same argument text) are run once per ``Islands`` object:
    its ``cache`` lives as long as the request that holds it.
    """

    tools: ToolRegistry | None = None
    """Tools the model may call; None for none."""
    constraint: Constraint | None = None
    """Grammar the output must follow; None for free text."""
    syntax: CallSyntax = field(default_factory=CallSyntax)
    """How calls are written and results injected."""
    max_calls: int = 8
    """Calls per row; in [0, 1000]. One more call gets an injected error, later ones are ignored."""
    timeout: float = 5.0
    """Seconds a call may run (a tool's own ``timeout`` wins); in (0, 3600]."""
    max_result_chars: int = 1000
    """A result is cut to this many characters; in [1, 100000]."""
    max_result_tokens: int = 128
    """…and its injected text to this many tokens; in [4, 4096]."""
    describe_tools: bool = True
    """Put the tools' descriptions into the prompt (a system message, or before a raw prompt)."""
    prefix: tuple[int, ...] = ()
    """Tokens drawn earlier under ``constraint`` that the grammar consumes before the row starts
    (a search continuing a partial output); see :meth:`continuing`."""
    lead: str = ""
    """Earlier output that ends inside an open call: the row's call watcher reads it first."""
    calls_made: int = 0
    """Calls already made in earlier output; they count against ``max_calls``."""
    cache: dict[tuple[str, str], CallResult] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tools is not None and not isinstance(self.tools, ToolRegistry):
            raise ParameterError("tools", f"tools must be a ToolRegistry, got {type(self.tools).__name__}")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise ParameterError("constraint", f"constraint must be a Constraint, got {type(self.constraint).__name__}")
        for name, low, high in (
            ("max_calls", 0, 1000),
            ("max_result_chars", 1, 100_000),
            ("max_result_tokens", 4, 4096),
        ):
            check_int(name, getattr(self, name), low, high)
        check_range("timeout", self.timeout, 0, 3600, low_open=True)
        if self.tools is not None:
            start = self.syntax.start_regex()
            for name in self.tools.names:
                if not start.fullmatch(self.syntax.prefix + name + self.syntax.open):
                    raise ParameterError(
                        "tools", f"tool name {name!r} does not match name_pattern {self.syntax.name_pattern!r}"
                    )

    def continuing(
        self, tokenizer: Any, token_ids: list[int], spans: Sequence[dict[str, Any]] = ()
    ) -> tuple[Islands, list[int], list[dict[str, Any]]]:
        """Islands for a row that continues earlier output ``token_ids`` (prompt + these).

        Each branch of a search keeps its own tool history: the grammar first consumes the
        drawn tokens (injected ``spans`` are skipped, as they were when drawn), the earlier
        calls count against ``max_calls``, a call left open at the end (or a name that may
        still become one) is finished by the row (its watcher reads that text first), and a
        call that is complete but was
        never answered (the earlier row ran out of tokens right after it) is run now.

        Returns ``(islands, extra_ids, extra_spans)``: the row's islands (same cache) and
        the injected result of such a call, which goes after ``token_ids``.
        """
        injected = {i for sp in spans for i in range(sp["token_start"], sp["token_end"])}
        drawn = tuple(t for i, t in enumerate(token_ids) if i not in injected)
        lead, extra_ids, extra_spans = "", [], []
        if self.has_tools and self.max_calls > 0:
            assert self.tools is not None
            text = tokenizer.decode(token_ids)
            watcher = self.watcher_after(spans)
            call = watcher.find(text)
            if call is not None and len(spans) < self.max_calls:
                extra_ids, span = self.answer_at_end(call, tokenizer, token_ids, text, len(spans))
                extra_spans = [span]
            elif call is None:
                settled = watcher.region
                at = watcher.open_call(text)
                if at is None:  # no open call, but the tail may still become a tool's name (one char of context)
                    at = len(text) - len(self.syntax.prefix) - MAX_NAME_CHARS - 1
                lead = text[max(at, settled, 0) :]
        isl = dataclasses.replace(self, prefix=drawn, lead=lead, calls_made=len(spans) + len(extra_spans))
        return isl, extra_ids, extra_spans

    def watcher_after(self, spans: Sequence[dict[str, Any]]) -> CallWatcher:
        """A call watcher for whole output text whose injected ``spans`` are settled (never re-run)."""
        watcher = CallWatcher(self.syntax)
        watcher.settle(max((sp["end"] for sp in spans), default=0))
        return watcher

    def answer_at_end(
        self, call: Call, tokenizer: Any, token_ids: list[int], text: str, calls_made: int
    ) -> tuple[list[int], Span]:
        """:meth:`answer` for output ``token_ids`` (decoded: ``text``) that ends with ``call``; the span placed after it."""
        ids, span = self.answer(call, tokenizer, calls_made)
        where = {"start": len(text), "end": len(tokenizer.decode(token_ids + ids)),
                 "token_start": len(token_ids), "token_end": len(token_ids) + len(ids)}  # fmt: skip
        return ids, span | where  # type: ignore[return-value]

    def answer(self, call: Call, tokenizer: Any, calls_made: int = 0) -> tuple[list[int], Span]:
        """Run one call (or refuse it past ``max_calls``): the result's ids to inject and its span record.

        For a row of its own (a search continuation, a beam); engine batches run their rows'
        calls together in :meth:`IslandBatch.inject`.
        """
        assert self.tools is not None
        if calls_made >= self.max_calls:
            result = CallResult(f"error: call limit reached ({self.max_calls} per row)", True, 0.0)
        else:
            (result,) = run_calls(
                [(self.tools.get(call.name), call)], self.tools, self.timeout, self.max_result_chars,
                self.cache, self._lock,
            )  # fmt: skip
        return self.encode_result(tokenizer, result.text), self.span(call, result)

    def encode_result(self, tokenizer: Any, result: str) -> list[int]:
        """Token ids of `` => result\\n``, cut to ``max_result_tokens`` (the suffix kept)."""
        s = self.syntax
        ids = tokenizer.encode(s.format_result(result))
        if len(ids) > self.max_result_tokens:
            tail = tokenizer.encode("…" + s.result_suffix) if s.result_suffix else tokenizer.encode("…")
            ids = ids[: self.max_result_tokens - len(tail)] + tail
        return ids

    @staticmethod
    def span(call: Call, result: CallResult) -> Span:
        """What ``Completion.spans`` records of one call (positions are added by the caller)."""
        return {
            "kind": "tool", "name": call.name, "args": call.args, "result": result.text,
            "error": result.error, "cached": result.cached, "seconds": round(result.seconds, 4),
        }  # fmt: skip

    @property
    def has_tools(self) -> bool:
        return self.tools is not None and len(self.tools) > 0

    def preamble(self) -> str | None:
        """The tools' description for the prompt, or None."""
        if not self.has_tools or not self.describe_tools:
            return None
        assert self.tools is not None
        return self.tools.describe(self.syntax)

    def apply_to_prompt(self, prompt: Prompt, raw: bool = False) -> Prompt:
        """The prompt with the tools' description added (as a system message unless ``raw``)."""
        text = self.preamble()
        if text is None:
            return prompt
        if isinstance(prompt, list):
            msgs = [dict(m) for m in prompt]
            if msgs and msgs[0].get("role") == "system":
                msgs[0]["content"] = f"{msgs[0]['content']}\n\n{text}"
                return msgs
            return [{"role": "system", "content": text}, *msgs]
        if raw:
            return f"{text}\n\n{prompt}"
        return [{"role": "system", "content": text}, {"role": "user", "content": prompt}]

    @classmethod
    def from_dict(
        cls, spec: dict[str, Any], *, available: ToolRegistry | None = None, tokenizer: Any = None, where: str = ""
    ) -> Islands:
        """Islands from a JSON/YAML object: a flow's ``islands``, a request body, the CLI's options.

        Keys: :data:`ISLAND_INPUTS` (``tools``: names, a list or comma-separated; ``corpus``
        for search/load; one of ``regex`` / ``json_schema`` / ``grammar`` (Lark)), or
        ``constraint`` ({kind, source}, as :meth:`to_dict` writes it), and the limits
        :data:`ISLAND_LIMITS`. ``available`` picks the named tools from a registry (a
        server's) instead of the built-ins; ``tokenizer`` checks the grammar against the
        model's vocabulary up front; ``where`` prefixes the parameter named in errors
        (``"islands."`` in a flow).
        """
        if not isinstance(spec, dict):
            raise ParameterError(
                where.rstrip(".") or "islands", f"islands must be an object, got {type(spec).__name__}"
            )
        known = (*ISLAND_INPUTS, "constraint", *ISLAND_LIMITS)
        extra = sorted(set(spec) - set(known))
        if extra:
            raise ParameterError(f"{where}{extra[0]}", f"unknown islands field {extra[0]!r}; known: {', '.join(known)}")
        given = [k for k in ("regex", "json_schema", "grammar", "constraint") if spec.get(k) is not None]
        if len(given) > 1:
            raise ParameterError(
                f"{where}{given[1]}", f"give one of regex, json_schema, grammar, constraint; got {' and '.join(given)}"
            )
        constraint = None
        if given:
            key, value = given[0], spec[given[0]]
            if key == "constraint":
                constraint = Constraint.from_dict(value)
            else:
                constraint = {"regex": Constraint.regex, "json_schema": Constraint.json_schema,
                              "grammar": Constraint.lark}[key](value)  # fmt: skip
            error = constraint.error(tokenizer) if tokenizer is not None else None
            if error:
                raise ParameterError(f"{where}{key}", f"invalid {key.replace('_', '-')}: {error}")
        names = spec.get("tools") or []
        if isinstance(names, str):
            names = names.split(",")
        names = [n.strip() for n in names if n.strip()]
        if spec.get("corpus") and (available is not None or not names):
            raise ParameterError(f"{where}corpus", "corpus is for the search and load tools: add tools search,load")
        tools = None
        if names and available is not None:
            tools = ToolRegistry()
            have = {name.upper(): name for name in available.names}
            for i, name in enumerate(names):
                if name.upper() not in have:
                    raise ParameterError(
                        f"{where}tools[{i}]",
                        f"tool {name!r} is not run here (tools: {', '.join(have.values()) or 'none'}); "
                        "sazanami runs tools itself and injects their results, it does not return tool_calls",
                    )
                tools.add(available.get(have[name.upper()]))  # type: ignore[arg-type]
        elif names:
            tools = builtin_tools(names, Corpus.load(spec["corpus"]) if spec.get("corpus") else None)
        return cls(tools=tools, constraint=constraint, **{k: spec[k] for k in ISLAND_LIMITS if spec.get(k) is not None})

    @property
    def active(self) -> bool:
        """Whether there is anything to do: tools or a grammar."""
        return self.tools is not None or self.constraint is not None

    def to_dict(self) -> dict[str, Any]:
        """What a JSON report needs: tool names, the constraint and the limits."""
        return {
            "tools": self.tools.names if self.tools is not None else [],
            "constraint": self.constraint.to_dict() if self.constraint is not None else None,
            "max_calls": self.max_calls,
            "timeout": self.timeout,
            "max_result_chars": self.max_result_chars,
            "max_result_tokens": self.max_result_tokens,
        }


def drawn_text(text: str, spans: Sequence[dict[str, Any]]) -> str:
    """``text`` without its injected spans: what the model drew (what a grammar constrains)."""
    return marked_text(text, spans, lambda _: "")


def marked_text(text: str, spans: Sequence[dict[str, Any]], style: Any = lambda t: f"⟦{t.strip()}⟧ ") -> str:
    """``text`` with each injected span passed through ``style`` (default: ``⟦=> result⟧``)."""
    out, pos = [], 0
    for sp in sorted(spans, key=lambda sp: sp["start"]):
        out.append(text[pos : sp["start"]])
        out.append(style(text[sp["start"] : sp["end"]]))
        pos = sp["end"]
    out.append(text[pos:])
    return "".join(out)


def _matcher(islands: Islands | None, tokenizer: Any, vocab_size: int) -> Any:
    """A row's grammar matcher, advanced past its ``prefix``; None without a constraint."""
    if islands is None or islands.constraint is None:
        return None
    m = islands.constraint.matcher(tokenizer, vocab_size)
    if islands.prefix and not m.consume_tokens(list(islands.prefix)):
        raise ParameterError("prefix", f"the prefix does not follow the grammar: {m.get_error()}")
    return m


class IslandBatch:
    """Per-row island state of an engine batch, aligned with the batch rows (``select`` compacts)."""

    def __init__(self, islands: list[Islands | None], tokenizer: Any, vocab_size: int) -> None:
        self.islands = list(islands)
        self.tokenizer = tokenizer
        self.watchers = [CallWatcher(i.syntax, i.lead) if i is not None and i.has_tools else None for i in islands]
        self.calls = [i.calls_made if i is not None else 0 for i in islands]
        matchers = [_matcher(i, tokenizer, vocab_size) for i in islands]
        self.constraints = ConstraintBatch(matchers, vocab_size) if any(m is not None for m in matchers) else None
        self.has_tools = any(w is not None for w in self.watchers)

    @staticmethod
    def reserve(islands: Islands | None) -> int:
        """Cache positions to set aside up front for one row's injections (more are grown on demand)."""
        return islands.max_result_tokens + 4 if islands is not None and islands.has_tools and islands.max_calls else 0

    def select(self, keep: list[int]) -> None:
        self.islands = [self.islands[i] for i in keep]
        self.watchers = [self.watchers[i] for i in keep]
        self.calls = [self.calls[i] for i in keep]
        if self.constraints is not None:
            self.constraints.select(keep)

    def fork(self, parents: list[int]) -> None:
        """Row j becomes a copy of row ``parents[j]`` (an index may repeat: a beam's children),
        with its own call watcher and grammar state."""
        self.select(parents)
        self.watchers = [copy.copy(w) for w in self.watchers]
        if self.constraints is not None:
            old = self.constraints
            matchers = [m.deep_copy() if m is not None else None for m in old.matchers]
            self.constraints = ConstraintBatch(matchers, old.vocab_size)  # sized for the new row count
            self.constraints.repairs = old.repairs

    # 1. before the draw
    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.constraints is None else self.constraints.mask(logits)

    def guard(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return tokens if self.constraints is None else self.constraints.guard(tokens, masked)

    # 2. after the draw
    def observe(self, b: int, row: RunningRow, token: int) -> None:
        """Feed the row's grammar the token it took; a complete grammar ends the row."""
        if self.constraints is not None and row.finish_reason is None and self.constraints.consume(b, token):
            row.finish_reason = "stop"

    # 3. tool calls
    def due(self, rows: list[RunningRow], logits: torch.Tensor | None) -> list[tuple[int, RunningRow, Call]]:
        """The calls rows completed this step that get an answer, each row's text ended at its call.

        Counts each call against its row's ``max_calls`` (one call past it is answered with an
        error, later ones are ignored). ``logits`` (B, V) are this step's, for the replacement
        token's log-prob; None where the backend already ended the text (vLLM's processor).
        """
        if not self.has_tools:
            return []
        due: list[tuple[int, RunningRow, Call]] = []
        for b, row in enumerate(rows):
            w = self.watchers[b]
            if w is None or row.finish_reason is not None:
                continue
            call = w.find(row.text)
            if call is None:
                continue
            isl = self.islands[b]
            assert isl is not None
            self.calls[b] += 1
            if self.calls[b] > isl.max_calls + 1:  # over the cap and already told: ignore
                w.settle(call.end)
                continue
            if logits is not None:
                self._trim(b, row, call, logits)
            due.append((b, row, call))
        return due

    def inject(self, rows: list[RunningRow], logits: torch.Tensor | None) -> dict[int, tuple[int, list[int]]]:
        """Run the calls rows completed this step; ``{b: (token, injected ids)}`` for the engine.

        ``token`` is what row ``b`` feeds the model at its normal position (the drawn token,
        or its prefix up to the end of the call); the injected ids follow it. ``logits``: as
        for :meth:`due`.
        """
        found = self.due(rows, logits)
        if not found:
            return {}
        out: dict[int, tuple[int, list[int]]] = {}
        groups: dict[int, list[tuple[int, RunningRow, Call]]] = {}
        for b, row, call in found:
            groups.setdefault(id(self.islands[b]), []).append((b, row, call))
        for members in groups.values():
            isl = self.islands[members[0][0]]
            assert isl is not None and isl.tools is not None
            runnable = [(b, row, call) for b, row, call in members if self.calls[b] <= isl.max_calls]
            results = run_calls(
                [(isl.tools.get(call.name), call) for _, _, call in runnable],
                isl.tools, isl.timeout, isl.max_result_chars, isl.cache, isl._lock,
            )  # fmt: skip
            by_row = {b: r for (b, _, _), r in zip(runnable, results, strict=True)}
            for b, row, call in members:
                r = by_row.get(b) or CallResult(f"error: call limit reached ({isl.max_calls} per row)", True, 0.0)
                ids = isl.encode_result(self.tokenizer, r.text)
                row.inject(ids, isl.span(call, r))
                self.watchers[b].settle(len(row.text))  # type: ignore[union-attr]
                out[b] = (row.tokens[-len(ids) - 1], ids)
        return out

    def _trim(self, b: int, row: RunningRow, call: Call, logits: torch.Tensor) -> None:
        """End the row's text at the call: a drawn token like ``).`` becomes ``)`` when one token spells it.

        The replacement's log-probability is read from this step's logits (the model's,
        unprocessed), like every drawn token's; its grammar, if any, must accept it.
        """
        if call.end >= len(row.text) or not row.tokens:
            return
        before = self.tokenizer.decode(row.tokens[:-1])
        if not row.text.startswith(before) or call.end <= len(before):
            return
        piece = row.text[len(before) : call.end]
        ids = self.tokenizer.encode(piece)
        if len(ids) != 1 or ids[0] == row.tokens[-1]:
            return
        new = ids[0]
        if self.constraints is not None and not self.constraints.replace_last(b, row.tokens[-1], new):
            return
        row.replace_last(new, float(logits[b, new] - torch.logsumexp(logits[b], -1)))
