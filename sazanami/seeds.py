"""Seed handling: the one place that turns user seeds into per-row seeds."""

from __future__ import annotations

import hashlib
import os

SEED_MAX = 2**63 - 1


def fresh_seed() -> int:
    """A seed from the OS for requests that gave none (reported back so they can be rerun)."""
    return int.from_bytes(os.urandom(8), "little") & SEED_MAX


def seed_or_fresh(*seeds: int | None) -> int:
    """The first seed given (not None), else a fresh one from the OS: "no seed given → draw one".

    The one place that decision is made (the engine, searches, the server and ``sazanami batch``
    call it); whoever calls it reports the seed back, so a request without one can be rerun.
    ``seed_or_fresh(request_seed, params.seed)`` prefers the first that is set.
    """
    for seed in seeds:
        if seed is not None:
            return seed
    return fresh_seed()


def derive_seed(seed: int, *keys: object) -> int:
    """A child seed of ``seed`` for ``keys`` (variant index, purpose ...): stable across runs.

    ``derive_seed(s, 0)``, ``derive_seed(s, 1)`` ... are the seeds of a request's variants.
    """
    text = ":".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & SEED_MAX
