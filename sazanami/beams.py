"""Stochastic beam search by the Gumbel-top-k trick (Kool, van Hoof & Welling, 2019).

k sequences sampled *without replacement* from the model's (processed) sequence
distribution. Every partial sequence y carries its log-probability φ(y) and a
perturbed value G(y) ~ Gumbel(φ(y)) conditioned on its parent's: children get
G_φ ~ Gumbel(φ(y')) and are shifted so that their maximum equals the parent's G,

    G(y') = −log(exp(−G(y)) − exp(−Z) + exp(−G_φ(y'))),  Z = max over siblings G_φ,

and the k largest G are kept each step. The Gumbel noise is white, or colored:
made from colored Gaussian streams (one per beam slot × vocabulary entry)
through the normal CDF, so the marginals stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sazanami.engine import Completion, Engine, Prompt
from sazanami.fluctuation import Entry, MixedNoise, gumbel_from_normal
from sazanami.params import SamplingParams
from sazanami.sampling import truncate
from sazanami.seeds import derive_seed, fresh_seed


@dataclass
class _Beam:
    tokens: list[int]
    logprobs: list[float]
    phi: float
    g: float
    done: bool = False


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


@torch.inference_mode()
def stochastic_beam_search(
    engine: Engine,
    prompt: Prompt,
    params: SamplingParams,
    width: int = 4,
    beta: float | None = None,
    raw: bool = False,
) -> list[Completion]:
    """``width`` samples without replacement, best perturbed value first.

    ``beta`` None = white Gumbel noise; else colored with that exponent.
    Temperature and truncation of ``params`` shape each step's distribution.
    """
    backend = engine.backend
    seed = params.seed if params.seed is not None else fresh_seed()
    ids = engine.encode(prompt, raw)
    P, V = len(ids), backend.vocab_size
    cache = backend.new_cache(1, P + params.max_tokens + 1)
    logits = backend.forward(torch.tensor([ids]), cache, torch.zeros(1, dtype=torch.long))
    gen = torch.Generator().manual_seed(derive_seed(seed, "beams"))
    noise = MixedNoise(beta, width * V, [(seed, 1.0)], "beams", 4096) if beta is not None else None
    beams = [_Beam([], [], 0.0, 0.0)]
    temp = params.temperature if params.temperature > 0 else 1.0
    for _ in range(params.max_tokens):
        live = [i for i, b in enumerate(beams) if not b.done]
        if not live:
            break
        k = len(live)
        # logits hold one row per live beam, in order (finished beams are not run)
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
            beam = _Beam(
                parent.tokens + ([] if eos else [tok]),
                parent.logprobs + ([] if eos else [float(model_logp[row, tok])]),
                float(phi[row, tok]),
                value,
                done=eos or len(parent.tokens) + 1 >= params.max_tokens,
            )
            new_beams.append(beam)
            if not beam.done:
                parents.append(row)
                next_tokens.append(tok)
        beams = new_beams
        if not parents:
            break
        # reorder the cache to the surviving live beams, then run their new tokens
        cache = cache.select(torch.tensor(parents))
        lengths = torch.tensor([P + len(b.tokens) - 1 for b in beams if not b.done])
        logits = backend.forward(torch.tensor(next_tokens)[:, None], cache, lengths)
    beams.sort(key=lambda b: -b.g)
    return [
        Completion(
            text=engine.tokenizer.decode(b.tokens),
            token_ids=b.tokens,
            logprobs=b.logprobs,
            seed=seed,
            finish_reason="stop" if b.done and len(b.tokens) < params.max_tokens else "length",
            prompt_tokens=P,
            index=i,
            tag={"perturbed_logprob": b.g, "sequence_logprob": b.phi},
        )
        for i, b in enumerate(beams)
    ]


def beams_from_entry(entry: Entry) -> tuple[int, float | None]:
    """(width, β or None for white) from a fluctuation ``beams`` entry."""
    return entry.width, (entry.beta if entry.beta > 0 else None)
