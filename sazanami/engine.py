"""The batched autoregressive loop.

Rows are :class:`~sazanami.rows.RowRequest` (prompt, seed, parameters); finished rows are
:class:`~sazanami.rows.Completion`. :meth:`Engine.steps` is the one place decoding is
dispatched: rows with ``params.beams`` run as stochastic beam searches
(:mod:`sazanami.beams`), the others through the sampling loop below.

Rows that share a prompt share its prefill: the prompt runs through the model once and
its keys/values are copied into each row's slot of a pre-allocated cache; distinct prompts
prefill together, right-padded, where the backend takes ragged rows (:meth:`Engine._prefills`).
Each row decodes at its own positions, so prompts of different lengths need no padding
there and a row's tokens do not depend on its neighbours (up to float round-off of batched
matmuls). Finished rows are dropped from the batch so they stop costing compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sazanami.beams import beam_steps
from sazanami.errors import ParameterError
from sazanami.inject import forward_injected
from sazanami.islands.runtime import IslandBatch
from sazanami.params import SamplingParams
from sazanami.prefix_cache import DEFAULT_BLOCK, PrefixCache
from sazanami.rows import Completion, RowRequest, Span, find_stop
from sazanami.sampling import SamplerBatch
from sazanami.seeds import derive_seed, fresh_seed

Prompt = str | list[dict[str, str]]

RAGGED_POSITIONS = 2048
"""Positions (rows × padded length) one batched prefill pass computes at most."""
RAGGED_PASS_COST = 16
"""What one more forward pass costs, in positions computed: a prompt joins a batched prefill
pass unless the padding it adds to the pass's shorter rows costs more."""

__all__ = ["Completion", "Delta", "Engine", "Prompt", "RowRequest", "forward_injected"]


@dataclass
class Delta:
    """What one row produced in one step (streaming)."""

    row: int
    text: str
    token_id: int | None
    finished: bool = False
    finish_reason: str | None = None
    cached_tokens: int = 0
    """Prompt tokens of the row taken from the prefix cache (the same in each of its deltas)."""


class _Row:
    """Mutable state of a running row (a :class:`~sazanami.rows.RunningRow`).

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
        # incremental decoding: text of tokens[:_read] is _done; _head decodes tokens[_window:_read]
        self._window = self._read = 0
        self._done = self._head = ""

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
        )


class Engine:
    """Batched generation over a :class:`~sazanami.backends.Backend`."""

    def __init__(self, backend: Any, prefix_cache: PrefixCache | bool = True) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.eos = torch.tensor(sorted(self.tokenizer.eos_token_ids), dtype=torch.long)
        self.max_positions: int = getattr(backend, "max_positions", None) or 2**31
        """The model's context: a row that fills it ends with ``finish_reason="length"``."""
        if prefix_cache is True:
            block = getattr(backend, "prefix_block", DEFAULT_BLOCK)  # the backend's cheapest granularity
            prefix_cache = PrefixCache(block=block) if _can_cache(backend) else False
        self.prefix_cache: PrefixCache | None = prefix_cache if isinstance(prefix_cache, PrefixCache) else None
        """Keys/values of prefixes already computed, reused across calls (None: off)."""
        attach = getattr(backend, "attach_prefix_cache", None)
        if self.prefix_cache is not None and attach is not None:
            attach(self.prefix_cache)  # the backend frees what an evicted block holds

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
        """n rows per prompt with seeds derived from the request seed (one per prompt for beams).

        ``islands`` (:class:`sazanami.islands.Islands`) goes to every row; its tools'
        descriptions are added to each prompt unless it says otherwise. With
        ``params.beams`` each prompt is one stochastic beam search (``width`` completions).
        """
        if not prompts:
            raise ParameterError("prompt", "at least one prompt is needed")
        seed = params.seed if params.seed is not None else fresh_seed()
        rows = []
        for p_index, prompt in enumerate(prompts):
            ids = self.encode(islands.apply_to_prompt(prompt, raw) if islands is not None else prompt, raw)
            if params.beams is not None:
                rows.append(RowRequest(ids, params, derive_seed(seed, p_index), p_index, islands=islands))
                continue
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
        With ``params.beams``: ``width`` stochastic beam samples per prompt, best first.
        """
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        return self.run(self.rows_for(prompts, params, raw, islands))  # type: ignore[arg-type]

    def stream(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | None = None,
        raw: bool = False,
        islands: Any = None,
    ) -> Iterator[list[Delta]]:
        """Yield, per step, the text each row added (row index = position in (prompt, variant) order).

        Beams do not stream: their steps yield no deltas (:meth:`generate` returns their samples).
        """
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        out: list[Completion] = []
        yield from self.steps(self.rows_for(prompts, params, raw, islands), out)  # type: ignore[arg-type]

    def run(self, rows: list[RowRequest]) -> list[Completion]:
        """Generate every row; completions in the order of ``rows``."""
        out: list[Completion] = []
        for _ in self.steps(rows, out, deltas=False):
            pass
        return out

    # -- the loop --------------------------------------------------------------------------
    def steps(
        self, requests: list[RowRequest], out: list[Completion], deltas: bool = True
    ) -> Iterator[list[Delta]]:
        """Generate ``requests`` one step at a time; fills ``out`` in row order.

        The one place decoding is dispatched: rows whose parameters ask for ``beams`` run as
        stochastic beam searches (:mod:`sazanami.beams`; all rows of the call must), the
        others through the sampling loop. Yields per-step deltas (empty lists for beams,
        or when ``deltas`` is False).
        """
        beams = [r.params.beams is not None for r in requests]
        if any(beams):
            if not all(beams):
                raise ParameterError("beams", "beam rows and sampled rows cannot share an engine call")
            return beam_steps(self, requests, out)
        return self._sample_steps(requests, out, deltas)

    @torch.inference_mode()
    def _sample_steps(self, requests: list[RowRequest], out: list[Completion], emit: bool) -> Iterator[list[Delta]]:
        """The sampling loop: batched forward, sampler, islands, finished rows dropped."""
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
            islands = IslandBatch([r.islands for r in requests], self.tokenizer, backend.vocab_size)
        reserve = islands.reserve if islands is not None else (lambda _: 0)
        capacity = max(len(r.prompt_ids) + r.params.max_tokens + reserve(r.islands) for r in requests) + 1
        cache = backend.new_cache(B, capacity)
        sampler = SamplerBatch(
            requests,
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
        cached = [0] * B  # prompt tokens each row took from the prefix cache
        prompts = [list(ids) for ids in groups]
        reuse = [all(requests[b].reuse for b in members) for members in groups.values()]
        for g, tmp, row, last, reused in self._prefills(prompts, reuse):
            members = groups[tuple(prompts[g])]
            cache.copy_rows(tmp, row, torch.tensor(members), len(prompts[g]))
            logits[members] = last
            for b in members:
                cached[b] = reused

        active = list(range(B))  # rows[active[i]] is batch row i
        while True:
            trace = any(rows[a].req.params.trace for a in active)
            # Grammar rows: −inf outside the grammar, before every sampler step (noise cannot unmask).
            masked = islands.mask(logits) if islands is not None else logits
            generated = [rows[a].tokens for a in active] if sampler.history is not None else None  # DRY's context
            tokens, info = sampler.sample(masked, trace=trace, generated=generated)  # (B,)
            if islands is not None:
                tokens = islands.guard(tokens, masked)
            # the drawn token's log-prob under the model: one gather and a logsumexp per row
            lse = torch.logsumexp(logits, -1, keepdim=True)  # (B, 1)
            logprobs = (logits.gather(-1, tokens[:, None]) - lse).squeeze(-1)
            k = max(rows[a].req.params.top_logprobs for a in active)
            top = logits.topk(k, -1) if k else None  # alternatives (raw distribution) for rows that ask
            top_v, top_i = ((top.values - lse).tolist(), top.indices.tolist()) if top is not None else ([], [])
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
            if emit:
                yield [
                    Delta(
                        a, rows[a].delta(), tok_list[i], rows[a].finish_reason is not None, rows[a].finish_reason,
                        cached[a],
                    )
                    for i, a in enumerate(active)
                ]
            else:
                yield []
            keep = [i for i, a in enumerate(active) if rows[a].finish_reason is None]
            if self.prefix_cache is not None and len(keep) < len(active):
                for i, a in enumerate(active):
                    if rows[a].finish_reason is not None and _row_cacheable(rows[a].req):
                        fed = int(lengths[i]) - len(rows[a].req.prompt_ids)  # its tokens now in the cache
                        self.remember(rows[a].req.prompt_ids + rows[a].tokens[:fed], cache, i)
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
        for r, n in zip(rows, cached):
            r.cached = n
        out.extend(r.completion() for r in rows)

    # -- the prefix cache ------------------------------------------------------------------
    def prefill(self, ids: list[int], cache: Any, row: int = 0, reuse: bool = True) -> tuple[torch.Tensor, int]:
        """Run prompt ``ids`` into ``row`` of ``cache`` (empty); returns its last logits (V,) and
        how many of its tokens came from the prefix cache instead of the model.

        The last token always runs (its logits are needed); the prompt's full blocks are
        stored for later calls. ``reuse`` False computes every token (and still stores).
        """
        pc = self.prefix_cache
        n, blocks = pc.lookup(ids, limit=len(ids) - 1) if pc is not None and reuse else (0, [])
        one = cache if cache.batch == 1 else cache.narrow(row, 1)
        if n:
            one.write_blocks(0, blocks)
        logits = self.backend.forward(torch.tensor([ids[n:]]), one, torch.tensor([n]))[0]
        if pc is not None:
            pc.count(n, len(ids) - n)
            pc.store(ids, lambda a, b: one.read_block(0, a, b))
        return logits, n

    def _prefills(
        self, prompts: list[list[int]], reuse: list[bool]
    ) -> Iterator[tuple[int, Any, int, torch.Tensor, int]]:
        """Prefill each prompt; yields ``(prompt index, cache, row, last logits, tokens reused)``.

        A backend with ``ragged_prefill`` runs several prompts in one forward pass (rows
        right-padded to the longest part still to compute; at most :data:`RAGGED_POSITIONS`
        positions, and padding worth less than a pass, :data:`RAGGED_PASS_COST`); others run
        one pass per prompt, in order. A prompt that would reuse a block another prompt of
        the pass is computing waits for the next pass.
        """
        if not getattr(self.backend, "ragged_prefill", False) or len(prompts) == 1:
            for i, (ids, ok) in enumerate(zip(prompts, reuse)):
                tmp = self.backend.new_cache(1, len(ids))
                last, reused = self.prefill(ids, tmp, reuse=ok)
                yield i, tmp, 0, last, reused
            return
        pc = self.prefix_cache
        pending = list(range(len(prompts)))
        while pending:
            hits = {i: pc.lookup(prompts[i], limit=len(prompts[i]) - 1) if pc is not None and reuse[i] else (0, [])
                    for i in pending}  # fmt: skip
            taken: list[int] = []
            width = top = 0
            # shortest part to compute first; a longer one joins while its padding costs less than a pass
            for i in sorted(pending, key=lambda i: len(prompts[i]) - hits[i][0]):
                ids, n = prompts[i], hits[i][0]
                w, t = max(width, len(ids) - n), max(top, n)
                if taken and (
                    (len(taken) + 1) * w > RAGGED_POSITIONS
                    or (w - width) * len(taken) > RAGGED_PASS_COST
                    or t + w > self.max_positions
                ):
                    break  # the next pass takes it and the longer ones (and looks them up again)
                gain = n + pc.block if pc is not None and reuse[i] else len(ids)  # the end of its next block
                if gain < len(ids) and any(_common(ids, prompts[k]) >= gain for k in taken):
                    continue  # a prompt of this pass stores a block it can reuse next pass
                taken.append(i)
                width, top = w, t
            found = [hits[i] for i in taken]
            pending = [i for i in pending if i not in taken]
            tmp = self.backend.new_cache(len(taken), top + width)
            tokens = torch.zeros(len(taken), width, dtype=torch.long)
            for g, (i, (n, blocks)) in enumerate(zip(taken, found)):
                if n:
                    tmp.write_blocks(g, blocks)
                tokens[g, : len(prompts[i]) - n] = torch.tensor(prompts[i][n:])
            starts = torch.tensor([n for n, _ in found])
            last = torch.tensor([len(prompts[i]) - n - 1 for i, (n, _) in zip(taken, found)])
            logits = self.backend.forward(tokens, tmp, starts, last=last)
            for g, (i, (n, _)) in enumerate(zip(taken, found)):
                if pc is not None:
                    pc.count(n, len(prompts[i]) - n)
                    pc.store(prompts[i], lambda a, b, g=g, tmp=tmp: tmp.read_block(g, a, b))
                yield i, tmp, g, logits[g], n

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix (the next call computes its prompts; e.g. cold measurements)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def remember(self, ids: list[int], cache: Any, row: int) -> None:
        """Store the keys/values of ``ids`` (what ``row`` of ``cache`` holds) in the prefix cache."""
        if self.prefix_cache is not None:
            self.prefix_cache.store(ids, lambda a, b: cache.read_block(row, a, b))

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
        left = [r.req.params.max_tokens - r.drawn for r in rows]  # draws still allowed
        ids = {i: tokens for i, (_, tokens) in injected.items()}
        return forward_injected(self.backend, cache, logits, lengths, ids, {i: left[i] for i in ids}, hooks)



def _can_cache(backend: Any) -> bool:
    """Whether the backend's caches can hand blocks of keys/values to a prefix cache."""
    probe = getattr(backend, "supports_prefix_cache", None)
    return bool(probe) if probe is not None else False


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _row_cacheable(req: RowRequest) -> bool:
    """A row's generated keys/values may be reused by later rows unless hidden or embedding
    noise entered them (they depend on the row's noise, not only on its tokens)."""
    fl = req.params.fluctuation
    return fl is None or (fl.hidden is None and fl.embedding is None)
