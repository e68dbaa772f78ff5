"""Backends: a model plus its forward pass, behind one small interface.

The engine only needs :class:`Backend`: a tokenizer, the vocabulary size, and
``forward(tokens, cache, rows, starts)`` that writes keys/values into a
pre-allocated per-row cache and returns logits. Two backends implement it:
``torch`` (:mod:`sazanami.backends.llama`, sazanami's own forward pass of a
Llama-family checkpoint) and ``llamacpp`` (:mod:`sazanami.backends.llamacpp`, any
GGUF model through llama.cpp). Each says what it can run in its :class:`Capabilities`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from sazanami.backends.tokenizer import Tokenizer
from sazanami.errors import ParameterError
from sazanami.noise.fluctuation import POINTS

HiddenHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(layer, hidden) -> hidden``; layer -1 is the input embeddings. (B, T, C)."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run; anything else is refused with an error naming the backend."""

    backend: str
    fluctuation_points: tuple[str, ...]
    """Fluctuation points (``sazanami.noise.fluctuation.POINTS``) the backend supports."""
    islands: bool
    """Tool calls and grammars (:mod:`sazanami.islands`)."""
    beams: bool
    """Stochastic beam search (needs only logits and row copies)."""

    def refusal(self, what: str) -> str:
        return f"{what} noise is not available on the {self.backend} backend (it has: {', '.join(self.fluctuation_points)})"

    def check(self, fluctuation: Any) -> None:
        """Raise ``ParameterError`` if ``fluctuation`` uses a point this backend lacks."""
        if fluctuation is None:
            return
        for point in POINTS:
            if getattr(fluctuation, point, None) is not None and point not in self.fluctuation_points:
                raise ParameterError(f"fluctuation.{point}", self.refusal(point))


class Cache(Protocol):
    """Per-row key/value storage; row ``b`` holds ``lengths[b]`` positions."""

    batch: int
    capacity: int

    def select(self, rows: torch.Tensor) -> Cache:
        """A new cache holding only ``rows`` (in that order; a row may repeat).

        Callers replace the cache by the result: a backend may hand its storage over and
        leave this cache empty (llamacpp moves its sequence ids).
        """
        ...

    def narrow(self, row: int, count: int = 1) -> Cache:
        """A view of ``count`` rows from ``row``: writes go to this cache."""
        ...

    def copy_rows(self, src: Cache, src_row: int, dst_rows: torch.Tensor, length: int) -> None:
        """Rows ``dst_rows`` get the first ``length`` positions of ``src`` row ``src_row``."""
        ...


class Backend(Protocol):
    """What the engine needs from a model."""

    name: str
    tokenizer: Tokenizer
    vocab_size: int
    hidden_size: int
    num_layers: int
    max_positions: int
    """Positions the model can attend over (its context); caches never grow past it."""
    kv_bytes_per_token: int
    """Bytes of keys and values one position of one row takes in a cache (the server's memory
    admission: :mod:`sazanami.server.memory`)."""

    def new_cache(self, batch: int, capacity: int) -> Cache:
        """Allocate an empty cache for ``batch`` rows of up to ``capacity`` positions."""
        ...

    def forward(
        self,
        tokens: torch.Tensor,
        cache: Cache,
        starts: torch.Tensor,
        hidden_hook: HiddenHook | None = None,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Run ``tokens`` (B, T) at positions ``starts[b] + t`` (row ``b`` of the cache).

        Keys/values are written into the cache; returns logits (B, V) for the
        last position when ``last_only``, else (B, T, V).
        """
        ...
