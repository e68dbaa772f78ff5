"""The per-step sampler: from a batch of logits to one token per row.

Pipeline, applied to float32 logits (B, V) of the rows still running:

0. logit bias — OpenAI's ``logit_bias`` added, before everything else;
1. penalties — repetition (÷/× on seen tokens), presence and frequency
   (OpenAI semantics, over generated tokens); then DRY (sequence repetition,
   llama.cpp/koboldcpp semantics, over the prompt and generated tokens);
2. logit fluctuation — colored noise added, σ in units of each row's logit std;
3. temperature — T0, or dynamic temperature (llama.cpp's entropy rule), times a
   fluctuating factor exp(σ·x_t) clipped to [T_min, T_max];
4. truncation — top-nσ → top-k → top-p → min-p → typical → XTC; or mirostat v2
   instead of them (XTC acts on the probabilities left by the steps before it);
5. draw — greedy when T = 0; else inverse-CDF with the row's own uniform, or
   Gumbel-max with colored Gumbel noise (``draw`` fluctuation).

Each row has its own seed and generator, so its random numbers do not depend on
what else shares the batch. No step modifies its input logits in place.

:class:`SamplerBatch` splits the pipeline in three: :meth:`~SamplerBatch.process` (steps 0-4,
the distribution), :meth:`~SamplerBatch.draw` (step 5) and :meth:`~SamplerBatch.record` (what
the rows took: penalty counts, DRY's context, mirostat's μ). The row step
(:mod:`sazanami.engine.decode_step`) calls them in that order; stochastic beams call ``process`` and
draw their own Gumbel-top-k.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from sazanami.errors import ParameterError
from sazanami.noise.fluctuation import FluctuationBatch
from sazanami.sampling.rows import RowRequest
from sazanami.seeds import derive_seed

NEG_INF = float("-inf")


def apply_penalties(
    logits: torch.Tensor,
    counts: torch.Tensor,
    seen: torch.Tensor,
    repetition: torch.Tensor,
    presence: torch.Tensor,
    frequency: torch.Tensor,
) -> torch.Tensor:
    """Step 1. ``counts`` (B, V) of generated tokens, ``seen`` (B, V) bool incl. the prompt."""
    rep = repetition[:, None]
    penalised = torch.where(logits > 0, logits / rep, logits * rep)
    out = torch.where(seen, penalised, logits)
    return out - presence[:, None] * (counts > 0) - frequency[:, None] * counts


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Step 0: logits (B, V) + bias (B, V) (OpenAI's ``logit_bias``, zero where unset)."""
    return logits + bias


def dry_penalties(
    context: Sequence[int],
    breakers: frozenset[int],
    multiplier: float,
    base: float,
    allowed_length: int,
    last_n: int = -1,
) -> dict[int, float]:
    """DRY: the penalty of each token that would extend a repeat of the context's tail.

    For each earlier occurrence of the context's last n tokens (n ≥ ``allowed_length``),
    the token that followed it gets ``multiplier · base^(n − allowed_length)`` (the longest
    n per token). Repeats never extend across a sequence breaker, and breakers themselves
    are not penalised (llama.cpp/koboldcpp semantics). ``last_n``: tokens scanned (-1 all).
    """
    ctx = list(context[-last_n:]) if last_n > 0 else list(context)
    n = len(ctx)
    if multiplier == 0 or last_n == 0 or n < 2:
        return {}
    limit = 0  # the tail back to the last breaker: no repeat is longer
    while limit < n and ctx[n - 1 - limit] not in breakers:
        limit += 1
    if limit < allowed_length:
        return {}
    longest: dict[int, int] = {}
    for i in range(n - 1):  # i: the end of an earlier occurrence of the tail
        k = 0
        while k < limit and k <= i and ctx[i - k] == ctx[n - 1 - k]:
            k += 1
        if k >= allowed_length:
            t = ctx[i + 1]
            longest[t] = max(longest.get(t, 0), k)
    max_exp = int(88.7228391 / math.log(base)) if base > 1.000001 else 0  # keeps base^e finite in float32
    return {
        t: multiplier * base ** (min(k - allowed_length, max_exp) if max_exp else k - allowed_length)
        for t, k in longest.items()
        if t not in breakers
    }


@lru_cache(maxsize=8)
def breaker_tokens(tokenizer: Any, breakers: tuple[str, ...]) -> frozenset[int]:
    """Token ids whose text contains one of ``breakers`` (DRY's sequence breakers)."""
    out = set()
    for t in range(tokenizer.vocab_size):
        text = tokenizer.token_text(t)
        if any(b in text for b in breakers):
            out.add(t)
    return frozenset(out)


def top_n_sigma(logits: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Step 4a: keep tokens with logit ≥ max − n·σ (σ: std of the row's finite logits); n = 0 keeps all.

    Scaling by a temperature scales max and σ alike, so the kept set does not depend on it.
    """
    finite = torch.isfinite(logits)
    count = finite.sum(-1).clamp(min=1)
    mean = torch.where(finite, logits, 0.0).sum(-1) / count
    std = (torch.where(finite, logits - mean[:, None], 0.0).pow(2).sum(-1) / count).sqrt()
    low = logits.max(-1).values - n * std  # (B,)
    return logits.masked_fill((logits < low[:, None]) & (n > 0)[:, None], NEG_INF)


def xtc(logits: torch.Tensor, chance: torch.Tensor, probability: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Step 4f, XTC (exclude top choices): on rows where ``chance`` < ``probability``, remove every
    token with p ≥ ``threshold`` except the least likely of them (when at least two are).

    ``chance`` (B,) is the row's own uniform draw. Can change the argmax; keeps no state.
    """
    probs = logits.softmax(-1)
    top = probs >= threshold[:, None]
    act = (chance < probability) & (top.sum(-1) >= 2)
    if not bool(act.any()):
        return logits
    keep = torch.where(top, probs, torch.inf).argmin(-1)  # the least likely top choice stays
    drop = top & act[:, None]
    drop[torch.arange(len(keep)), keep] = False
    return logits.masked_fill(drop, NEG_INF)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of softmax(logits) per row: (B, V) → (B,)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1)


def dynamic_temperature(
    logits: torch.Tensor, base: torch.Tensor, spread: torch.Tensor, exponent: torch.Tensor
) -> torch.Tensor:
    """llama.cpp's entropy-based temperature: T ∈ [T0−r, T0+r] by normalised entropy.

    T = T_min + (T_max − T_min) · (H / log N)^exponent, N the candidates with finite logits.
    """
    n = torch.isfinite(logits).sum(-1).clamp(min=2).to(logits.dtype)
    norm = (entropy(logits) / n.log()).clamp(0, 1)
    low = (base - spread).clamp(min=0.0)
    high = base + spread
    return low + (high - low) * norm.pow(exponent)


def truncate(
    logits: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    typical_p: torch.Tensor,
) -> torch.Tensor:
    """Step 4: mask to -inf what top-k, top-p, min-p and typical drop (per-row values).

    The most likely token always survives.
    """
    out = logits
    V = logits.shape[-1]
    if bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
        kth = torch.topk(out, int(k.max()), dim=-1).values.gather(-1, (k - 1)[:, None])  # (B, 1)
        out = out.masked_fill(out < kth, NEG_INF)
    if bool((top_p < 1).any()):
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p[:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, NEG_INF)
    if bool((min_p > 0).any()):
        probs = out.softmax(-1)
        threshold = min_p[:, None] * probs.max(-1, keepdim=True).values
        out = out.masked_fill(probs < threshold, NEG_INF)
    if bool((typical_p < 1).any()):
        logp = out.log_softmax(-1)
        ent = -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1, keepdim=True)
        deviation = torch.where(torch.isfinite(logp), (-logp - ent).abs(), torch.inf)
        dev_sorted, order = deviation.sort(dim=-1)
        probs_sorted = logp.exp().gather(-1, order)
        mass_before = probs_sorted.cumsum(-1) - probs_sorted
        drop_sorted = (mass_before >= typical_p[:, None]) & (typical_p[:, None] < 1)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, NEG_INF)
    return out


def mirostat_v2(logits: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mirostat v2 truncation: drop tokens whose surprise −log2 p exceeds ``mu`` (B,)."""
    logp = logits.log_softmax(-1)
    surprise = -logp / math.log(2)
    keep = surprise <= mu[:, None]
    keep |= logp == logp.max(-1, keepdim=True).values  # never empty
    return logits.masked_fill(~keep, NEG_INF)


def draw_inverse_cdf(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Exact categorical draw from softmax(logits) with one uniform per row: (B, V), (B,) → (B,)."""
    probs = logits.softmax(-1)
    cdf = probs.cumsum(-1)
    u = uniforms[:, None] * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp(max=logits.shape[-1] - 1)
    # A zero-probability token can only be hit through float round-off: step back to a live one.
    dead = probs.gather(-1, idx) == 0
    if bool(dead.any()):
        idx = torch.where(dead, probs.argmax(-1, keepdim=True), idx)
    return idx.squeeze(-1)


@dataclass
class Processed:
    """What :meth:`SamplerBatch.process` hands to the draw: steps 0-4 applied."""

    logits: torch.Tensor
    """(B, V) the distribution each row draws from (processed, temperature-scaled, truncated)."""
    temperature: torch.Tensor
    """(B,) each row's temperature this step (fluctuating, dynamic); 0 for greedy rows."""
    greedy: torch.Tensor
    """(B,) bool: rows that take the argmax."""
    mirostat: torch.Tensor
    """(B,) bool: rows truncated by mirostat instead of top-k/p, min-p, typical, XTC."""


class SamplerBatch:
    """Per-row sampler state for the rows of one engine batch.

    Holds per-row parameter tensors, generators, penalty counts, mirostat μ and
    fluctuation states; ``select`` keeps a subset of rows when others finish.
    """

    def __init__(self, rows: list[RowRequest], vocab_size: int, hidden_size: int = 0, tokenizer: Any = None) -> None:
        """``rows``: their params, seed, prompt ids (penalties, DRY) and noise mixture are read;
        ``tokenizer`` (optional) finds DRY's sequence-breaker tokens; without one, no token breaks."""
        self.rows = rows
        self.vocab_size = vocab_size
        B = len(rows)
        p = [r.params for r in rows]

        def col(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor([getattr(x, name) for x in p], dtype=dtype)

        self.temperature = col("temperature")
        self.top_k = col("top_k", torch.long)
        self.top_p = col("top_p")
        self.min_p = col("min_p")
        self.typical_p = col("typical_p")
        self.repetition = col("repetition_penalty")
        self.presence = col("presence_penalty")
        self.frequency = col("frequency_penalty")
        self.dyn_range = col("dynatemp_range")
        self.dyn_exp = col("dynatemp_exponent")
        self.miro_tau = col("mirostat_tau")
        self.miro_eta = col("mirostat_eta")
        self.mu = 2 * self.miro_tau.clone()
        self.generators = [torch.Generator().manual_seed(derive_seed(r.seed, "draw")) for r in rows]
        self.use_penalties = any(x.repetition_penalty != 1 or x.presence_penalty or x.frequency_penalty for x in p)
        self.counts = torch.zeros(B, vocab_size) if self.use_penalties else None
        self.seen = torch.zeros(B, vocab_size, dtype=torch.bool) if self.use_penalties else None
        if self.use_penalties:
            for b, r in enumerate(rows):
                ids = torch.tensor([t for t in r.prompt_ids if t < vocab_size], dtype=torch.long)
                self.seen[b, ids] = True
        # logit bias (B, V), only when a row has one
        self.bias = None
        if any(x.logit_bias for x in p):
            self.bias = torch.zeros(B, vocab_size)
            for b, x in enumerate(p):
                for t, v in x.logit_bias or ():
                    if t >= vocab_size:
                        raise ParameterError(
                            "logit_bias", f"logit_bias token ids must be in [0, {vocab_size - 1}], got {t}"
                        )
                    self.bias[b, t] = v
        self.n_sigma = col("top_n_sigma")
        self.xtc_p = col("xtc_probability")
        self.xtc_threshold = col("xtc_threshold")
        # XTC's coin: its own generator per row (derived seed), so the draw's uniforms are unchanged
        self.use_xtc = any(x.xtc_probability > 0 for x in p)
        self.xtc_gens = (
            [torch.Generator().manual_seed(derive_seed(r.seed, "xtc")) for r in rows] if self.use_xtc else []
        )
        # DRY: each row's context (prompt + generated) and breaker tokens
        self.use_dry = any(x.dry_multiplier > 0 and x.dry_penalty_last_n != 0 for x in p)
        self.history = [list(r.prompt_ids) for r in rows] if self.use_dry else None
        self.breakers = [
            breaker_tokens(tokenizer, x.dry_sequence_breakers)
            if tokenizer is not None and x.dry_multiplier > 0
            else frozenset()
            for x in p
        ]
        self.live: torch.Tensor | None = None
        """(B,) bool inside :meth:`only`: the rows that step; None: all."""
        self.fluct = FluctuationBatch(  # params: version-2 logit noise's candidates follow each row's truncation
            [x.fluctuation for x in p], [r.noise or [(r.seed, 1.0)] for r in rows], vocab_size, hidden_size, params=p
        )

    def __len__(self) -> int:
        return len(self.rows)

    @contextmanager
    def only(self, live: torch.Tensor) -> Iterator[None]:
        """Within: only rows where ``live`` (B,) is True step their state — the draw's and XTC's
        generators, the noise streams, the penalty counts, DRY's context, mirostat's μ; the
        others are computed and left as they were (speculative verification: a row whose draft
        was rejected waits while the others go on)."""
        self.live = live
        try:
            with self.fluct.only(live):
                yield
        finally:
            self.live = None

    def _uniforms(self, generators: list[torch.Generator]) -> torch.Tensor:
        """One uniform per row (B,) from its generator; rows outside ``live`` get 0 and keep theirs."""
        live = self.live.tolist() if self.live is not None else [True] * len(generators)
        return torch.stack([torch.rand((), generator=g) if on else torch.zeros(()) for g, on in zip(generators, live)])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (indices into the current rows, in order).

        An index may repeat (a beam's children fork its row): the parameter tensors, penalty
        counts, mirostat's μ and DRY's context are copied per child. Noise streams and the
        generators (draw, XTC) cannot fork: a driver that forks refuses rows that use them."""
        idx = keep.tolist()
        self.rows = [self.rows[i] for i in idx]
        for name in (
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "typical_p",
            "repetition",
            "presence",
            "frequency",
            "dyn_range",
            "dyn_exp",
            "miro_tau",
            "miro_eta",
            "mu",
            "n_sigma",
            "xtc_p",
            "xtc_threshold",
        ):
            setattr(self, name, getattr(self, name)[keep])
        self.generators = [self.generators[i] for i in idx]
        self.xtc_gens = [self.xtc_gens[i] for i in idx] if self.use_xtc else []
        self.breakers = [self.breakers[i] for i in idx]
        if self.bias is not None:
            self.bias = self.bias[keep]
        if self.history is not None:
            self.history = [list(self.history[i]) for i in idx]
        self.fluct.select(keep)
        if self.counts is not None:
            self.counts = self.counts[keep]
            self.seen = self.seen[keep]

    def sample(
        self, logits: torch.Tensor, trace: bool = False, generated: list[list[int]] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Steps 0-5 on logits (B, V): :meth:`process`, :meth:`draw`, :meth:`record`; returns
        tokens (B,) and per-row trace columns (empty unless ``trace``).

        ``generated``: each row's output so far (with injected tokens), for DRY's context;
        by default the tokens this sampler drew.
        """
        processed = self.process(logits, generated)
        tokens = self.draw(processed)
        self.record(tokens, processed, generated)
        return tokens, self.trace_columns(logits, processed, tokens) if trace else {}

    def process(self, logits: torch.Tensor, generated: list[list[int]] | None = None) -> Processed:
        """Steps 0-4 on logits (B, V): the distribution each row draws from (a new tensor).

        Steps each row's noise streams once (logits, temperature) and XTC's coin; a driver
        with its own draw (stochastic beams' Gumbel-top-k) calls this alone.
        """
        x = logits
        # 0. logit bias
        if self.bias is not None:
            x = apply_logit_bias(x, self.bias)
        # 1. penalties, then DRY
        if self.counts is not None:
            x = apply_penalties(x, self.counts, self.seen, self.repetition, self.presence, self.frequency)
        if self.history is not None:
            x = self._dry(x, generated)
        # 2. logit fluctuation (each row's own noise streams, all rows in one step)
        x = self.fluct.perturb_logits(x)
        # 3. temperature
        temp = self.temperature
        if bool((self.dyn_range > 0).any()):
            dyn = dynamic_temperature(x, temp, self.dyn_range, self.dyn_exp)
            temp = torch.where(self.dyn_range > 0, dyn, temp)
        temp = self.fluct.temperature(temp)
        greedy = (temp <= 0) & (self.miro_tau <= 0)
        x = x / torch.where(temp > 0, temp, 1.0)[:, None]
        # 4. truncation (mirostat rows use mirostat instead)
        miro = self.miro_tau > 0
        if bool(miro.any()):
            x = torch.where(miro[:, None], mirostat_v2(x, self.mu), x)
        plain = ~miro
        if bool((self.n_sigma > 0).any()):
            x = top_n_sigma(x, torch.where(plain, self.n_sigma, 0.0))
        x = truncate(
            x,
            torch.where(plain, self.top_k, 0),
            torch.where(plain, self.top_p, 1.0),
            torch.where(plain, self.min_p, 0.0),
            torch.where(plain, self.typical_p, 1.0),
        )
        if self.use_xtc:
            chance = self._uniforms(self.xtc_gens)  # (B,), every step
            x = xtc(x, chance, torch.where(plain, self.xtc_p, 0.0), self.xtc_threshold)
        return Processed(x, temp, greedy, miro)

    def draw(self, processed: Processed) -> torch.Tensor:
        """Step 5: one token per row (B,) from :meth:`process`'s distribution.

        Greedy rows take the argmax; the others an inverse-CDF draw with the row's own
        uniform, or a colored draw (``draw`` fluctuation). Each row's generator steps once.
        """
        x = processed.logits
        uniforms = self._uniforms(self.generators)  # (B,): every row's generator steps
        plain = ~(processed.greedy | self.fluct.colored())  # rows the inverse-CDF draw decides
        if bool(plain.all()):
            tokens = draw_inverse_cdf(x, uniforms)
        else:  # each row's draw depends on its row alone: the others' are not computed
            tokens = torch.zeros(x.shape[0], dtype=torch.long)
            if bool(plain.any()):
                tokens[plain] = draw_inverse_cdf(x[plain], uniforms[plain])
        tokens = self.fluct.draw(x, tokens)  # colored draw on rows with one
        if bool(processed.greedy.any()):
            tokens = torch.where(processed.greedy, x.argmax(-1), tokens)
        return tokens

    def record(
        self, tokens: torch.Tensor, processed: Processed | None = None, generated: list[list[int]] | None = None
    ) -> None:
        """After the draw: the rows took ``tokens`` (B,); update mirostat's μ (from ``processed``,
        needed when a row uses mirostat), the penalty counts and DRY's context (unless the
        driver passes the rows' outputs as ``generated``)."""
        B = tokens.shape[0]
        live = self.live if self.live is not None else torch.ones(B, dtype=torch.bool)
        miro = (self.miro_tau > 0) & live
        if bool(miro.any()):  # mirostat v2 update: μ ← μ − η (surprise − τ)
            if processed is None:
                raise ValueError("mirostat rows need the processed logits to update μ")
            logp = processed.logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
            surprise = -logp / math.log(2)
            self.mu = torch.where(miro, self.mu - self.miro_eta * (surprise - self.miro_tau), self.mu)
        if self.counts is not None:
            rows = live.nonzero().squeeze(1)
            self.counts[rows, tokens[rows]] += 1
            self.seen[rows, tokens[rows]] = True
        if self.history is not None and generated is None:
            for h, t, on in zip(self.history, tokens.tolist(), live.tolist()):
                if on:
                    h.append(t)

    def trace_columns(self, logits: torch.Tensor, processed: Processed, tokens: torch.Tensor) -> dict[str, Any]:
        """Per-row trace values of this step: temperature, entropy of the raw logits, the drawn
        token's log-prob under the processed distribution, the noise values."""
        x = processed.logits
        return {
            "temperature": processed.temperature.tolist(),
            "entropy": entropy(logits).tolist(),
            "sampled_logprob": x.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1).tolist(),
            "noise": self.fluct.last_noise(),
        }

    def _dry(self, x: torch.Tensor, generated: list[list[int]] | None) -> torch.Tensor:
        """Subtract each DRY row's penalties (a Python scan of its context; rows without DRY skip)."""
        assert self.history is not None
        out = None
        for b, r in enumerate(self.rows):
            q = r.params
            if q.dry_multiplier == 0 or q.dry_penalty_last_n == 0:
                continue
            ctx = self.history[b] if generated is None else r.prompt_ids + generated[b]
            pen = dry_penalties(
                ctx, self.breakers[b], q.dry_multiplier, q.dry_base, q.dry_allowed_length, q.dry_penalty_last_n
            )
            pen = {t: v for t, v in pen.items() if t < x.shape[-1]}
            if pen:
                out = x.clone() if out is None else out
                ids = torch.tensor(list(pen), dtype=torch.long)
                out[b, ids] -= torch.tensor(list(pen.values()), dtype=x.dtype)
        return x if out is None else out

    def hidden_hook(self, num_layers: int, row: int | None = None) -> Any:
        """A backend hook adding each row's hidden/embedding noise, or None if no row has any.

        Noise enters generated positions only (the last position of each row): the shared
        prompt prefill stays shared. ``row`` makes a hook for a one-row forward of that row
        alone (the tokens a tool injected into it): its noise goes to batch row 0.
        """
        return self.fluct.hidden_hook(num_layers, row)
