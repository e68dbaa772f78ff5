"""Running tokens that came from outside the model (tool results) through it, row by row.

Shared by the sampling loop (:mod:`sazanami.engine.loop`) and stochastic beams
(:mod:`sazanami.engine.beams`); it needs only the backend's cache operations.
"""

from __future__ import annotations

from typing import Any

import torch


def forward_injected(
    backend: Any,
    cache: Any,
    logits: torch.Tensor,
    lengths: torch.Tensor,
    injected: dict[int, list[int]],
    room: dict[int, int],
    hooks: dict[int, Any] | None = None,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run injected tokens through the model, each row on its own (a one-row view of the cache).

    Row ``i``'s next-token logits become those after its injected tokens; its length
    advances by their count. The cache grows when a row would outrun it (``room[i]``
    positions are kept free after the injection for the row's later draws); ``hooks[i]`` is
    row ``i``'s one-row hidden-noise hook, so its last injected position is perturbed like
    any position it generates. Returns the
    (possibly new) cache, ``logits`` and ``lengths``, updated in place.
    """
    need = max(int(lengths[i]) + len(ids) + room.get(i, 0) + 1 for i, ids in injected.items())
    if need > cache.capacity:
        grown = backend.new_cache(cache.batch, need + 64)
        for b in range(cache.batch):
            grown.copy_rows(cache, b, torch.tensor([b]), int(lengths[b]))
        cache = grown
    for i, ids in injected.items():
        ids = ids[: max(0, cache.capacity - int(lengths[i]) - 1)]
        if not ids:
            continue
        start = lengths[i : i + 1].clone()
        hook = hooks.get(i) if hooks else None
        logits[i] = backend.forward(torch.tensor([ids]), cache.narrow(i, 1), start, hook)[0]
        lengths[i] += len(ids)
    return cache, logits, lengths
