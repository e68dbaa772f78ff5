"""The batched autoregressive loop.

Rows are (prompt, seed, parameters). Rows that share a prompt share its prefill:
the prompt runs through the model once and its keys/values are copied into each
row's slot of a pre-allocated cache. Each row writes its own positions, so
prompts of different lengths need no padding and a row's tokens do not depend
on its neighbours (up to float round-off of batched matmuls). Finished rows are
dropped from the batch so they stop costing compute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from sazanami.errors import ParameterError
from sazanami.params import SamplingParams
from sazanami.sampling import RowSpec, SamplerBatch
from sazanami.seeds import derive_seed, fresh_seed

Prompt = str | list[dict[str, str]]


@dataclass
class RowRequest:
    """One row to generate: prompt token ids, its parameters and its own seed."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    prompt_index: int = 0
    index: int = 0
    tag: Any = None
    """Free slot for callers (search keeps its node here)."""
    noise: list[tuple[int, float]] | None = None
    """Optional mixture of seeded noise streams [(seed, weight)], Σw² = 1, used by the
    fluctuation instead of ``seed`` (zero-order noise search mixes a pivot with fresh noise)."""
    islands: Any = None
    """Optional :class:`sazanami.islands.Islands`: tools the row may call, a grammar it must follow."""
    lead: str = ""
    """Output this row continues (a search continuation's kept prefix, already in ``prompt_ids``):
    a stop string may begin in it and end in the row's own text."""


@dataclass
class Completion:
    """One finished variant."""

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
    spans: list[dict[str, Any]] = field(default_factory=list)
    """Injected islands: ``{"kind": "tool", "start", "end"`` (characters of ``text``),
    ``"token_start", "token_end"`` (of ``token_ids``), ``"name", "args", "result", "error", …}``.
    Injected tokens are in ``token_ids`` with log-prob 0 (given, not drawn)."""
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """Per token of ``token_ids``, when ``params.top_logprobs`` > 0: the most likely (id, log-prob)
    pairs under the model's raw distribution (log_softmax of its logits, before any processing),
    most likely first; ``[]`` for injected tokens."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def injected(self) -> int:
        """Tokens of ``token_ids`` that islands injected (given, not drawn)."""
        return sum(s["token_end"] - s["token_start"] for s in self.spans)

    @property
    def mean_logprob(self) -> float:
        """Mean log-prob of the drawn tokens (injected tokens, at 0, are left out)."""
        drawn = len(self.logprobs) - self.injected
        return sum(self.logprobs) / drawn if drawn > 0 else 0.0

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
        return out


@dataclass
class Delta:
    """What one row produced in one step (streaming)."""

    row: int
    text: str
    token_id: int | None
    finished: bool = False
    finish_reason: str | None = None


class _Row:
    """Mutable state of a running row."""

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
        self.injected = 0  # tokens injected by islands (they do not count against max_tokens)
        self.spans: list[dict[str, Any]] = []
        self.top: dict[int, list[tuple[int, float]]] = {}  # token index → top alternatives

    def push(self, token: int, logprob: float, eos: bool) -> None:
        p = self.req.params
        if eos and not p.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.text = self.tokenizer.decode(self.tokens)
        if self.stop:
            cut = self._stop_at(max(0, self.emitted - self.hold))
            if cut is not None:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                return
        if len(self.tokens) - self.injected >= p.max_tokens:
            self.finish_reason = "length"

    def _stop_at(self, start: int) -> int | None:
        """Where the text ends at the first stop string found from ``start`` (0 if it began in the lead)."""
        full, n = self.lead + self.text, len(self.lead)
        ends = []
        for s in self.stop:
            i = full.find(s, start + n - min(n, len(s) - 1))
            while i >= 0 and i + len(s) <= n:  # wholly inside the lead: not this row's
                i = full.find(s, i + 1)
            if i >= 0:
                ends.append(max(0, i - n))
        return min(ends) if ends else None

    def inject(self, ids: list[int], span: dict[str, Any]) -> None:
        """Append tokens that came from outside the model (a tool's result) and mark them."""
        start, token_start = len(self.text), len(self.tokens)
        self.tokens.extend(ids)
        self.logprobs.extend([0.0] * len(ids))
        self.injected += len(ids)
        self.text = self.tokenizer.decode(self.tokens)
        where = {"start": start, "end": len(self.text), "token_start": token_start, "token_end": len(self.tokens)}
        self.spans.append(span | where)

    def replace_last(self, token: int, logprob: float) -> None:
        """Swap the last drawn token (islands end a tool call's text at its closing bracket)."""
        self.tokens[-1] = token
        self.logprobs[-1] = logprob
        self.text = self.tokenizer.decode(self.tokens)

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
            top_logprobs=[self.top.get(i, []) for i in range(len(self.tokens))] if r.params.top_logprobs else [],
        )


class Engine:
    """Batched generation over a :class:`~sazanami.backends.Backend`."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.eos = torch.tensor(sorted(self.tokenizer.eos_token_ids), dtype=torch.long)
        self.max_positions: int = getattr(backend, "max_positions", None) or 2**31
        """The model's context: a row that fills it ends with ``finish_reason="length"``."""

    # -- prompts ---------------------------------------------------------------------------
    def encode(self, prompt: Prompt, raw: bool = False) -> list[int]:
        """Token ids of a prompt; the chat template is applied unless ``raw``."""
        if isinstance(prompt, list):
            text = self.tokenizer.apply_chat_template(prompt)
        elif raw:
            text = prompt
        else:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ParameterError("prompt", "prompt must not be empty")
        return ids

    def rows_for(
        self, prompts: list[Prompt], params: SamplingParams, raw: bool = False, islands: Any = None
    ) -> list[RowRequest]:
        """n rows per prompt with seeds derived from the request seed.

        ``islands`` (:class:`sazanami.islands.Islands`) goes to every row; its tools'
        descriptions are added to each prompt unless it says otherwise.
        """
        if not prompts:
            raise ParameterError("prompt", "at least one prompt is needed")
        seed = params.seed if params.seed is not None else fresh_seed()
        rows = []
        for p_index, prompt in enumerate(prompts):
            ids = self.encode(islands.apply_to_prompt(prompt, raw) if islands is not None else prompt, raw)
            for i in range(params.n):
                rows.append(RowRequest(ids, params, derive_seed(seed, p_index, i), p_index, i, islands=islands))
        return rows

    # -- public entry points ---------------------------------------------------------------
    def generate(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | None = None,
        raw: bool = False,
        islands: Any = None,
    ) -> list[Completion]:
        """Generate ``params.n`` variants of each prompt; completions in (prompt, variant) order.

        ``islands``: tools the model may call and/or a grammar (:class:`sazanami.islands.Islands`).
        """
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        fl = params.fluctuation
        if fl is not None and fl.beams is not None:
            return self.beam_search(prompts, params, raw, islands)  # type: ignore[arg-type]
        return self.run(self.rows_for(prompts, params, raw, islands))  # type: ignore[arg-type]

    def beam_search(
        self, prompts: list[Prompt], params: SamplingParams, raw: bool = False, islands: Any = None
    ) -> list[Completion]:
        """Stochastic beam search (the fluctuation's ``beams`` entry): ``width`` samples per prompt."""
        from sazanami.beams import beams_from_entry, stochastic_beam_search

        width, beta = beams_from_entry(params.fluctuation.beams)
        out = []
        for i, prompt in enumerate(prompts):
            seed = derive_seed(params.seed, i) if params.seed is not None else None
            for c in stochastic_beam_search(self, prompt, params.replace(seed=seed), width, beta, raw, islands):
                c.prompt_index = i
                out.append(c)
        return out

    def stream(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | None = None,
        raw: bool = False,
        islands: Any = None,
    ) -> Iterator[list[Delta]]:
        """Yield, per step, the text each row added (row index = position in (prompt, variant) order)."""
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        out: list[Completion] = []
        yield from self.steps(self.rows_for(prompts, params, raw, islands), out)  # type: ignore[arg-type]

    def run(self, rows: list[RowRequest]) -> list[Completion]:
        """Generate every row; completions in the order of ``rows``."""
        out: list[Completion] = []
        for _ in self.steps(rows, out):
            pass
        return out

    # -- the loop --------------------------------------------------------------------------
    @torch.inference_mode()
    def steps(self, requests: list[RowRequest], out: list[Completion]) -> Iterator[list[Delta]]:
        """The generation loop; yields per-step deltas and fills ``out`` in row order."""
        backend = self.backend
        B = len(requests)
        for r in requests:
            if len(r.prompt_ids) >= self.max_positions:
                raise ParameterError(
                    "prompt", f"prompt has {len(r.prompt_ids)} tokens; the model's context is {self.max_positions}"
                )
        rows = [_Row(r, self.tokenizer) for r in requests]
        islands = None
        if any(r.islands is not None for r in requests):
            from sazanami.islands.runtime import IslandBatch

            islands = IslandBatch([r.islands for r in requests], self.tokenizer, backend.vocab_size)
        reserve = islands.reserve if islands is not None else (lambda _: 0)
        capacity = max(len(r.prompt_ids) + r.params.max_tokens + reserve(r.islands) for r in requests) + 1
        cache = backend.new_cache(B, capacity)
        sampler = SamplerBatch(
            [RowSpec(r.params, r.seed, r.prompt_ids, r.noise) for r in requests],
            backend.vocab_size,
            backend.hidden_size,
            self.tokenizer,
        )
        lengths = torch.tensor([len(r.prompt_ids) for r in requests], dtype=torch.long)

        # Prefill: each distinct prompt runs once; its cache is copied to its rows.
        logits = torch.empty(B, backend.vocab_size)
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, r in enumerate(requests):
            groups.setdefault(tuple(r.prompt_ids), []).append(b)
        for ids, members in groups.items():
            tmp = backend.new_cache(1, len(ids))
            last = backend.forward(torch.tensor([ids]), tmp, torch.zeros(1, dtype=torch.long))
            cache.copy_rows(tmp, 0, torch.tensor(members), len(ids))
            logits[members] = last

        active = list(range(B))  # rows[active[i]] is batch row i
        while True:
            trace = any(rows[a].req.params.trace for a in active)
            # Grammar rows: −inf outside the grammar, before every sampler step (noise cannot unmask).
            masked = islands.mask(logits) if islands is not None else logits
            generated = [rows[a].tokens for a in active] if sampler.history is not None else None  # DRY's context
            tokens, info = sampler.sample(masked, trace=trace, generated=generated)  # (B,)
            if islands is not None:
                tokens = islands.guard(tokens, masked)
            logp = torch.log_softmax(logits, -1)  # (B, V) the model's raw distribution
            logprobs = logp.gather(-1, tokens[:, None]).squeeze(-1)
            k = max(rows[a].req.params.top_logprobs for a in active)
            top = logp.topk(k, -1) if k else None  # alternatives for rows that ask
            top_v, top_i = (top.values.tolist(), top.indices.tolist()) if top is not None else ([], [])
            is_eos = torch.isin(tokens, self.eos)
            tok_list, lp_list, eos_list = tokens.tolist(), logprobs.tolist(), is_eos.tolist()
            pos = lengths.tolist()  # where each row's new token goes in the cache
            for i, a in enumerate(active):
                row = rows[a]
                drawn = len(row.tokens)
                row.push(tok_list[i], lp_list[i], eos_list[i])
                if (kr := row.req.params.top_logprobs) and len(row.tokens) > drawn:
                    row.top[drawn] = list(zip(top_i[i][:kr], top_v[i][:kr]))
                if islands is not None:
                    islands.observe(i, row, tok_list[i])
                if row.finish_reason is None and pos[i] >= self.max_positions:
                    row.finish_reason = "length"  # the model's context is full: nothing can follow
                if row.req.params.trace:
                    row.trace.append({k: v[i] for k, v in info.items()} | {"token": tok_list[i], "logprob": lp_list[i]})
            # Tool calls completed this step run now; their results join those rows' next forward.
            injected = islands.inject([rows[a] for a in active], logits) if islands is not None else {}
            for i, (first, ids) in list(injected.items()):
                tokens[i] = first
                if pos[i] + len(ids) + 1 >= self.max_positions:  # the result would not fit the context
                    rows[active[i]].finish_reason = "length"
                    del injected[i]
            deltas = [
                Delta(a, rows[a].delta(), tok_list[i], rows[a].finish_reason is not None, rows[a].finish_reason)
                for i, a in enumerate(active)
            ]
            yield deltas
            keep = [i for i, a in enumerate(active) if rows[a].finish_reason is None]
            if not keep:
                break
            if len(keep) < len(active):
                keep_t = torch.tensor(keep)
                cache = cache.select(keep_t)
                sampler.select(keep_t)
                if islands is not None:
                    islands.select(keep)
                lengths = lengths[keep_t]
                tokens = tokens[keep_t]
                injected = {keep.index(i): v for i, v in injected.items() if i in keep}
                active = [active[i] for i in keep]
            logits = backend.forward(tokens[:, None], cache, lengths, sampler.hidden_hook(backend.num_layers))
            lengths = lengths + 1
            if injected:
                hooks = {i: sampler.hidden_hook(backend.num_layers, row=i) for i in injected}
                cache, logits, lengths = self._inject(
                    cache, logits, lengths, injected, [rows[a] for a in active], hooks
                )
        out.extend(r.completion() for r in rows)

    def _inject(
        self,
        cache: Any,
        logits: torch.Tensor,
        lengths: torch.Tensor,
        injected: dict[int, tuple[int, list[int]]],
        rows: list[_Row],
        hooks: dict[int, Any] | None = None,
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Run injected tokens through the model for their rows (see :func:`forward_injected`)."""
        left = [r.req.params.max_tokens - (len(r.tokens) - r.injected) for r in rows]  # draws still allowed
        ids = {i: tokens for i, (_, tokens) in injected.items()}
        return forward_injected(self.backend, cache, logits, lengths, ids, {i: left[i] for i in ids}, hooks)


def forward_injected(
    backend: Any,
    cache: Any,
    logits: torch.Tensor,
    lengths: torch.Tensor,
    injected: dict[int, list[int]],
    room: dict[int, int],
    hooks: dict[int, Any] | None = None,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run injected tokens through the model, each row on its own (a one-row view of the cache).

    Row ``i``'s next-token logits become those after its injected tokens; its length
    advances by their count. The cache grows when a row would outrun it (``room[i]``
    positions are kept free after the injection for the row's later draws); ``hooks[i]`` is
    row ``i``'s one-row hidden-noise hook, so its last injected position is perturbed like
    any position it generates. Returns the
    (possibly new) cache, ``logits`` and ``lengths``, updated in place.
    """
    need = max(int(lengths[i]) + len(ids) + room.get(i, 0) + 1 for i, ids in injected.items())
    if need > cache.capacity:
        grown = backend.new_cache(cache.batch, need + 64)
        for b in range(cache.batch):
            grown.copy_rows(cache, b, torch.tensor([b]), int(lengths[b]))
        cache = grown
    for i, ids in injected.items():
        ids = ids[: max(0, cache.capacity - int(lengths[i]) - 1)]
        if not ids:
            continue
        start = lengths[i : i + 1].clone()
        hook = hooks.get(i) if hooks else None
        logits[i] = backend.forward(torch.tensor([ids]), cache.narrow(i, 1), start, hook)[0]
        lengths[i] += len(ids)
    return cache, logits, lengths


def timed(fn: Any) -> tuple[Any, float]:
    """``(fn(), seconds)`` — a small helper for benchmarks and progress reports."""
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t
