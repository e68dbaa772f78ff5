"""What one server lets its clients ask for: the knobs of ``sazanami serve``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_int, check_range
from sazanami.sampling.params import MAX_N, MAX_TOKENS_LIMIT
from sazanami.server.memory import parse_bytes


@dataclass(frozen=True)
class Limits:
    """Per-request and per-server limits. Every field is validated on construction."""

    max_tokens: int = 1024
    """New tokens per variant at most (also the default when a request gives none, if lower
    than SamplingParams' default); in [1, 32768]."""
    max_n: int = 16
    """Variants per prompt at most; in [1, 256]."""
    max_prompts: int = 16
    """Prompts per /v1/completions request at most; in [1, 1024]."""
    max_search_budget: int = 8192
    """Generated tokens one search may spend at most; in [1, inf)."""
    max_concurrent: int = 64
    """Requests whose rows may be in the engine at once; in [1, 4096]."""
    max_queue: int = 64
    """Requests that may wait for a slot; one more gets 503; in [0, 65536]."""
    max_searches: int = 2
    """Searches (and beam searches) running at once; each holds a request slot too; in [1, 64]."""
    max_prompt_tokens: int = 4096
    """Prompt tokens per prompt at most (more is 413); in [1, inf)."""
    max_body_bytes: int = 1 << 20
    """Request body size at most (more is 413); in [1024, inf)."""
    max_batch_rows: int = 64
    """Rows the batcher puts in one engine batch at most; in [1, 4096]."""
    cohorts: int = 2
    """Engine batches the batcher interleaves step by step. 1 = requests that arrive while a batch
    runs wait for it to end; 2+ = they start a new batch at the next step; in [1, 16]."""
    max_search_seconds: float = 300.0
    """Wall time of one search at most: no engine call starts after it (the answer is the best so
    far), and a call still running then is cut (the request fails with 504); in (0, 86400]."""
    prefix_cache_mb: int = 512
    """Memory for the keys/values of prompts and outputs already computed, reused by later
    requests and search branches that start with them (LRU); 0 turns the prefix cache off;
    in [0, 65536]."""
    batch_invariant: bool = False
    """Run every request as with ``batch_invariant: true``: its rows in engine batches of their
    own, so a seeded request's tokens do not depend on what else runs (slower under load)."""
    memory_budget: int | str | None = None
    """Memory (bytes, or 4G, 512M …) for the keys/values and logits of the rows running at once:
    a request that needs more alone is refused (413) before any work, and a batch starts only
    when it fits beside those running. Default: half the memory available at start, less the
    prefix cache (see docs/server_limits.md)."""
    max_tools: int = 128
    """Function objects in one request's ``tools`` at most (each becomes part of its grammar);
    in [1, 4096]."""
    body_timeout: float = 30.0
    """Seconds a client has to send a request body; a slower one gets 408; in (0, 3600]."""

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_tokens", 1, MAX_TOKENS_LIMIT),
            ("max_n", 1, MAX_N),
            ("max_prompts", 1, 1024),
            ("max_search_budget", 1, None),
            ("max_concurrent", 1, 4096),
            ("max_queue", 0, 65536),
            ("max_searches", 1, 64),
            ("max_prompt_tokens", 1, None),
            ("max_body_bytes", 1024, None),
            ("max_batch_rows", 1, 4096),
            ("cohorts", 1, 16),
            ("prefix_cache_mb", 0, 65536),
            ("max_tools", 1, 4096),
        ):
            check_int(name, getattr(self, name), low, high)
        check_range("max_search_seconds", self.max_search_seconds, 0, 86400, low_open=True)
        check_range("body_timeout", self.body_timeout, 0, 3600, low_open=True)
        if self.memory_budget is not None:  # kept in bytes
            object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget))
        if not isinstance(self.batch_invariant, bool):
            raise ParameterError(
                "batch_invariant", f"batch_invariant must be true or false, got {self.batch_invariant!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
