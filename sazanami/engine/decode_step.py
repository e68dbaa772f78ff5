"""The row step: one decode step of a batch of rows, written once for every driver.

A row is one output being decoded (a :class:`RowState`: its tokens, text, stop strings,
injected spans). For the rows of a batch, one step of :class:`RowStep` is

1. islands mask — −inf outside each row's grammar, before any noise (noise cannot unmask);
2. logits processing — the sampler's steps 0-4 (:meth:`SamplerBatch.process
   <sazanami.sampling.sampler.SamplerBatch.process>`: bias, penalties, DRY, noise, temperature,
   truncation);
3. draw — step 5 (:meth:`SamplerBatch.draw <sazanami.sampling.sampler.SamplerBatch.draw>`);
4. guard — a draw outside the grammar becomes the best allowed token;
5. log-prob — the token's log-prob under the model's raw logits (and the top alternatives);
6. push — the row takes the token: end-of-sequence, stop strings, ``max_tokens``, a full context;
7. observe — the row's grammar consumes the token (a complete grammar ends the row);
8. inject — a tool call the row completed runs; its result's tokens join the row.

The drivers call it so:

- the engine's loop (:mod:`sazanami.engine.loop`): ``step(logits, positions)`` runs 1-8 for the
  batch, then the engine runs the model on the tokens (and the injected results);
- stochastic beams (:mod:`sazanami.engine.beams`): :meth:`RowStep.process` (1-2), their own
  Gumbel-top-k instead of 3-4, :meth:`RowStep.fork` (a child copies its parent's row, sampler
  and island state), :meth:`RowStep.take` (5-7) and :meth:`RowStep.inject` (8);
- vLLM (:mod:`sazanami.backends.vllm`): vLLM owns the loop; its logits processor holds a one-row
  step and calls :meth:`RowStep.choose` (1-4) and :meth:`RowStep.take`; the engine side replays
  the tokens vLLM returns through :meth:`RowStep.take` (with vLLM's log-probs) and
  :meth:`RowStep.inject`.

Speculative verification (:meth:`RowStep.verify`). A row that drafted k tokens (prompt
lookup, a corpus index, a sibling row: :mod:`sazanami.speculative`) gets logits for k + 1
positions from one forward pass, (B, 1 + k, V). Verification walks the positions in order with the row's *own* sampler,
exactly as plain decoding would: at position j, steps 1-4 run on the rows still verifying
(the same seed, step counter and noise state: :meth:`SamplerBatch.only
<sazanami.sampling.sampler.SamplerBatch.only>` lets only them step; the others' state waits) and
:meth:`take` pushes the drawn token; while the draw equals draft j the row goes on to
position j + 1, at the first mismatch it keeps the drawn token and drops the rest of its
draft (the cache rolls back the rejected positions). A stop, end-of-sequence, complete
grammar or tool call inside the accepted run ends the row there, since :meth:`take` and
:meth:`inject` see each token as in plain decoding. The accepted text is therefore exactly
what plain decoding draws; only the number of forward passes changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from sazanami.islands.runtime import IslandBatch
from sazanami.sampling.rows import Completion, RowRequest, Span, find_stop
from sazanami.sampling.sampler import Processed, SamplerBatch

__all__ = ["RowState", "RowStep", "Step"]


class RowState:
    """Mutable state of a running row (a :class:`~sazanami.sampling.rows.RunningRow`).

    Its text is decoded incrementally: a window of trailing tokens is decoded and what
    follows its already-decoded head is appended, so a step costs the window, not the
    whole output. Text is committed (the window moves on) once it does not end in a
    partial UTF-8 character; tokenizers whose decode is not concatenative see the same
    window head in both decodes.
    """

    def __init__(self, req: RowRequest, tokenizer: Any) -> None:
        self.req = req
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.trace: list[dict[str, Any]] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self.stop = req.params.stop
        self.hold = max((len(s) for s in self.stop), default=0)
        self.lead = req.lead[-(self.hold - 1) :] if self.hold > 1 else ""  # where a stop may begin
        self.drawn = 0  # tokens the model drew (injected ones do not count against max_tokens)
        self.spans: list[Span] = []
        self.cached = 0  # prompt tokens taken from the prefix cache
        self.top: dict[int, list[tuple[int, float]]] = {}  # token index → top alternatives
        self.drafted = 0  # tokens drafted for it (speculative decoding)
        self.accepted = 0  # drafted tokens its sampler drew (kept)
        # incremental decoding: text of tokens[:_read] is _done; _head decodes tokens[_window:_read]
        self._window = self._read = 0
        self._done = self._head = ""

    def fork(self) -> RowState:
        """A copy that goes on on its own (a beam's child)."""
        new = copy.copy(self)
        new.tokens, new.logprobs, new.trace = list(self.tokens), list(self.logprobs), list(self.trace)
        new.spans, new.top = list(self.spans), dict(self.top)
        return new

    def _decode(self) -> None:
        """Bring ``text`` up to date with ``tokens`` (see the class docstring)."""
        tail = self.tokenizer.decode(self.tokens[self._window :])
        if not tail.startswith(self._head):  # not concatenative here: decode it all once
            self._resync()
            return
        self.text = self._done + tail[len(self._head) :]
        if not tail.endswith("\ufffd"):
            self._done, self._window, self._read = self.text, self._read, len(self.tokens)
            self._head = self.tokenizer.decode(self.tokens[self._window : self._read])

    def _resync(self) -> None:
        self.text = self._done = self.tokenizer.decode(self.tokens)
        self._read = len(self.tokens)
        self._window = max(0, self._read - 4)
        self._head = self.tokenizer.decode(self.tokens[self._window : self._read])

    def push(self, token: int, logprob: float, eos: bool) -> None:
        """Take a drawn token: end-of-sequence, a stop string or ``max_tokens`` may end the row."""
        p = self.req.params
        if eos and not p.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.drawn += 1
        self._decode()
        if self.stop:
            n = len(self.lead)
            start = max(0, self.emitted - self.hold) + n - min(n, self.hold - 1)  # a stop may begin in the lead
            cut = find_stop(self.lead + self.text, self.stop, after=n, start=start)
            if cut is not None:
                self.text = self.text[: max(0, cut - n)]
                self.finish_reason = "stop"
                return
        if self.drawn >= p.max_tokens:
            self.finish_reason = "length"

    def inject(self, ids: list[int], span: Span) -> None:
        """Append tokens that came from outside the model (a tool's result) and mark them."""
        start, token_start = len(self.text), len(self.tokens)
        self.tokens.extend(ids)
        self.logprobs.extend([0.0] * len(ids))
        self._decode()
        where = {"start": start, "end": len(self.text), "token_start": token_start, "token_end": len(self.tokens)}
        self.spans.append(span | where)  # type: ignore[typeddict-item]

    def replace_last(self, token: int, logprob: float) -> None:
        """Swap the last drawn token (islands end a tool call's text at its closing bracket)."""
        self.tokens[-1] = token
        self.logprobs[-1] = logprob
        self._resync()

    def delta(self) -> str:
        """New text safe to emit: holds back a partial UTF-8 char and a possible stop-string prefix."""
        end = len(self.text)
        if self.finish_reason is None:
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
            end = max(self.emitted, end - self.hold)
        out = self.text[self.emitted : end]
        self.emitted = end
        return out

    def completion(self) -> Completion:
        r = self.req
        return Completion(
            text=self.text,
            token_ids=self.tokens,
            logprobs=self.logprobs,
            seed=r.seed,
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(r.prompt_ids),
            index=r.index,
            prompt_index=r.prompt_index,
            trace=self.trace,
            tag=r.tag,
            spans=[s for s in self.spans if s["start"] < len(self.text)],
            cached_tokens=self.cached,
            top_logprobs=[self.top.get(i, []) for i in range(len(self.tokens))] if r.params.top_logprobs else [],
            drafted_tokens=self.drafted,
            accepted_tokens=self.accepted,
        )


@dataclass
class Step:
    """What one :class:`RowStep` call produced for the batch."""

    tokens: torch.Tensor
    """(B,) what each row feeds the model next: the drawn token, or for a row whose tool call
    was answered the token that ends its call text (its result's ids follow, in ``injected``)."""
    drawn: list[int]
    """The token each row drew this step (before a call's text was trimmed)."""
    injected: dict[int, tuple[int, list[int]]] = field(default_factory=dict)
    """Batch row → (its token at the normal position, the result ids injected after it)."""
    accepted: list[int] = field(default_factory=list)
    """Per row, the drafted tokens :meth:`RowStep.verify` kept (empty for a plain step)."""
    taken: list[list[int]] = field(default_factory=list)
    """Per row, every token it drew this step, in order (:meth:`RowStep.verify`; empty for a
    plain step, where ``drawn`` is the one)."""


class RowStep:
    """The per-row decode step of a batch (see the module docstring); ``rows[i]`` is batch row i.

    Holds each row's :class:`RowState`, its sampler state (:class:`SamplerBatch`) and its
    island state (:class:`IslandBatch`, None when no row has islands); :meth:`select` keeps
    rows that go on, :meth:`fork` makes rows copies of others (beams).
    """

    def __init__(
        self,
        requests: list[RowRequest],
        tokenizer: Any,
        vocab_size: int,
        hidden_size: int = 0,
        max_positions: int = 2**31,
        draws: bool = True,
    ) -> None:
        """``draws`` False: the rows' tokens are drawn elsewhere and only taken here (vLLM's engine
        side replays what its processor drew), so no sampler state is built."""
        self.rows = [RowState(r, tokenizer) for r in requests]
        self.tokenizer = tokenizer
        """None: rows keep no text (a driver that only calls :meth:`choose`)."""
        self.eos = frozenset(tokenizer.eos_token_ids) if tokenizer is not None else frozenset()
        self.max_positions = max_positions
        """A row whose next token would fall past the model's context ends with ``length``."""
        self.sampler = SamplerBatch(requests, vocab_size, hidden_size, tokenizer) if draws else None
        self.islands: IslandBatch | None = None
        if any(r.islands is not None for r in requests):
            self.islands = IslandBatch([r.islands for r in requests], tokenizer, vocab_size)

    def __len__(self) -> int:
        return len(self.rows)

    # -- the whole step (the engine's loop) ---------------------------------------------------
    def __call__(self, logits: torch.Tensor, positions: list[int]) -> Step:
        """Steps 1-8 on the model's logits (B, V); ``positions[i]``: where row i's new token goes."""
        trace = any(r.req.params.trace for r in self.rows)
        tokens, info = self.choose(logits, trace)  # (B,)
        drawn = tokens.tolist()
        self.take(drawn, *self.logprobs(logits, tokens), positions, info)
        injected = self.inject(logits, positions)
        for i, (first, _) in injected.items():
            tokens[i] = first
        return Step(tokens, drawn, injected)

    def verify(self, logits: torch.Tensor, drafts: list[list[int]], positions: list[int]) -> Step:
        """Steps 1-8 along each row's draft (see the module docstring): ``logits`` (B, 1 + K, V)
        from feeding each row its token and then its draft ``drafts[i]`` (K ≥ every draft's
        length; positions past a row's draft are not read); ``positions[i]``: where row i's
        token drawn from ``logits[i, 0]`` goes.

        Position 0 is the plain step of every row. At position j ≥ 1 only the rows whose draws
        equalled their draft's first j tokens draw (the others' samplers wait, see
        :meth:`SamplerBatch.only <sazanami.sampling.sampler.SamplerBatch.only>`), so every row takes
        exactly the tokens plain decoding would. A row stops at its first draw that differs
        from its draft (that draw is its next token), at its draft's end (the last draw is a
        token no one drafted), when it finishes, or when a tool call of it is answered.
        ``Step.accepted[i]``: its draft tokens that stayed (their keys/values are valid).
        """
        s = self(logits[:, 0], positions)  # position 0: every row, as in plain decoding
        tokens, drawn, injected = s.tokens.clone(), list(s.drawn), dict(s.injected)
        accepted = [0] * len(self.rows)
        taken = [[t] for t in drawn]
        for i, d in enumerate(drafts):
            self.rows[i].drafted += len(d)

        def goes_on(i: int, j: int) -> bool:  # row i drew draft token j - 1: it draws at position j
            return j <= len(drafts[i]) and drawn[i] == drafts[i][j - 1] and self.rows[i].finish_reason is None and (
                i not in injected
            )  # fmt: skip

        live = [i for i in range(len(self.rows)) if goes_on(i, 1)]
        trace = any(r.req.params.trace for r in self.rows)
        j = 1
        while live:
            mask = torch.zeros(len(self.rows), dtype=torch.bool)
            mask[live] = True
            at = logits[:, j]  # (B, V): rows outside live are not read
            assert self.sampler is not None
            with self.sampler.only(mask):
                toks, info = self.choose(at, trace)
            new = toks.tolist()
            where = [p + j for p in positions]
            idx = torch.tensor(live)
            lp_live, top_live = self.logprobs(at[idx], toks[idx])  # the live rows' alone
            lp, top = [0.0] * len(self.rows), [[] for _ in self.rows]
            for k, i in enumerate(live):
                lp[i], top[i] = lp_live[k], top_live[k]
            self.take(new, lp, top, where, info, rows=live)
            for i, v in self.inject(at, where, rows=live).items():
                injected[i] = v
            for i in live:
                accepted[i] += 1
                self.rows[i].accepted += 1
                tokens[i] = injected[i][0] if i in injected else new[i]
                drawn[i] = new[i]
                taken[i].append(new[i])
            j += 1
            live = [i for i in live if goes_on(i, j)]
        return Step(tokens, drawn, injected, accepted, taken)

    # -- its parts ------------------------------------------------------------------------------
    def process(self, logits: torch.Tensor) -> tuple[torch.Tensor, Processed]:
        """1-2: the islands mask, then the sampler's processing; (masked logits, processed)."""
        if self.sampler is None:
            raise RuntimeError("this row step takes tokens drawn elsewhere (draws=False)")
        masked = self.islands.mask(logits) if self.islands is not None else logits
        return masked, self.sampler.process(masked, self._generated())

    def choose(self, logits: torch.Tensor, trace: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """1-4: one token per row (B,) and, with ``trace``, the step's per-row trace columns."""
        masked, processed = self.process(logits)
        assert self.sampler is not None
        tokens = self.sampler.draw(processed)
        if self.islands is not None:
            tokens = self.islands.guard(tokens, masked)
        self.record(tokens, processed)
        return tokens, self.sampler.trace_columns(masked, processed, tokens) if trace else {}

    def record(self, tokens: torch.Tensor, processed: Processed | None = None) -> None:
        """After 3-4: the sampler notes what the rows took (penalty counts, DRY's context,
        mirostat's μ, which needs ``processed``); a driver with its own draw calls it itself."""
        assert self.sampler is not None
        self.sampler.record(tokens, processed, self._generated())

    def logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> tuple[list[float], list[list[tuple[int, float]]]]:
        """5: each token's log-prob under the raw logits (B, V), and the most likely alternatives
        (as many as the rows' largest ``top_logprobs``; empty lists when no row asks)."""
        lse = torch.logsumexp(logits, -1, keepdim=True)  # (B, 1): one logsumexp per row
        lp = (logits.gather(-1, tokens[:, None]) - lse).squeeze(-1)
        k = max((r.req.params.top_logprobs for r in self.rows), default=0)
        if not k:
            return lp.tolist(), [[] for _ in self.rows]
        top = logits.topk(k, -1)  # alternatives under the raw distribution
        values, ids = (top.values - lse).tolist(), top.indices.tolist()
        return lp.tolist(), [list(zip(i, v)) for i, v in zip(ids, values)]

    def take(
        self,
        tokens: list[int],
        logprobs: list[float],
        top: list[list[tuple[int, float]]] | None = None,
        positions: list[int] | None = None,
        info: dict[str, Any] | None = None,
        rows: list[int] | None = None,
    ) -> None:
        """6-7: each row takes its token (push, top alternatives, trace), its grammar observes it,
        and a row at ``positions[i]`` ≥ the context ends (None: the driver checks the context).
        ``rows``: only these batch rows take theirs (speculative verification); None: all."""
        for i in range(len(self.rows)) if rows is None else rows:
            row = self.rows[i]
            t = tokens[i]
            before = len(row.tokens)
            row.push(t, logprobs[i], t in self.eos)
            if top and (k := row.req.params.top_logprobs) and len(row.tokens) > before:
                row.top[before] = top[i][:k]
            if self.islands is not None:
                self.islands.observe(i, row, t)
            if row.finish_reason is None and positions is not None and positions[i] >= self.max_positions:
                row.finish_reason = "length"  # the model's context is full: nothing can follow
            if info and row.req.params.trace:
                row.trace.append({k: v[i] for k, v in info.items()} | {"token": t, "logprob": logprobs[i]})

    def inject(
        self, logits: torch.Tensor | None, positions: list[int] | None, rows: list[int] | None = None
    ) -> dict[int, tuple[int, list[int]]]:
        """8: run the tool calls rows completed; ``{row: (token, injected ids)}`` for the driver to
        run through the model. A result that would not fit the context ends its row instead.
        ``logits``: this step's (B, V), for a trimmed call token's log-prob (None: vLLM's).
        ``rows``: only these batch rows may have completed a call (the others took no token)."""
        if self.islands is None:
            return {}
        injected = self.islands.inject(self.rows, logits)  # type: ignore[arg-type]
        if rows is not None:
            stray = set(injected) - set(rows)
            assert not stray, f"rows {sorted(stray)} completed a call without taking a token"
        for i, (_, ids) in list(injected.items()):
            if positions is not None and positions[i] + len(ids) + 1 >= self.max_positions:
                self.rows[i].finish_reason = "length"
                del injected[i]
        return injected

    # -- the batch --------------------------------------------------------------------------
    def running(self) -> list[int]:
        """Batch rows that have not finished."""
        return [i for i, r in enumerate(self.rows) if r.finish_reason is None]

    def select(self, keep: list[int]) -> None:
        """Keep batch rows ``keep`` (in order): the others finished."""
        self.rows = [self.rows[i] for i in keep]
        if self.sampler is not None:
            self.sampler.select(torch.tensor(keep, dtype=torch.long))
        if self.islands is not None:
            self.islands.select(keep)

    def fork(self, parents: list[int]) -> None:
        """Batch row j becomes a copy of row ``parents[j]`` (an index may repeat: a beam's
        children), with its own text, sampler state and grammar/call state."""
        self.rows = [self.rows[p].fork() for p in parents]
        if self.sampler is not None:
            self.sampler.select(torch.tensor(parents, dtype=torch.long))
        if self.islands is not None:
            self.islands.fork(parents)

    def _generated(self) -> list[list[int]] | None:
        """Each row's output (drawn and injected), DRY's context; None when no row uses DRY or
        the rows keep no text (then the sampler keeps DRY's context from its own draws)."""
        if self.sampler is None or self.sampler.history is None or self.tokenizer is None:
            return None
        return [r.tokens for r in self.rows]
