"""Stochastic beam search by the Gumbel-top-k trick (Kool, van Hoof & Welling, 2019).

k sequences sampled *without replacement* from the model's (processed) sequence
distribution. Every partial sequence y carries its log-probability φ(y) and a
perturbed value G(y) ~ Gumbel(φ(y)) conditioned on its parent's: children get
G_φ ~ Gumbel(φ(y')) and are shifted so that their maximum equals the parent's G,

    G(y') = −log(exp(−G(y)) − exp(−Z) + exp(−G_φ(y'))),  Z = max over siblings G_φ,

and the k largest G are kept each step. The Gumbel noise is white, or colored:
made from colored Gaussian streams (one per beam slot × vocabulary entry)
through the normal CDF, so the marginals stay exact.

Islands work per beam: a grammar masks each beam's logits before its children are
scored (a child forks its parent's matcher), and a call a beam completes is run and
its result injected into that beam only (the result's tokens have probability 1:
they change no beam's φ or G).

The engine runs it: a :class:`~sazanami.rows.RowRequest` whose ``params.beams`` is set
(:class:`~sazanami.beam_params.BeamParams`) is one beam search, and
:meth:`Engine.steps <sazanami.engine.Engine.steps>` hands such rows to :func:`beam_steps`,
so beams go wherever engine calls go (the server's batcher too). Each completion reports
the search's token usage (``Completion.usage``).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from sazanami.fluctuation import MixedNoise, gumbel_from_normal
from sazanami.inject import forward_injected
from sazanami.islands.constraints import ConstraintBatch
from sazanami.islands.runtime import IslandBatch, _matcher
from sazanami.rows import Completion, RowRequest, Span, injected_tokens
from sazanami.sampling import truncate
from sazanami.seeds import derive_seed


@dataclass
class _Beam:
    tokens: list[int]
    logprobs: list[float]
    phi: float
    g: float
    done: bool = False
    matcher: Any = None
    """The beam's grammar state (llguidance), None without a grammar."""
    spans: list[Span] = field(default_factory=list)
    """Injected tool results, as in ``Completion.spans``."""

    @property
    def drawn(self) -> int:
        return len(self.tokens) - injected_tokens(self.spans)


def _child(parent: _Beam, tok: int, logprob: float, phi: float, g: float, eos: bool, max_tokens: int) -> _Beam:
    """``parent`` extended by ``tok`` (nothing on end-of-sequence); a grammar it completes ends it."""
    matcher = parent.matcher
    done = eos or parent.drawn + 1 >= max_tokens
    if matcher is not None and not eos:
        matcher = matcher.deep_copy()
        matcher.consume_token(tok)
        done = done or matcher.is_stopped() or matcher.is_error()
    return _Beam(
        parent.tokens + ([] if eos else [tok]),
        parent.logprobs + ([] if eos else [logprob]),
        phi,
        g,
        done,
        matcher,
        list(parent.spans),
    )


def _run_call(beam: _Beam, islands: Any, tokenizer: Any) -> list[int]:
    """Run the call ``beam``'s text just completed, if any, and append its result; the injected ids."""
    if beam.done or len(beam.spans) > islands.max_calls:
        return []
    text = tokenizer.decode(beam.tokens)
    call = islands.watcher_after(beam.spans).find(text)
    if call is None:
        return []
    ids, span = islands.answer_at_end(call, tokenizer, beam.tokens, text, islands.calls_made + len(beam.spans))
    beam.tokens = beam.tokens + ids
    beam.logprobs = beam.logprobs + [0.0] * len(ids)
    beam.spans.append(span)  # type: ignore[arg-type]
    return ids


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

    ``beams.beta`` 0 = white Gumbel noise; else colored with that exponent. Temperature and
    truncation of ``req.params`` shape each step's distribution. ``req.islands``: a grammar
    every beam follows and/or tools any beam may call (each beam has its own call history).
    ``engine`` is read for its backend, tokenizer and context length.
    """
    params, islands, seed, ids = req.params, req.islands, req.seed, req.prompt_ids
    width, beta = params.beams.width, params.beams.colored
    backend = engine.backend
    P, V = len(ids), backend.vocab_size
    cache = backend.new_cache(1, P + params.max_tokens + IslandBatch.reserve(islands) + 1)
    last, reused = engine.prefill(list(ids), cache, reuse=req.reuse)  # the prompt, from the prefix cache where it can
    logits = last[None]  # (1, V)
    usage = {"decoded": 0, "prefilled": P - reused}
    yield []
    gen = torch.Generator().manual_seed(derive_seed(seed, "beams"))
    noise = MixedNoise(beta, width * V, [(seed, 1.0)], "beams", 4096) if beta is not None else None
    beams = [_Beam([], [], 0.0, 0.0, matcher=_matcher(islands, engine.tokenizer, V))]
    tools = islands is not None and islands.has_tools
    grammar = islands is not None and islands.constraint is not None
    temp = params.temperature if params.temperature > 0 else 1.0
    for _ in range(params.max_tokens):
        live = [i for i, b in enumerate(beams) if not b.done]
        if not live:
            break
        k = len(live)
        # logits hold one row per live beam, in order (finished beams are not run)
        if grammar:  # −inf outside each beam's grammar, before anything else
            logits = ConstraintBatch([beams[i].matcher for i in live], V).mask(logits)
        x = logits / temp  # (k, V)
        x = truncate(
            x,
            torch.full((k,), params.top_k),
            torch.full((k,), params.top_p),
            torch.full((k,), params.min_p),
            torch.full((k,), params.typical_p),
        )
        step_logp = torch.log_softmax(x.double(), -1)  # processed distribution
        model_logp = torch.log_softmax(logits.double(), -1)
        phi = torch.tensor([beams[i].phi for i in live], dtype=torch.float64)[:, None] + step_logp
        g_phi = phi + _gumbel(noise, (width, V), gen)[:k]
        g = _shift(torch.tensor([beams[i].g for i in live], dtype=torch.float64), g_phi)
        g = torch.where(torch.isfinite(phi), g, -math.inf)
        # candidates: finished beams keep their G; live beams' children compete with them
        done = [b for b in beams if b.done]
        flat = g.flatten()
        top = torch.topk(flat, min(width, int(torch.isfinite(flat).sum()))).indices.tolist()
        cands = [(float(flat[t]), "child", t) for t in top] + [(b.g, "done", b) for b in done]
        cands.sort(key=lambda c: -c[0])
        new_beams, parents, next_tokens = [], [], []
        for value, kind, item in cands[:width]:
            if kind == "done":
                new_beams.append(item)
                continue
            row, tok = divmod(item, V)
            parent = beams[live[row]]
            eos = tok in engine.tokenizer.eos_token_ids and not params.ignore_eos
            logprob = float(model_logp[row, tok])
            beam = _child(parent, tok, logprob, float(phi[row, tok]), value, eos, params.max_tokens)
            beam.done = beam.done or P + len(parent.tokens) >= engine.max_positions  # the context is full
            new_beams.append(beam)
            if not beam.done:
                parents.append(row)
                next_tokens.append(tok)
        beams = new_beams
        if not parents:
            break
        # reorder the cache to the surviving live beams, then run their new tokens
        cache = cache.select(torch.tensor(parents))
        running = [b for b in beams if not b.done]
        lengths = torch.tensor([P + len(b.tokens) - 1 for b in running])
        logits = backend.forward(torch.tensor(next_tokens)[:, None], cache, lengths)
        usage["decoded"] += len(next_tokens)
        if tools:  # a beam that completed a call gets its result, through the model for that beam only
            injected = {i: got for i, b in enumerate(running) if (got := _run_call(b, islands, engine.tokenizer))}
            for i in [i for i in injected if P + len(running[i].tokens) + 1 >= engine.max_positions]:
                running[i].done = True  # its result does not fit the context: it ends here
                del injected[i]
            if injected:
                room = {i: params.max_tokens - running[i].drawn for i in injected}
                cache, logits, _ = forward_injected(backend, cache, logits, lengths + 1, injected, room)
                for got in injected.values():
                    usage["decoded" if len(got) == 1 else "prefilled"] += len(got)
            going = [i for i, b in enumerate(running) if not b.done]
            if len(going) < len(running):  # drop the rows of beams that just ended
                cache, logits = cache.select(torch.tensor(going, dtype=torch.long)), logits[going]
        yield []
    beams.sort(key=lambda b: -b.g)
    return [
        Completion(
            text=engine.tokenizer.decode(b.tokens),
            token_ids=b.tokens,
            logprobs=b.logprobs,
            seed=seed,
            finish_reason="length"
            if b.drawn >= params.max_tokens or P + len(b.tokens) >= engine.max_positions
            else "stop",
            prompt_tokens=P,
            index=i,
            tag={"perturbed_logprob": b.g, "sequence_logprob": b.phi},
            spans=b.spans,
            cached_tokens=reused,
            usage=dict(usage),
        )
        for i, b in enumerate(beams)
    ]

