"""Noise embeddings: what is learned, per hashed context, and how it turns into a query.

For a context ending in token c and a target t the seed wants a noise vector n with
``key[c] - n ≈ key[t]``. Over many training pairs the least-squares n is the running mean
``n ← n + (key[c] - key[t] - n) / count``, i.e. ``key[c]`` minus the mean key of the
tokens that followed this context. One noise vector is kept per hashed context of every
length 1..order (plus the empty context), so the model holds several noise embeddings at
once ("why can't we use multiple?"); at inference they are combined longest-first with
Witten–Bell weights: ``e_n = (S_n + β u_n e_{n-1}) / (c_n + β u_n)`` where ``S_n`` is the
sum of the follower keys, ``c_n`` their count and ``u_n`` the number of distinct followers.
The encoder embedding is ``key[c] - noise = e_order``.
"""

from __future__ import annotations

import numpy as np

_MUL = np.uint64(0x9E3779B97F4A7C15)
PAD = -1
"""Context slots before the start of the data."""


def contexts(ids: np.ndarray, order: int) -> np.ndarray:
    """(N,) token ids → (N, order) contexts of each position, most recent token first, PAD-filled."""
    n = len(ids)
    out = np.full((n, order), PAD, dtype=np.int64)
    for j in range(order):
        out[j + 1 :, j] = ids[: n - j - 1]
    return out


def context_hashes(ctx: np.ndarray, order: int) -> np.ndarray:
    """(N, >= order) contexts → (N,) uint64 hashes of their first ``order`` tokens."""
    h = np.full(len(ctx), np.uint64((order * 0x9E3779B97F4A7C15) % 2**64), dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        for j in range(order):
            h = (h ^ (ctx[:, j] + 2).astype(np.uint64)) * _MUL
            h ^= h >> np.uint64(29)
    return h


class NoiseTables:
    """Per-order hashed contexts → (sum of follower keys, count, distinct followers)."""

    def __init__(
        self, hashes: list[np.ndarray], sums: list[np.ndarray], counts: list[np.ndarray], types: list[np.ndarray]
    ) -> None:
        self.hashes, self.sums, self.counts, self.types = hashes, sums, counts, types  # index 0: empty context

    @classmethod
    def fit(cls, ids: np.ndarray, keys: np.ndarray, order: int) -> NoiseTables:
        """Accumulate every (context, next token) pair of ``ids`` for contexts of length 0..order."""
        ids = np.asarray(ids, dtype=np.int64)
        ctx = contexts(ids, order)
        target = keys[ids]  # (N, dim)
        hashes, sums, counts, types = [], [], [], []
        for n in range(order + 1):
            h = context_hashes(ctx, n) if n else np.zeros(len(ids), dtype=np.uint64)
            if n:
                keep = (ctx[:, :n] != PAD).all(1)  # only contexts the data really has
                h, t, tk = h[keep], ids[keep], target[keep]
            else:
                t, tk = ids, target
            uniq, inv = np.unique(h, return_inverse=True)
            order_ = np.argsort(inv, kind="stable")
            starts = np.searchsorted(inv[order_], np.arange(len(uniq)))
            sums.append(np.add.reduceat(tk[order_].astype(np.float64), starts, axis=0).astype(np.float32))
            counts.append(np.bincount(inv, minlength=len(uniq)).astype(np.float32))
            pair = np.unique(inv.astype(np.int64) * (int(ids.max()) + 1) + t)  # distinct (context, follower)
            types.append(np.bincount(pair // (int(ids.max()) + 1), minlength=len(uniq)).astype(np.float32))
            hashes.append(uniq)
        return cls(hashes, sums, counts, types)

    @property
    def order(self) -> int:
        return len(self.hashes) - 1

    def size(self) -> int:
        """Learned numbers: one dim-vector plus two counts per stored context."""
        return sum(s.size + c.size + u.size for s, c, u in zip(self.sums, self.counts, self.types))

    def encoder(self, ctx: np.ndarray, backoff: float = 1.0) -> np.ndarray:
        """(Q, >= order) contexts → (Q, dim) encoder embeddings ``e_order`` (see module doc)."""
        e = np.repeat(self.sums[0] / self.counts[0][:, None], len(ctx), 0)  # (Q, dim) empty context
        for n in range(1, self.order + 1):
            h = context_hashes(ctx, n)
            pos = np.searchsorted(self.hashes[n], h).clip(0, len(self.hashes[n]) - 1)
            found = (self.hashes[n][pos] == h) & (ctx[:, :n] != PAD).all(1)
            if not found.any():
                continue
            p = pos[found]
            w = backoff * self.types[n][p][:, None]
            e[found] = (self.sums[n][p] + w * e[found]) / (self.counts[n][p][:, None] + w)
        return e

    def noise(self, ctx: np.ndarray, keys: np.ndarray, backoff: float = 1.0) -> np.ndarray:
        """The noise embeddings themselves: ``key[last context token] - encoder``."""
        last = np.where(ctx[:, 0] == PAD, 0, ctx[:, 0])
        return keys[last] - self.encoder(ctx, backoff)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for n in range(self.order + 1):
            out |= {
                f"hash{n}": self.hashes[n],
                f"sum{n}": self.sums[n],
                f"count{n}": self.counts[n],
                f"type{n}": self.types[n],
            }
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], order: int) -> NoiseTables:
        r = range(order + 1)
        return cls(*[[arrays[f"{k}{n}"] for n in r] for k in ("hash", "sum", "count", "type")])
