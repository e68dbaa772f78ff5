"""Memory admission: what a batch of rows makes the server hold, and the budget it must fit.

A batch of rows (one engine call: :meth:`~sazanami.engine.loop.Engine.steps`) holds

1. keys/values: ``rows × capacity × kv_bytes_per_token``, where ``capacity`` is the longest
   row's prompt + ``max_tokens`` (+ the positions its tool results may take) + 1, at most the
   model's context — the engine sizes every row of a batch for the longest one; a beam row
   counts as ``width`` rows;
2. the prefill's own caches: every distinct prompt's positions once (copied into the rows);
3. logits: ``rows × vocab × LOGIT_BYTES_PER_ENTRY`` — each step's float32 logits and the
   sampler's working copies of them (mask, penalties, softmax, the sort of top-p).

Prompt log-probs are never computed (``echo`` returns the prompt's text, not its
log-probs), so no ``prompt × vocab`` logits are held. The prefill's activations (one pass
of at most ``RAGGED_POSITIONS`` positions) and the prefix cache (``--prefix-cache-mb``) are
bounded on their own and not counted here.

The server checks a request's rows against the budget before any work (413 naming ``n``,
``prompt`` or ``max_tokens``), and its :class:`~sazanami.server.batcher.Batcher` starts a
batch only when it fits beside the batches running (else it waits for one to end), so the
memory of the work running at once stays within the budget.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError

LOGIT_BYTES_PER_ENTRY = 32
"""Bytes per (row, vocabulary entry) in one step: float32 logits and about seven working copies."""

BUDGET_FRACTION = 0.5
"""The default budget's share of the memory available when the server starts."""

MIN_BUDGET = 64 << 20
"""The default budget is never below this (64 MiB), however full the machine is."""

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(value: Any, param: str = "memory_budget") -> int:
    """Bytes from an int or a text: ``4G``, ``512M``, ``1.5GiB``, ``65536`` (binary units)."""
    if isinstance(value, bool):
        raise ParameterError(param, f"{param} must be bytes or a size like 4G, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(value), re.IGNORECASE)
        if m is None:
            raise ParameterError(param, f"{param} must be bytes or a size like 4G or 512M, got {value!r}")
        size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size < 1 << 20:
        raise ParameterError(param, f"{param} must be at least 1M (1048576 bytes), got {value!r}")
    return size


def available_memory() -> int:
    """Bytes of memory this machine can still give: psutil's ``available`` where it is
    installed, else Linux's ``MemAvailable``, else the free pages ``os.sysconf`` reports."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget(available: int | None = None, prefix_cache_bytes: int = 0) -> int:
    """The budget when ``--memory-budget`` is not given: :data:`BUDGET_FRACTION` of the memory
    ``available`` (default: :func:`available_memory`, read when the server starts, after the
    model is loaded), less what the prefix cache may hold; at least :data:`MIN_BUDGET`."""
    free = available_memory() if available is None else available
    return max(MIN_BUDGET, int(free * BUDGET_FRACTION) - prefix_cache_bytes)


@dataclass(frozen=True)
class Footprint:
    """The memory of one batch of rows (module docstring), and the sizes it came from."""

    rows: int
    """Cache rows (a beam row counts ``width``)."""
    capacity: int
    """Positions per row (the longest row's)."""
    prefill: int
    """Positions of the distinct prompts."""
    kv_bytes_per_token: int
    vocab_size: int

    @property
    def kv_bytes(self) -> int:
        return (self.rows * self.capacity + self.prefill) * self.kv_bytes_per_token

    @property
    def logit_bytes(self) -> int:
        return self.rows * self.vocab_size * LOGIT_BYTES_PER_ENTRY

    @property
    def nbytes(self) -> int:
        return self.kv_bytes + self.logit_bytes

    def __add__(self, other: Footprint) -> Footprint:
        """Two batches' rows in one batch: every row sized for the longer capacity (prompts
        both share are counted twice: an upper bound, without walking the rows again)."""
        return Footprint(
            rows=self.rows + other.rows,
            capacity=max(self.capacity, other.capacity),
            prefill=self.prefill + other.prefill,
            kv_bytes_per_token=self.kv_bytes_per_token,
            vocab_size=self.vocab_size,
        )

    def describe(self) -> str:
        per = self.kv_bytes_per_token
        return (
            f"{self.rows} rows × {self.capacity} positions × {per} bytes of keys/values per position "
            f"({gib(self.kv_bytes)}) + logits of {self.rows} rows × {self.vocab_size} entries ({gib(self.logit_bytes)})"
        )


def footprint(rows: Sequence[Any], backend: Any) -> Footprint:
    """The :class:`Footprint` of :class:`~sazanami.sampling.rows.RowRequest` ``rows`` on ``backend``."""
    limit = getattr(backend, "max_positions", None) or 2**31
    widths = [r.params.beams.width if r.params.beams is not None else 1 for r in rows]
    capacity = max((len(r.prompt_ids) + r.params.max_tokens + _injections(r.islands) + 1 for r in rows), default=0)
    prompts = {tuple(r.prompt_ids) for r in rows}
    return Footprint(
        rows=sum(widths),
        capacity=min(capacity, limit),
        prefill=sum(len(p) for p in prompts),
        kv_bytes_per_token=backend.kv_bytes_per_token,
        vocab_size=backend.vocab_size,
    )


def _injections(islands: Any) -> int:
    """Positions a row's tool results may add (each call's result, and the call's own marks)."""
    if islands is None or not islands.has_tools:
        return 0
    return islands.max_calls * (islands.max_result_tokens + 4)


class MemoryTooLarge(ParameterError):
    """Rows that need more memory than the server's whole budget (answered with 413)."""


def check_fits(fp: Footprint, budget: int, param: str, what: str = "this request") -> None:
    """Raise :class:`MemoryTooLarge` naming ``param`` when ``fp`` exceeds ``budget``."""
    if fp.nbytes > budget:
        raise MemoryTooLarge(
            param,
            f"{what} needs about {gib(fp.nbytes)} of memory ({fp.describe()}); this server's memory budget "
            f"is {gib(budget)}: ask for fewer rows (n, prompts) or shorter ones (prompt, max_tokens)",
        )


def gib(nbytes: int) -> str:
    """``1.50 GiB`` / ``12.0 MiB``."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
