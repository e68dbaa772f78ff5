"""Backends: a model plus its forward pass, behind one small interface.

The engine only needs :class:`Backend`: a tokenizer, the vocabulary size, and
``forward(tokens, cache, rows, starts)`` that writes keys/values into a
pre-allocated per-row cache and returns logits. Other backends (llama.cpp,
vLLM) can be added by implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from sazanami.tokenizer import Tokenizer

HiddenHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(layer, hidden) -> hidden``; layer -1 is the input embeddings. (B, T, C)."""


class Cache(Protocol):
    """Per-row key/value storage; row ``b`` holds ``lengths[b]`` positions."""

    batch: int
    capacity: int

    def select(self, rows: torch.Tensor) -> Cache:
        """A new cache holding only ``rows`` (in that order)."""
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
