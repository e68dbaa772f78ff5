"""Stochastic beam search by the Gumbel-top-k trick (Kool, van Hoof & Welling, 2019).

k sequences sampled *without replacement* from the model's (processed) sequence
distribution. Every partial sequence y carries its log-probability φ(y) and a
perturbed value G(y) ~ Gumbel(φ(y)) conditioned on its parent's: children get
G_φ ~ Gumbel(φ(y')) and are shifted so that their maximum equals the parent's G,

    G(y') = −log(exp(−G(y)) − exp(−Z) + exp(−G_φ(y'))),  Z = max over siblings G_φ,

and the k largest G are kept each step. The Gumbel noise is white, or colored:
made from colored Gaussian streams (one per beam slot × vocabulary entry)
through the normal CDF, so the marginals stay exact.

Each step is the engine's row step (:class:`~sazanami.engine.decode_step.RowStep`) with its draw
replaced: the live beams are its rows; the islands mask and the sampler's logits processing
(bias, penalties, DRY, temperature, truncation) give each beam's step distribution;
Gumbel-top-k picks the children; :meth:`RowStep.fork <sazanami.engine.decode_step.RowStep.fork>`
makes each child a copy of its parent's row (text, penalty counts, grammar and call state);
the children take their tokens as any row does (end-of-sequence, stop strings,
``max_tokens``, a complete grammar or a full context end a beam), and a call a beam
completes is run and its result injected into that beam only (the result's tokens have
probability 1: they change no beam's φ or G).

The engine runs it: :meth:`Engine.beam_search <sazanami.engine.loop.Engine.beam_search>` with a
:class:`~sazanami.sampling.beam_params.BeamParams` (or the deprecated ``SamplingParams(beams=...)``)
makes one :class:`~sazanami.sampling.rows.RowRequest` per prompt, and :meth:`Engine.steps
<sazanami.engine.loop.Engine.steps>` hands such rows to :func:`beam_steps`, so beams go wherever
engine calls go (the server's batcher too). Each completion reports the search's token
usage (``Completion.usage``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sazanami.engine.decode_step import RowState, RowStep
from sazanami.engine.injection import forward_injected
from sazanami.islands.runtime import IslandBatch
from sazanami.noise.fluctuation import MixedNoise, gumbel_from_normal
from sazanami.sampling.beam_params import BeamParams
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import Completion, RowRequest
from sazanami.seeds import derive_seed


@dataclass
class _Beam:
    phi: float
    """Log-probability of the beam's drawn tokens under the processed step distributions."""
    g: float
    """Its perturbed value G (Gumbel(φ) conditioned on its parent's)."""
    done: RowState | None = None
    """The finished beam's row; None while it runs (its row is in the step, in beam order)."""


def beam_sampling(params: BeamParams) -> SamplingParams:
    """The parameters a beam search's rows carry: its sampling fields (checked here by
    ``SamplingParams``'s own checks, errors naming the field) with ``beams`` set to it."""
    sampling = SamplingParams(**params.sampling_fields())
    normalised = {k: getattr(sampling, k) for k in params.sampling_fields()}  # e.g. logit_bias as pairs
    return sampling.replace(beams=dataclasses.replace(params, **normalised))


def check_rows(requests: list[RowRequest]) -> None:
    """Raise ``ParameterError`` naming a field a beam row's parameters ask for and beams do not
    honour (see :meth:`BeamParams.from_sampling`), before any work."""
    for r in requests:
        BeamParams.from_sampling(r.params)


def _gumbel(noise: MixedNoise | None, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise (k, V): colored through Φ when ``noise`` is given, else white."""
    if noise is not None:
        return gumbel_from_normal(noise.step().view(shape))
    u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    return -torch.log(-torch.log(u))


def _shift(parent_g: torch.Tensor, g_phi: torch.Tensor) -> torch.Tensor:
    """Condition children's Gumbels on max = parent's G (numerically stable form, Kool et al. App. B)."""
    z = g_phi.max(-1, keepdim=True).values
    v = parent_g[:, None] - g_phi + torch.log1p(-torch.exp(g_phi - z).clamp(max=1 - 1e-12))
    return parent_g[:, None] - torch.clamp(v, min=0) - torch.log1p(torch.exp(-v.abs()))


def beam_steps(engine: Any, requests: list[RowRequest], out: list[Completion]) -> Iterator[list[Any]]:
    """Run each row as a beam search, yielding (no deltas) after every forward pass; fills
    ``out`` with each row's completions in row order (``width`` per row, best first)."""
    for r in requests:
        found = yield from _search(engine, r)
        for c in found:
            c.prompt_index = r.prompt_index
        out.extend(found)


def stochastic_beam_search(engine: Any, req: RowRequest) -> list[Completion]:
    """One beam search (``req.params.beams``) run to the end; see :func:`beam_steps`."""
    out: list[Completion] = []
    for _ in beam_steps(engine, [req], out):
        pass
    return out


@torch.inference_mode()
def _search(engine: Any, req: RowRequest) -> Generator[list[Any], None, list[Completion]]:
    """``width`` samples without replacement of ``req``, best perturbed value first.

    ``req.params`` is a ``SamplingParams`` whose ``beams`` is set (read by
    :meth:`BeamParams.from_sampling`); β 0 = white Gumbel noise, else colored with that
    exponent. ``req.islands``: a grammar every beam follows and/or tools any beam may call
    (each beam has its own call history). ``engine`` is read for its backend, tokenizer,
    prefix cache and context length.
    """
    bp = BeamParams.from_sampling(req.params)
    width, beta, seed, ids = bp.width, bp.colored, req.seed, req.prompt_ids
    backend = engine.backend
    P, V = len(ids), backend.vocab_size
    cache = backend.new_cache(1, P + bp.max_tokens + IslandBatch.reserve(req.islands) + 1)
    last, reused = engine.prefill(list(ids), cache, reuse=req.reuse)  # the prompt, from the prefix cache where it can
    logits = last[None]  # (k, V): one row per live beam, in beam order
    usage = {"decoded": 0, "prefilled": P - reused}
    yield []
    gen = torch.Generator().manual_seed(derive_seed(seed, "beams"))
    noise = MixedNoise(beta, width * V, [(seed, 1.0)], "beams", 4096) if beta is not None else None
    step = RowStep([req], engine.tokenizer, V, max_positions=engine.max_positions)  # its rows: the live beams
    beams = [_Beam(0.0, 0.0)]
    for _ in range(bp.max_tokens):
        live = [b for b in beams if b.done is None]
        if not live:
            break
        k = len(live)
        # each live beam's step distribution: its grammar's mask, then the sampler's processing
        _, processed = step.process(logits)
        step_logp = torch.log_softmax(processed.logits.double(), -1)  # (k, V)
        phi = torch.tensor([b.phi for b in live], dtype=torch.float64)[:, None] + step_logp
        g_phi = phi + _gumbel(noise, (width, V), gen)[:k]
        g = _shift(torch.tensor([b.g for b in live], dtype=torch.float64), g_phi)
        g = torch.where(torch.isfinite(phi), g, -math.inf)
        # candidates: finished beams keep their G; live beams' children compete with them
        flat = g.flatten()
        top = torch.topk(flat, min(width, int(torch.isfinite(flat).sum()))).indices.tolist()
        cands: list[tuple[float, int, _Beam | None]] = [(float(flat[t]), t, None) for t in top]
        cands += [(b.g, -1, b) for b in beams if b.done is not None]
        cands.sort(key=lambda c: -c[0])
        chosen = cands[:width]
        children = [divmod(t, V) for _, t, b in chosen if b is None]  # (parent row, token)
        if not children:
            beams = [b for _, _, b in chosen if b is not None]
            break
        # the children: copies of their parents' rows that take their tokens as any row does
        parents, tokens = [p for p, _ in children], [t for _, t in children]
        step.fork(parents)
        parent_logits = logits[parents]
        positions = [P + len(r.tokens) for r in step.rows]  # where each child's token goes
        step.take(tokens, *step.logprobs(parent_logits, torch.tensor(tokens)), positions)
        step.record(torch.tensor(tokens))
        injected = step.inject(parent_logits, positions)
        rows, beams = iter(step.rows), []
        for value, t, b in chosen:  # the new beams, in candidate order
            if b is None:
                row, (p, tok) = next(rows), divmod(t, V)
                beams.append(_Beam(float(phi[p, tok]), value, row if row.finish_reason is not None else None))
            else:
                beams.append(b)
        keep = step.running()
        if not keep:
            break
        # the cache follows the live children's parents; their tokens (and injected results) run
        step.select(keep)
        cache = cache.select(torch.tensor([parents[i] for i in keep]))
        lengths = torch.tensor([positions[i] for i in keep])
        next_tokens = [injected[i][0] if i in injected else tokens[i] for i in keep]
        logits = backend.forward(torch.tensor(next_tokens)[:, None], cache, lengths)
        usage["decoded"] += len(next_tokens)
        results = {n: injected[i][1] for n, i in enumerate(keep) if i in injected}
        if results:  # a beam that completed a call: its result, through the model for that beam only
            room = {n: bp.max_tokens - step.rows[n].drawn for n in results}
            cache, logits, _ = forward_injected(backend, cache, logits, lengths + 1, results, room)
            for got in results.values():
                usage["decoded" if len(got) == 1 else "prefilled"] += len(got)
        yield []
    running = iter(step.rows)
    found = [(b, b.done if b.done is not None else next(running)) for b in beams]
    found.sort(key=lambda f: -f[0].g)
    out = []
    for i, (b, row) in enumerate(found):
        c = row.completion()
        c.index, c.cached_tokens, c.usage = i, reused, dict(usage)
        c.tag = {"perturbed_logprob": b.g, "sequence_logprob": b.phi}
        out.append(c)
    return out
