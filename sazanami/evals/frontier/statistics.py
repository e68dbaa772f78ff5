"""The frontier's statistics: per-prompt metrics, paired bootstrap intervals, gains over a curve.

Metrics are averaged over prompts, with percentile bootstrap intervals that resample prompts
(one seeded set of resamples shared by all settings, so comparisons are paired).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sazanami.errors import ParameterError

if TYPE_CHECKING:
    from sazanami.measure.embeddings import TextEncoder

#: The per-prompt metrics, in CSV order. ``nll`` is log-perplexity (the frontier's x axis).
METRICS = ("semantic_diversity", "distinct_2", "self_bleu", "nll", "gap", "tokens")


def prompt_metrics(records: list[dict[str, Any]], embedder: TextEncoder | None = None) -> dict[str, float]:
    """The per-prompt metrics (:data:`METRICS`) of one prompt's samples under one setting.

    Token statistics are pooled over the samples; samples with no token (end-of-sequence
    first) count for diversity only. nan where a metric is undefined.
    """
    from sazanami.measure import metrics

    texts = [r["text"] for r in records]
    lp = [x for r in records for x in r["logprobs"]]
    ent = [x for r in records for x in r["entropies"]]
    out = {
        "semantic_diversity": metrics.semantic_diversity(texts, embedder) if len(texts) > 1 else math.nan,
        "distinct_2": metrics.distinct_n(texts, 2),
        "self_bleu": metrics.self_bleu(texts) if len(texts) > 1 else math.nan,
        "nll": math.log(metrics.perplexity(lp)) if lp else math.nan,
        "gap": metrics.surprisal_entropy_gap(lp, ent) if lp else math.nan,
        "tokens": sum(len(r["logprobs"]) for r in records) / len(records),
    }
    return out


def resample_indices(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of ``n`` items: an (n_boot, n) array of indices, from a seeded Generator."""
    if n < 1:
        raise ParameterError("n", f"n must be in [1, inf), got {n}")
    if n_boot < 1:
        raise ParameterError("n_boot", f"n_boot must be in [1, inf), got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    with warnings.catch_warnings():
        # An all-nan slice (a metric undefined on every resampled prompt) warns; nan is the answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, idx: np.ndarray | None = None, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-prompt ``values`` with a percentile bootstrap interval: ``(mean, lo, hi)``.

    ``idx`` are resamples from :func:`resample_indices` (drawn with ``seed`` when None);
    pass the same ``idx`` to every setting to pair the comparisons. nan values (an
    undefined metric for one prompt) are left out of each mean.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ParameterError("values", f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not 0 < level < 1:
        raise ParameterError("level", f"level must be in (0, 1), got {level}")
    idx = resample_indices(x.size, seed=seed) if idx is None else idx
    lo, hi = _interval(nanmean(x[idx], axis=1), level)
    return float(nanmean(x)), lo, hi


def interpolate_curve(curve_x: Sequence[float] | np.ndarray, curve_y: Sequence[float] | np.ndarray, x: float) -> float:
    """The piecewise-linear curve through (curve_x, curve_y), sorted by x, evaluated at ``x``.

    nan outside [min(curve_x), max(curve_x)] (no extrapolation) or with fewer than 2 points.
    """
    cx, cy = np.asarray(curve_x, dtype=float), np.asarray(curve_y, dtype=float)
    keep = np.isfinite(cx) & np.isfinite(cy)
    cx, cy = cx[keep], cy[keep]
    if cx.size < 2 or not math.isfinite(x) or x < cx.min() or x > cx.max():
        return math.nan
    order = np.argsort(cx, kind="stable")
    return float(np.interp(x, cx[order], cy[order]))


def frontier_gain(
    curve_x: np.ndarray,
    curve_y: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Gain of a setting over a reference curve at equal x: ``(gain, lo, hi)``.

    ``curve_x``, ``curve_y``: (J, P) per-prompt values of the J reference settings (here
    log-perplexity and semantic diversity of the temperature sweep); ``x``, ``y``: (P,) those
    of the setting. gain = mean(y) − curve(mean(x)), the curve through the J prompt-means
    interpolated by :func:`interpolate_curve`. The interval resamples prompts (``idx``) and
    recomputes both the curve and the setting's means each time; resamples whose x falls
    outside the curve are left out. nan when mean(x) lies outside the curve.
    """
    cx, cy = np.asarray(curve_x, dtype=float), np.asarray(curve_y, dtype=float)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if cx.ndim != 2 or cx.shape != cy.shape:
        raise ParameterError(
            "curve_x", f"curve_x and curve_y must be (J, P) arrays of one shape, got {cx.shape} and {cy.shape}"
        )
    if x.shape != (cx.shape[1],) or y.shape != x.shape:
        raise ParameterError("x", f"x and y must have shape ({cx.shape[1]},), got {x.shape} and {y.shape}")
    point = float(nanmean(y)) - interpolate_curve(nanmean(cx, 1), nanmean(cy, 1), float(nanmean(x)))
    if not math.isfinite(point):
        return math.nan, math.nan, math.nan
    idx = resample_indices(x.size, seed=seed) if idx is None else idx
    bx, by = nanmean(x[idx], 1), nanmean(y[idx], 1)  # (n_boot,)
    bcx, bcy = nanmean(cx[:, idx], 2), nanmean(cy[:, idx], 2)  # (J, n_boot)
    reps = np.array([by[b] - interpolate_curve(bcx[:, b], bcy[:, b], bx[b]) for b in range(idx.shape[0])])
    lo, hi = _interval(reps, level)
    return point, lo, hi
