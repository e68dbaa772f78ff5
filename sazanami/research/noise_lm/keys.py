"""The token dictionary's random keys and the seed's digit-weighted distance.

Each token has a key drawn uniformly from [0, 1)^dim. The seed compares an encoder embedding
with a key digit by digit: the j-th decimal digit from the left weighs ``f**-j`` and the
penalty grows with the digits' numeric gap. Writing digit j of every coordinate as its own
coordinate scaled by ``f**-j`` turns that distance into plain L1 between the expanded
vectors (:func:`expand`), which is what lets a nearest-neighbour library search it.
"""

from __future__ import annotations

import numpy as np


def random_keys(vocab_size: int, dim: int, seed: int) -> np.ndarray:
    """(V, dim) float32 keys, uniform on [0, 1), from a seeded NumPy generator."""
    return np.random.default_rng(seed).random((vocab_size, dim), dtype=np.float32)


def expand(x: np.ndarray, digits: int, factor: float) -> np.ndarray:
    """(..., dim) values in [0, 1) → (..., dim * digits) weighted decimal digits.

    ``L1(expand(a), expand(b))`` equals the seed's distance: Σ over coordinates and digits
    j of ``factor**-j * |digit_j(a) - digit_j(b)|``.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0 - 1e-12)
    scaled = x[..., None] * 10.0 ** np.arange(1, digits + 1)  # (..., dim, digits)
    digit = np.floor(scaled) % 10.0
    weights = factor ** -np.arange(digits, dtype=np.float64)
    out = digit * weights  # (..., dim, digits)
    return out.reshape(*x.shape[:-1], x.shape[-1] * digits).astype(np.float32)


def digit_distance(a: np.ndarray, b: np.ndarray, digits: int, factor: float) -> np.ndarray:
    """The seed's distance between (..., dim) arrays, by definition (digit by digit)."""
    return np.abs(expand(a, digits, factor) - expand(b, digits, factor)).sum(-1)
