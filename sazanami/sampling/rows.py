"""Rows: what the engine is asked to generate, and what it hands back.

One row is one prompt decoded under one :class:`~sazanami.sampling.params.SamplingParams` with one
seed. :class:`RowRequest` is the only row type: ``Engine.rows_for`` builds them for plain
requests, the search builds them directly (its node bookkeeping rides in ``tag``), and the
engine, the sampler and the server's batcher consume them. :class:`Completion` is a finished
row. :class:`RunningRow` names what islands (tools, grammars) may read and change on a row
while it runs. :data:`Span` marks text that islands injected; :func:`injected_tokens` counts
it and :func:`find_stop` finds stop strings, for the engine and the search alike.

This module sits low in the import graph (it needs only the parameters), so every layer
above it can share these types without importing the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from sazanami.noise.fluctuation import NoiseMix
from sazanami.sampling.params import SamplingParams

__all__ = ["Completion", "Output", "RowRequest", "RunningRow", "Span", "find_stop", "injected_tokens"]


class Span(TypedDict, total=False):
    """Text that islands injected into an output (a tool's result), not drawn by the model.

    ``start``/``end`` are characters of the output's text, ``token_start``/``token_end``
    tokens of its ``token_ids``; a tool span adds ``name``, ``args``, ``result``, ``error``,
    ``cached`` and ``seconds``. A plain dict, so it is its own JSON form.
    """

    kind: str
    start: int
    end: int
    token_start: int
    token_end: int
    name: str
    args: str
    result: str
    error: bool
    cached: bool
    seconds: float


def injected_tokens(spans: Sequence[Span] | Sequence[dict[str, Any]]) -> int:
    """Tokens the spans cover: given, not drawn (they do not count against ``max_tokens``)."""
    return sum(s["token_end"] - s["token_start"] for s in spans)


def find_stop(text: str, stops: Sequence[str], after: int = 0, start: int = 0) -> int | None:
    """Where ``text`` ends at its first stop string, or None.

    A stop must end after character ``after`` (text before it is a lead the row continues:
    a stop wholly inside it is not the row's) and is looked for from ``start`` on.
    """
    ends = [i for s in stops if (i := text.find(s, max(0, start, after - len(s) + 1))) >= 0]
    return min(ends) if ends else None


class Output:
    """What a model output with injected spans offers (:class:`Completion`, a search tree's node):
    it needs ``token_ids``, ``logprobs`` and ``spans``."""

    token_ids: list[int]
    logprobs: list[float]
    spans: list[Span]

    @property
    def injected(self) -> int:
        """Tokens of ``token_ids`` that islands injected (given, not drawn)."""
        return injected_tokens(self.spans)

    @property
    def drawn(self) -> int:
        """Tokens of ``token_ids`` the model drew (what ``max_tokens`` limits)."""
        return len(self.token_ids) - self.injected

    @property
    def mean_logprob(self) -> float:
        """Mean log-prob of the drawn tokens (injected ones, at 0, are left out)."""
        return sum(self.logprobs) / self.drawn if self.drawn > 0 else 0.0


@dataclass
class RowRequest:
    """One row to generate: prompt token ids, its parameters and its own seed."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    prompt_index: int = 0
    index: int = 0
    tag: Any = None
    """Free slot for callers (search keeps the node-to-be here: parent, kind, round, meta)."""
    noise: NoiseMix | None = None
    """Optional mixture of seeded noise streams [(seed, weight)], Σw² = 1, used by the
    fluctuation instead of ``seed`` (zero-order noise search mixes a pivot with fresh noise)."""
    islands: Any = None
    """Optional :class:`sazanami.islands.Islands`: tools the row may call, a grammar it must follow."""
    lead: str = ""
    """Output this row continues (a search continuation's kept prefix, already in ``prompt_ids``):
    a stop string may begin in it and end in the row's own text."""
    prefix_ids: list[int] = field(default_factory=list)
    """The output tokens of ``lead`` (the end of ``prompt_ids``); its node inherits them."""
    prefix_logprobs: list[float] = field(default_factory=list)
    prefix_spans: list[Span] = field(default_factory=list)
    """Injected spans of the inherited prefix (token offsets into ``prefix_ids``)."""
    reuse: bool = True
    """May start from keys/values in the engine's prefix cache. False computes the whole prompt
    (a batch-invariant request: reused keys/values were computed in other shapes, so their
    float round-off would depend on what ran before)."""


@dataclass
class Completion(Output):
    """One finished row (or one of a stochastic beam search's samples)."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each generated token under the model (before any processing)."""
    seed: int
    finish_reason: str
    """``stop`` (end-of-sequence, a stop string or a complete grammar) or ``length``."""
    prompt_tokens: int
    index: int = 0
    prompt_index: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    tag: Any = None
    spans: list[Span] = field(default_factory=list)
    """Injected islands (see :data:`Span`). Injected tokens are in ``token_ids`` with log-prob 0
    (given, not drawn)."""
    cached_tokens: int = 0
    """Prompt tokens whose keys/values came from the engine's prefix cache (not recomputed)."""
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """Per token of ``token_ids``, when ``params.top_logprobs`` > 0: the most likely (id, log-prob)
    pairs under the model's raw distribution (log_softmax of its logits, before any processing),
    most likely first; ``[]`` for injected tokens."""
    drafted_tokens: int = 0
    """Tokens drafted for this row by speculative decoding (``params.speculative``); 0 without it."""
    accepted_tokens: int = 0
    """Drafted tokens the row's sampler drew, so kept: each one saved a forward pass."""
    usage: dict[str, int] | None = None
    """Tokens the engine ran for this result when they are not its own tokens and prompt: a
    beam search's ``{"decoded", "prefilled"}``, shared by its samples (each carries the total)."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "prompt_index": self.prompt_index,
            "text": self.text,
            "seed": self.seed,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_ids": self.token_ids,
            "logprobs": [round(x, 5) for x in self.logprobs],
        }
        if self.trace:
            out["trace"] = self.trace
        if self.spans:
            out["spans"] = self.spans
        if self.top_logprobs:
            out["top_logprobs"] = [[[t, round(lp, 5)] for t, lp in top] for top in self.top_logprobs]
        if self.drafted_tokens:
            out["drafted_tokens"], out["accepted_tokens"] = self.drafted_tokens, self.accepted_tokens
        return out


class RunningRow(Protocol):
    """What islands read and change on a row while the engine runs it."""

    text: str
    """The row's output so far, decoded."""
    tokens: list[int]
    """Its output token ids (drawn and injected)."""
    finish_reason: str | None
    """None while it runs; islands set ``stop`` when its grammar is complete."""

    def inject(self, ids: list[int], span: Span) -> None:
        """Append tokens that came from outside the model and mark them with ``span``."""
        ...

    def replace_last(self, token: int, logprob: float) -> None:
        """Swap the last drawn token (a call's text ends at its closing bracket)."""
        ...
