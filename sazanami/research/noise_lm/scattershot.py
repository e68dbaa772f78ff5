"""Scattershot and hierarchical mean embeddings of a sentence, for retrieval.

For token keys [w, x, y, z] the seed builds ``L0 = mean(w,x), mean(x,y), mean(y,z)``, then
``L1`` from adjacent pairs of ``L0`` and so on to one vector, and keeps "whatever layer Lm
reproduces the output best". Kept here: the level with ``slots`` vectors (shorter sentences
are linearly resampled up to it), so every sentence gets the same shape and the order of
its parts survives. The seed writes ``mean()`` as ``abs(w-x)/2``; that is half the gap, not
a mean, so both are kept: level means and the mean absolute half-gap of each level.
Scattershot embeddings average random subsets of positions (drawn once, seeded, as
fractions of the length so sentences of any length share them).
"""

from __future__ import annotations

import numpy as np


def pyramid(keys: np.ndarray) -> list[np.ndarray]:
    """(n, dim) → [L_-1 = keys, L0, L1, ...], each level the means of adjacent pairs of the last."""
    levels = [keys]
    while len(levels[-1]) > 1:
        x = levels[-1]
        levels.append((x[:-1] + x[1:]) / 2)
    return levels


def level(keys: np.ndarray, slots: int) -> np.ndarray:
    """The pyramid level with ``slots`` vectors, (slots, dim); short inputs are resampled up."""
    if len(keys) >= slots:
        return pyramid(keys)[len(keys) - slots]
    at = np.linspace(0, len(keys) - 1, slots)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, len(keys) - 1)
    frac = (at - lo)[:, None]
    return keys[lo] * (1 - frac) + keys[hi] * frac


def subsets(count: int, size: int, seed: int) -> np.ndarray:
    """(count, size) random positions as fractions in [0, 1): the scattershot pattern."""
    return np.random.default_rng(seed).random((count, size))


def embed(keys: np.ndarray, slots: int, pattern: np.ndarray) -> np.ndarray:
    """One sentence → [level with ``slots`` vectors, scattershot means, half-gap spread] flattened."""
    lv = level(keys, slots)
    idx = np.minimum((pattern * len(keys)).astype(int), len(keys) - 1)  # (R, size)
    scatter = keys[idx].mean(1)  # (R, dim)
    gap = np.abs(np.diff(keys, axis=0)).mean(0) / 2 if len(keys) > 1 else np.zeros(keys.shape[1])
    return np.concatenate([lv.ravel(), scatter.ravel(), gap]).astype(np.float32)


def mean_embedding(keys: np.ndarray) -> np.ndarray:
    """The bag-of-keys baseline: one mean vector, order lost."""
    return keys.mean(0).astype(np.float32)
