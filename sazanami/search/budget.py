"""Budgets in generated tokens (and optionally wall time), and the ledger that enforces them.

Every token the model generates for a search counts: candidates, continuations, judge
replies, syntheses, improvements. Prompt tokens the model processes (prefills) are
reported beside, not charged. A strategy never exceeds its token budget: before each engine
call it asks :meth:`Ledger.allot` how many rows of how many tokens fit in what is left —
counting the worst case, every row running to its ``max_tokens`` plus what scoring it may
cost — and clips ``max_tokens`` (then the number of rows) to that. Wall time is checked
between engine calls, so a search may overrun ``wall_s`` by at most one call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, SazanamiError, check_int, check_known

__all__ = ["DEFAULT_BUDGET_SAMPLES", "Budget", "BudgetError", "Ledger", "search_budget"]

DEFAULT_BUDGET_SAMPLES = 16
"""A search given no budget may generate this many times one sample's ``max_tokens``."""


class BudgetError(SazanamiError):
    """An engine call would exceed the budget (a bug in a strategy: they clip first)."""


@dataclass(frozen=True)
class Budget:
    """How much a search may spend."""

    tokens: int
    """Generated tokens, all model calls included; in [1, inf)."""
    wall_s: float | None = None
    """Wall-clock seconds; checked between engine calls; None = no limit; in (0, inf)."""

    def __post_init__(self) -> None:
        check_int("budget", self.tokens, 1)
        if self.wall_s is not None:
            ok = isinstance(self.wall_s, (int, float)) and not isinstance(self.wall_s, bool) and self.wall_s > 0
            if not ok:
                raise ParameterError("wall_s", f"wall_s must be in (0, inf) seconds, got {self.wall_s!r}")

    @classmethod
    def parse(cls, spec: Any) -> Budget:
        """A Budget from an int (tokens), a dict ``{tokens, wall_s}`` or a Budget."""
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, dict):
            check_known(spec, ("tokens", "wall_s"), "budget field", prefix="budget.")
            if "tokens" not in spec:
                raise ParameterError("budget.tokens", "budget needs 'tokens'")
            return cls(spec["tokens"], spec.get("wall_s"))
        return cls(spec)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "wall_s": self.wall_s}


def search_budget(spec: Any, max_tokens: int, *, wall_s: float | None = None, cap: int | None = None) -> Budget:
    """A search's :class:`Budget`: ``spec`` as :meth:`Budget.parse` reads it, or the default.

    The one place the default is decided: with ``spec`` None, 16 × ``max_tokens`` generated
    tokens (:data:`DEFAULT_BUDGET_SAMPLES`), at most ``cap`` (a server's ``max_search_budget``;
    a budget that was given is checked against it elsewhere, not clipped). ``wall_s``, when
    given, is the budget's wall time (the CLI's ``--wall-time`` beside ``--budget``).
    """
    if spec is None:
        spec = DEFAULT_BUDGET_SAMPLES * max_tokens
        if cap is not None:
            spec = min(spec, cap)
    budget = Budget.parse(spec)
    return budget if wall_s is None else Budget(budget.tokens, wall_s)


class Ledger:
    """Running account of one search: tokens generated (by kind), prompt tokens, time."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.generated = 0
        self.prompt = 0
        """Prompt tokens run through the model (prefilled)."""
        self.reused = 0
        """Prompt tokens whose keys/values came from the engine's prefix cache instead."""
        self.by_kind: Counter[str] = Counter()
        self.calls = 0
        self.held = 0
        """Tokens set aside (e.g. for a synthesis after the base strategy)."""
        self.start = time.perf_counter()

    # -- state -------------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        """Tokens that may still be generated (minus any held back)."""
        return max(0, self.budget.tokens - self.generated - self.held)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def out_of_time(self) -> bool:
        return self.budget.wall_s is not None and self.elapsed >= self.budget.wall_s

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0 or self.out_of_time

    # -- planning ----------------------------------------------------------------------------
    def allot(self, wants: list[int], reserve: int = 0, min_tokens: int = 1, limit: int | None = None) -> list[int]:
        """Per-row ``max_tokens`` for the first rows of a call that fit the remaining budget.

        ``wants[i]`` is row i's ``max_tokens``; ``reserve`` the worst-case tokens scoring a row
        may cost afterwards. Returns a list no longer than ``wants``: every row clipped to a
        common cap (the largest that fits, never below ``min_tokens``), and when even
        ``min_tokens`` per row does not fit, rows dropped from the end. Empty when nothing
        fits or time is up. ``limit`` caps the tokens below what remains (a round's share).
        Guarantees ``sum(out) + len(out) * reserve <= min(remaining, limit)``.
        """
        if not wants or self.out_of_time:
            return []
        avail = self.remaining if limit is None else min(self.remaining, max(0, limit))
        min_tokens = max(1, min_tokens)
        rows = len(wants)
        while rows > 0:
            head = wants[:rows]
            room = avail - rows * reserve
            if room >= sum(head):
                return list(head)
            cap = _largest_cap(head, room)
            if cap >= min(min_tokens, min(head)):
                return [min(w, cap) for w in head]
            rows = min(rows - 1, avail // (min_tokens + reserve) if min_tokens + reserve > 0 else rows - 1)
        return []

    def affordable(self, per_row: int) -> int:
        """How many rows of worst-case ``per_row`` tokens the remaining budget pays for."""
        if self.out_of_time or per_row <= 0:
            return 0
        return self.remaining // per_row

    # -- accounting --------------------------------------------------------------------------
    def check(self, tokens: int) -> None:
        """Raise :class:`BudgetError` if a call that may generate ``tokens`` would overspend."""
        if tokens > self.remaining:
            raise BudgetError(f"a call that may generate {tokens} tokens exceeds the {self.remaining} left")

    def charge(self, kind: str, generated: int, prompt: int = 0, reused: int = 0) -> None:
        self.generated += generated
        self.prompt += prompt
        self.reused += reused
        self.by_kind[kind] += generated
        self.calls += 1

    @contextmanager
    def hold(self, tokens: int) -> Iterator[None]:
        """Set ``tokens`` aside while the block runs (they are not available to it)."""
        tokens = max(0, min(tokens, self.remaining))
        self.held += tokens
        try:
            yield
        finally:
            self.held -= tokens

    @contextmanager
    def limit(self, tokens: int) -> Iterator[None]:
        """Let the block use at most ``tokens`` of what remains (a step's share of a flow)."""
        with self.hold(self.remaining - max(0, tokens)):
            yield

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_tokens": self.budget.tokens,
            "budget_wall_s": self.budget.wall_s,
            "generated_tokens": self.generated,
            "prompt_tokens": self.prompt,
            "prompt_tokens_reused": self.reused,
            "by_kind": dict(sorted(self.by_kind.items())),
            "engine_calls": self.calls,
            "wall_s": round(self.elapsed, 3),
        }


def _largest_cap(wants: list[int], room: int) -> int:
    """The largest c with sum(min(w, c)) <= room (0 when room < len(wants))."""
    if room < len(wants):
        return 0
    lo, hi = 1, max(wants)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(w, mid) for w in wants) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo
