"""The batched autoregressive loop.

Rows are :class:`~sazanami.sampling.rows.RowRequest` (prompt, seed, parameters); finished rows are
:class:`~sazanami.sampling.rows.Completion`. Two entries: :meth:`Engine.generate` samples
(:class:`~sazanami.sampling.params.SamplingParams`), :meth:`Engine.beam_search` runs stochastic beam
searches (:class:`~sazanami.sampling.beam_params.BeamParams`, :mod:`sazanami.engine.beams`).
:meth:`Engine.steps` is the one place decoding is dispatched: beam rows to
:func:`~sazanami.engine.beams.beam_steps`, the others through the sampling loop below, whose
per-row work is the row step (:class:`~sazanami.engine.decode_step.RowStep`).

Rows that share a prompt share its prefill: the prompt runs through the model once and
its keys/values are copied into each row's slot of a pre-allocated cache; distinct prompts
prefill together, right-padded, where the backend takes ragged rows (:meth:`Engine._prefills`).
Each row decodes at its own positions, so prompts of different lengths need no padding
there and a row's tokens do not depend on its neighbours (up to float round-off of batched
matmuls). Finished rows are dropped from the batch so they stop costing compute.

Rows with ``params.speculative`` draft tokens (:mod:`sazanami.speculative`): each forward
feeds a row its token and then its draft, (B, 1 + K) ragged, and the row step verifies the
logits of every position with the row's own sampler (:meth:`RowStep.verify
<sazanami.engine.decode_step.RowStep.verify>`); a rejected draft's keys/values are trimmed from the
cache. The tokens are those of the plain loop; only the number of forward passes changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sazanami.engine.beams import beam_sampling, beam_steps, check_rows
from sazanami.engine.decode_step import RowState, RowStep
from sazanami.engine.injection import forward_injected
from sazanami.engine.prefix_cache import DEFAULT_BLOCK, PrefixCache
from sazanami.errors import ParameterError
from sazanami.islands.runtime import IslandBatch
from sazanami.sampling.beam_params import BeamParams
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import Completion, RowRequest
from sazanami.seeds import derive_seed, seed_or_fresh
from sazanami.speculative.budget import StepCost, budget
from sazanami.speculative.drafter import Drafter

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
    token_ids: list[int] | None = None
    """Every token the row drew this step, in order: several when a draft was accepted
    (speculative decoding); None: ``token_id`` alone."""
    drafted: int = 0
    """Tokens drafted for the row so far (speculative decoding)."""
    accepted: int = 0
    """Of them, those its sampler drew (kept)."""


class Engine:
    """Batched generation over a :class:`~sazanami.backends.Backend`."""

    def __init__(self, backend: Any, prefix_cache: PrefixCache | bool = True) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
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
        self.step_cost = StepCost()
        """Seconds per speculative step against tokens fed (sizes the drafts; never changes outputs)."""

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
        seed = seed_or_fresh(params.seed)
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
        ``params.beams`` (deprecated; use :meth:`beam_search`): ``width`` stochastic beam samples
        per prompt, best first.
        """
        params = params or SamplingParams()
        _warn_beams(params)
        return self.run(self.rows_for(_prompt_list(prompts), params, raw, islands))

    def beam_search(
        self,
        prompts: Prompt | list[Prompt],
        params: BeamParams | None = None,
        raw: bool = False,
        islands: Any = None,
    ) -> list[Completion]:
        """Stochastic beam search (:mod:`sazanami.engine.beams`): ``params.width`` samples without
        replacement per prompt, best first; completions in prompt order.

        Every :class:`~sazanami.sampling.beam_params.BeamParams` field is honoured; ``islands``: a grammar
        every beam follows and/or tools any beam may call.
        """
        return self.run(self.beam_rows(_prompt_list(prompts), params or BeamParams(), raw, islands))

    def beam_rows(
        self, prompts: list[Prompt], params: BeamParams, raw: bool = False, islands: Any = None
    ) -> list[RowRequest]:
        """One row per prompt, each a beam search (what :meth:`beam_search` runs; a server's
        batcher takes them like any rows)."""
        return self.rows_for(prompts, beam_sampling(params), raw, islands)

    def stream(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | None = None,
        raw: bool = False,
        islands: Any = None,
    ) -> Iterator[list[Delta]]:
        """Yield, per step, the text each row added (row index = position in (prompt, variant) order).

        Beams do not stream: their steps yield no deltas (:meth:`beam_search` returns their samples).
        """
        params = params or SamplingParams()
        _warn_beams(params)
        out: list[Completion] = []
        yield from self.steps(self.rows_for(_prompt_list(prompts), params, raw, islands), out)

    def run(self, rows: list[RowRequest]) -> list[Completion]:
        """Generate every row; completions in the order of ``rows``."""
        out: list[Completion] = []
        for _ in self.steps(rows, out, deltas=False):
            pass
        return out

    # -- the loop --------------------------------------------------------------------------
    def steps(self, requests: list[RowRequest], out: list[Completion], deltas: bool = True) -> Iterator[list[Delta]]:
        """Generate ``requests`` one step at a time; fills ``out`` in row order.

        The one place decoding is dispatched: beam rows (:meth:`beam_rows`, or parameters with
        the deprecated ``beams``) run as stochastic beam searches (:mod:`sazanami.engine.beams`; all
        rows of the call must), the others through the sampling loop. Yields per-step deltas
        (empty lists for beams, or when ``deltas`` is False).
        """
        beams = [r.params.beams is not None for r in requests]
        if any(beams):
            if not all(beams):
                raise ParameterError("beams", "beam rows and sampled rows cannot share an engine call")
            check_rows(requests)  # a field beams do not honour is refused here, before any work
            return beam_steps(self, requests, out)
        return self._sample_steps(requests, out, deltas)

    @torch.inference_mode()
    def _sample_steps(self, requests: list[RowRequest], out: list[Completion], emit: bool) -> Iterator[list[Delta]]:
        """The sampling loop: batched forward, the row step, finished rows dropped."""
        backend = self.backend
        self._check_prompts(requests)
        drafter = self._drafter(requests)  # None: no row speculates (the plain loop)
        step = RowStep(requests, self.tokenizer, backend.vocab_size, backend.hidden_size, self.max_positions)
        rows = list(step.rows)  # every row, in request order; rows[active[i]] is batch row i
        active = list(range(len(rows)))
        spare = max((r.params.speculative.max_draft for r in requests if r.params.speculative), default=0)
        cache, logits, cached = self._prefill_rows(requests, spare)  # logits (B, V) after each prompt
        lengths = torch.tensor([len(r.prompt_ids) for r in requests], dtype=torch.long)  # (B,)
        drafts: list[list[int]] = [[] for _ in requests]  # fed after each row's token, to verify
        if drafter is not None:
            logits = logits[:, None]  # (B, 1 + K, V): a position per fed token
        while True:
            # one token per row: islands mask → sampler → guard → log-prob → push → observe → inject
            if drafter is None:
                s = step(logits, lengths.tolist())
            else:  # the same, along each row's draft: accepted drafts stay, the rest is dropped
                s = step.verify(logits, drafts, lengths.tolist())
                self.step_cost.stop()
                drafter.observe(drafts, s.accepted)
                lengths = lengths + torch.tensor(s.accepted, dtype=torch.long)
                for i, (d, a) in enumerate(zip(drafts, s.accepted)):
                    if a < len(d):
                        cache.trim(i, int(lengths[i]))  # the rejected positions' keys/values go
            if emit:
                yield [
                    Delta(a, rows[a].delta(), s.drawn[i], rows[a].finish_reason is not None,
                          rows[a].finish_reason, cached[a], s.taken[i] if s.taken else None,
                          rows[a].drafted, rows[a].accepted)
                    for i, a in enumerate(active)
                ]  # fmt: skip
            else:
                yield []
            keep = step.running()
            if len(keep) < len(active):  # finished rows leave the batch (their keys/values may be kept)
                self._remember_finished(rows, active, keep, cache, lengths)
                if not keep:
                    break
                keep_t = torch.tensor(keep)
                cache, lengths, tokens = cache.select(keep_t), lengths[keep_t], s.tokens[keep_t]
                injected = {keep.index(i): v for i, v in s.injected.items() if i in keep}
                active = [active[i] for i in keep]
                step.select(keep)
                if drafter is not None:
                    drafter.select(keep)
            else:
                tokens, injected = s.tokens, s.injected
            if drafter is not None:  # each row's token and its new draft, in one forward pass
                drafts = self._drafts(drafter, step, lengths, cache.capacity, injected)
                if not injected:  # a step that injects a tool's result is not a typical step
                    self.step_cost.start(len(drafts) + sum(map(len, drafts)))
                logits = self._forward_drafts(tokens, drafts, cache, lengths)  # (B, 1 + K, V)
                lengths = lengths + 1
                if injected:  # rows with a tool's result drafted nothing: position 0 is their last
                    cache, _, lengths = self._inject(cache, logits[:, 0], lengths, injected, step.rows, drafts=drafts)
                continue
            # the next position: each row's new token (and a tool's result after it, row by row)
            logits = backend.forward(tokens[:, None], cache, lengths, step.sampler.hidden_hook(backend.num_layers))
            lengths = lengths + 1
            if injected:
                hooks = {i: step.sampler.hidden_hook(backend.num_layers, row=i) for i in injected}
                cache, logits, lengths = self._inject(cache, logits, lengths, injected, step.rows, hooks)
        for r, n in zip(rows, cached):
            r.cached = n
        out.extend(r.completion() for r in rows)

    # -- speculative decoding ----------------------------------------------------------------
    def _drafter(self, requests: list[RowRequest]) -> Drafter | None:
        """The rows' drafts (:class:`~sazanami.speculative.drafter.Drafter`), None when no row
        speculates; a backend without draft verification, or noise that enters the forward pass
        (hidden states, embeddings: it is drawn per forward, not per token), is refused by name."""
        specs = [r.params.speculative for r in requests]
        if not any(specs):
            return None
        if not getattr(self.backend, "verifies_drafts", False):
            name = getattr(self.backend, "capabilities", None)
            raise ParameterError(
                "speculative",
                f"speculative decoding is not available on the {getattr(name, 'backend', type(self.backend).__name__)} "
                "backend (it needs logits for every drafted position and a cache that rolls back)",
            )
        for r in requests:
            fl = r.params.fluctuation
            if r.params.speculative is None or fl is None or (fl.hidden is None and fl.embedding is None):
                continue
            point = "hidden" if fl.hidden is not None else "embedding"
            raise ParameterError(
                "speculative",
                f"speculative decoding cannot verify drafts under {point} noise (it perturbs each forward "
                f"pass, not each token, so a draft's positions would see other noise): drop fluctuation.{point}",
            )
        return Drafter(requests, self.tokenizer)

    def _drafts(
        self, drafter: Drafter, step: RowStep, lengths: torch.Tensor, capacity: int, injected: dict[int, Any]
    ) -> list[list[int]]:
        """Each batch row's draft for the next forward: none for a row a tool's result follows;
        at most the draws a row has left minus one (its token is one) and what the cache and the
        model's context hold after the row's token (a padded batch writes every row's positions
        up to the longest draft, so the tightest row bounds them all); what pays for the time it
        adds (:func:`~sazanami.speculative.budget.budget`); in all, what the backend's
        ``draft_limits`` allows a call of this many rows (exact unless no row asks for it)."""
        ends = lengths.tolist()
        top = min(min(capacity, self.max_positions) - 1 - e for e in ends)  # positions after the token
        exact = any(r.req.params.speculative.exact for r in step.rows if r.req.params.speculative)
        total, per_row = self.backend.draft_limits(len(ends), exact)  # exact: every row's logits bit-identical
        room = [
            0 if i in injected else max(0, min(r.req.params.max_tokens - r.drawn - 1, top, per_row))
            for i, r in enumerate(step.rows)
        ]
        cost = self.step_cost
        drafts = budget(
            drafter.propose([r.tokens for r in step.rows], room), drafter.alphas(), cost.ratio(), cost.explore()
        )
        for i, d in enumerate(drafts):  # the call's drafts in all, first rows first
            drafts[i] = d[: max(0, total)]
            total -= len(drafts[i])
        return drafts

    def _forward_drafts(
        self, tokens: torch.Tensor, drafts: list[list[int]], cache: Any, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, 1 + K, V) of each row's token (B,) then its draft, from one forward pass;
        a row's positions past its draft are padding (not read, overwritten later)."""
        B, K = len(drafts), max((len(d) for d in drafts), default=0)
        fed = torch.zeros(B, 1 + K, dtype=torch.long)
        fed[:, 0] = tokens
        for i, d in enumerate(drafts):
            fed[i, 1 : 1 + len(d)] = torch.tensor(d, dtype=torch.long)
        counts = torch.tensor([1 + len(d) for d in drafts], dtype=torch.long)
        return self.backend.forward(fed, cache, lengths, None, last_only=False, counts=counts)

    def _check_prompts(self, requests: list[RowRequest]) -> None:
        for r in requests:
            if len(r.prompt_ids) >= self.max_positions:
                raise ParameterError(
                    "prompt", f"prompt has {len(r.prompt_ids)} tokens; the model's context is {self.max_positions}"
                )

    def _prefill_rows(self, requests: list[RowRequest], spare: int = 0) -> tuple[Any, torch.Tensor, list[int]]:
        """A cache for the rows with their prompts in it, each row's last logits (B, V) and the
        prompt tokens each row took from the prefix cache. Each distinct prompt runs once; its
        keys/values are copied to its rows. ``spare``: positions more per row (drafts)."""
        backend = self.backend
        reserve = [IslandBatch.reserve(r.islands) for r in requests]  # room for injected results
        capacity = max(len(r.prompt_ids) + r.params.max_tokens + n for r, n in zip(requests, reserve)) + 1 + spare
        cache = backend.new_cache(len(requests), capacity)
        logits = torch.empty(len(requests), backend.vocab_size)
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, r in enumerate(requests):
            groups.setdefault(tuple(r.prompt_ids), []).append(b)
        cached = [0] * len(requests)
        prompts = [list(ids) for ids in groups]
        reuse = [all(requests[b].reuse for b in members) for members in groups.values()]
        for g, tmp, row, last, reused in self._prefills(prompts, reuse):
            members = groups[tuple(prompts[g])]
            cache.copy_rows(tmp, row, torch.tensor(members), len(prompts[g]))
            logits[members] = last
            for b in members:
                cached[b] = reused
        return cache, logits, cached

    def _remember_finished(
        self, rows: list[RowState], active: list[int], keep: list[int], cache: Any, lengths: torch.Tensor
    ) -> None:
        """Store the keys/values of batch rows that just finished in the prefix cache (where allowed)."""
        if self.prefix_cache is None:
            return
        for i, a in enumerate(active):
            if i not in keep and _row_cacheable(rows[a].req):
                fed = int(lengths[i]) - len(rows[a].req.prompt_ids)  # its tokens now in the cache
                self.remember(rows[a].req.prompt_ids + rows[a].tokens[:fed], cache, i)

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
        rows: list[RowState],
        hooks: dict[int, Any] | None = None,
        drafts: list[list[int]] | None = None,
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Run injected tokens through the model for their rows (see :func:`forward_injected`).
        ``drafts``: positions the other rows hold past ``lengths`` (kept if the cache grows)."""
        left = [r.req.params.max_tokens - r.drawn for r in rows]  # draws still allowed
        ids = {i: tokens for i, (_, tokens) in injected.items()}
        held = torch.tensor([len(d) for d in drafts], dtype=torch.long) if drafts else torch.zeros_like(lengths)
        cache, logits, ends = forward_injected(
            self.backend, cache, logits, lengths + held, ids, {i: left[i] for i in ids}, hooks
        )
        return cache, logits, ends - held


def _prompt_list(prompts: Prompt | list[Prompt]) -> list[Prompt]:
    """One prompt (a string or a chat) as a list of one."""
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
        return [prompts]  # type: ignore[list-item]
    return prompts  # type: ignore[return-value]


def _warn_beams(params: SamplingParams) -> None:
    if params.beams is not None:
        warnings.warn(
            "SamplingParams.beams is deprecated: use Engine.beam_search(prompts, BeamParams(...))",
            DeprecationWarning,
            stacklevel=3,
        )


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
