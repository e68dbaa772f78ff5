"""The colored draws, batched: exact samples of softmax(logits) from colored Gaussian noise.

Two ways a colored stream picks a token (see :mod:`sazanami.noise.fluctuation`, entry ``draw``):

- *Gumbel-max*: argmax_v (logits_v + G(z_v)), G(z) = −log(−log Φ(z)), one stream per
  (row, token). The reference computes G in float64 for every token; :func:`gumbel_argmax`
  bounds which tokens can still win (and screens them in float32 when many can) and
  evaluates the float64 reference only on those, so it returns the reference's token
  (first index on exact ties) at a fraction of the cost.
- *Quantile*: the inverse CDF at u = Φ(z) over tokens sorted most likely first, one
  stream per row. The reference sorts the whole vocabulary; :func:`quantile_draw` sorts
  only the top k and falls back to the full sort for a row whose draw falls beyond them,
  lands on a tie, or lands within rounding distance of a bucket edge — so it returns the
  reference's token always.

Both functions take and return batches: logits (n, V), noise (n, V) or u (n,), tokens (n,).
"""

from __future__ import annotations

import math

import torch

__all__ = ["gumbel_argmax", "gumbel_from_normal", "quantile_draw"]

_SCREEN_MARGIN = 1e-3
"""Tokens whose float32 screened score is within this (× (1 + |best|)) of the best are re-scored
exactly; the screen is within 4e-6 of the reference (see ``_SCREEN_BAND``)."""

_QUANTILE_TOP = 64
"""Tokens sorted per row before the quantile draw falls back to sorting the whole vocabulary."""

_EDGE = 1e-10
"""Relative distance to a cumulative-probability edge below which the quantile draw re-checks
with the full sort: summing V probabilities in another order moves the total by < V·2^-53."""


def gumbel_from_normal(z: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel variates from N(0, 1) ones: −log(−log Φ(z)), in float64."""
    u = torch.special.ndtr(z.double()).clamp(1e-300, 1 - 1e-16)
    return -torch.log(-torch.log(u))


_SCREEN_BAND = (-7.0, 6.0)
"""z outside this band is always re-scored exactly: there float32's tail runs out of range and the
float64 reference's own rounding (1 − Q(z) for large z) moves G by more than the margin. Inside,
the screen is within 4e-6 of the reference (measured on a grid of 2·10^6 points)."""


def _gumbel_screen(z: torch.Tensor) -> torch.Tensor:
    """G(z) in float32 within 4e-6 of :func:`gumbel_from_normal` on ``_SCREEN_BAND``; +inf outside.

    −log Φ(z) is computed from the complementary tail for z > 0 (log1p of −Q(z)), where
    Φ(z) itself would round to 1.
    """
    zf = z.float()
    tail = torch.erfc(zf.abs() * math.sqrt(0.5)).mul_(0.5)  # Φ(−|z|)
    neg_log_phi = torch.where(zf > 0, -torch.log1p(-tail), -torch.log(tail))
    g = -torch.log(neg_log_phi)
    inside = (zf >= _SCREEN_BAND[0]) & (zf <= _SCREEN_BAND[1])
    return torch.where(inside, g, torch.full_like(g, math.inf))


def _row_argmax_first(rows: torch.Tensor, cols: torch.Tensor, score: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Per row, the smallest column among the entries holding the row's largest score."""
    top = torch.full((n,), -math.inf, dtype=score.dtype).scatter_reduce(0, rows, score, "amax")
    at_top = score == top[rows]
    first = torch.full((n,), width, dtype=torch.int64)
    return first.scatter_reduce(0, rows[at_top], cols[at_top], "amin")


def _below(x: torch.Tensor) -> torch.Tensor:
    """The largest float32 ≤ each float64 value of ``x`` (so a float32 compare stays conservative)."""
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, torch.full_like(y, -math.inf)), y)


def gumbel_argmax(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """argmax(logits.double() + gumbel_from_normal(z)) per row, without float64 over the whole vocabulary.

    logits, z: (n, V). Returns (n,) int64, identical to the float64 reference (first index on ties).

    1. A bound: G is increasing, so no token scores more than logit + G(max z). The exact score
       L of the most likely token is a lower bound on the winner's, so only tokens with
       logit ≥ L − G(max z) can win (a few hundred of 49,152 for a language model at T ≈ 1).
    2. If that still leaves many, a float32 screen of G (within 4e-6) narrows them further.
    3. The float64 reference on what is left.
    """
    n, width = logits.shape
    x = logits.float()
    lead = x.argmax(-1, keepdim=True)  # (n, 1)
    lower = logits.gather(-1, lead).double().squeeze(1) + gumbel_from_normal(z.gather(-1, lead)).squeeze(1)
    gmax = gumbel_from_normal(z.amax(-1))
    slack = 1e-9 * (1 + lower.abs() + gmax.abs())  # covers a last-ulp non-monotonicity of the reference's log
    cand = x >= _below(lower - gmax - slack)[:, None]
    rows, cols = cand.nonzero(as_tuple=True)  # row-major: columns ascending within a row
    if rows.numel() > 8 * n * 64:  # flat rows (high temperature): screen in float32 first
        screen = x[rows, cols] + _gumbel_screen(z[rows, cols])
        best = torch.full((n,), -math.inf).scatter_reduce(
            0, rows, torch.where(screen.isfinite(), screen, -math.inf), "amax"
        )
        keep = (screen >= best[rows] - _SCREEN_MARGIN * (1 + best[rows].abs())) | (screen == math.inf)
        keep |= ~best[rows].isfinite()
        rows, cols = rows[keep], cols[keep]
    exact = logits[rows, cols].double() + gumbel_from_normal(z[rows, cols])
    return _row_argmax_first(rows, cols, exact, n, width)


def _quantile_full(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The reference: sort every token, cumulative sum, search u · total. probs (n, V) float64."""
    sorted_p, order = probs.sort(-1, descending=True)
    target = (u * sorted_p.sum(-1))[:, None]
    idx = torch.searchsorted(sorted_p.cumsum(-1), target).squeeze(1)
    idx = torch.minimum(idx, (sorted_p > 0).sum(-1) - 1)
    return order.gather(-1, idx[:, None]).squeeze(1)


def quantile_draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token at quantile u (n,) float64 of softmax(logits) (n, V), most likely first.

    Identical to sorting the whole vocabulary (:func:`_quantile_full`); sorts only the top
    ``_QUANTILE_TOP`` tokens unless a row needs more.
    """
    probs = logits.double().softmax(-1)
    k = min(_QUANTILE_TOP, probs.shape[-1])
    top_p, top_i = probs.topk(k, -1)  # sorted, most likely first
    target = u * probs.sum(-1)  # the reference sums in sorted order: equal up to V·2^-53
    cum = top_p.cumsum(-1)  # a prefix of the reference's cumulative sum
    idx = torch.searchsorted(cum, target[:, None]).squeeze(1)
    positive = (probs > 0).sum(-1)
    idx = torch.minimum(idx, positive - 1)
    j = idx.clamp(max=k - 1)[:, None]
    chosen = top_p.gather(-1, j).squeeze(1)
    before = top_p.gather(-1, (j - 1).clamp(min=0)).squeeze(1)
    after = top_p.gather(-1, (j + 1).clamp(max=k - 1)).squeeze(1)
    edge_hi = cum.gather(-1, j).squeeze(1)
    edge_lo = torch.where(j.squeeze(1) > 0, cum.gather(-1, (j - 1).clamp(min=0)).squeeze(1), torch.zeros_like(target))
    tol = max(_EDGE, 4 * probs.shape[-1] * 2.0**-53) * probs.sum(-1)
    unsure = (
        (idx >= k - 1)  # beyond the sorted top (or at its last, whose neighbour is unknown)
        | ((j.squeeze(1) > 0) & (before == chosen))  # a tie: the full sort may order it otherwise
        | (after == chosen)
        | ((target - edge_lo).abs() <= tol)  # the total's rounding could move the draw over an edge
        | ((edge_hi - target).abs() <= tol)
    )
    out = top_i.gather(-1, j).squeeze(1)
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(1)
        out[rows] = _quantile_full(probs[rows], u[rows])
    return out
