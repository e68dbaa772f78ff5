"""The draft budget: which drafted tokens pay for the time they add to a step.

A decode step that feeds ``T`` tokens (each row's own token plus the drafts) takes about
``a + b·T`` seconds: ``a`` is what any step costs (reading the weights, the call), ``b`` what
each fed token adds (its share of the matmuls, the output layer over the vocabulary, the
sampler at its position). Only the ratio ``a / b`` decides anything. It differs by model and
batch: measured here (2-core Intel Xeon, llama.cpp) about 4 for Qwen2.5-Coder-0.5B at batch 1,
about 1 for SmolLM2-135M, whose 49k-entry output layer is much of a token's cost; and a step
of 16 rows already feeds 16 tokens, so a draft there must be very likely to be accepted.

:class:`StepCost` fits ``a`` and ``b`` online (weighted least squares, older steps fading)
from the engine's own steps. :func:`budget` then keeps, most likely first, each drafted token
whose chance of being accepted ``p`` (the row's acceptance rate ``α`` to the power of its place
in the draft) raises the expected tokens per second: ``p · (a/b + T) > E``, with ``T`` the
tokens fed and ``E`` the tokens expected so far. Until the fit exists, every other step feeds
at least its most likely drafted token (exploration: a wide batch would otherwise never draft,
so never learn either its rows' acceptance or the step's cost; every other, so that steps of
two sizes come and the fit can tell ``a`` from ``b``). Timing decides only how much is drafted,
never which tokens are drawn: outputs stay those of plain decoding.
"""

from __future__ import annotations

import time

PRIOR_RATIO = 4.0
"""``a / b`` before the engine has timed steps of different sizes."""
RATIO_RANGE = (0.5, 256.0)
"""The fitted ratio is held in this range (a noisy fit never turns drafting off or on wholesale)."""
DECAY = 0.97
"""Weight left to a step after each newer one (about the last 30 steps count)."""
MIN_SPREAD = 0.2
"""Least weighted variance of the steps' sizes before the fit replaces the prior."""


class StepCost:
    """Seconds per decode step against tokens fed, fitted online (see the module docstring)."""

    __slots__ = ("s0", "s1", "s2", "sy", "sxy", "steps", "_started", "_fed")

    def __init__(self) -> None:
        self.s0 = self.s1 = self.s2 = self.sy = self.sxy = 0.0
        self.steps = 0
        """Steps observed."""
        self._started: float | None = None
        self._fed = 0

    def start(self, fed: int) -> None:
        """A step feeding ``fed`` tokens begins now."""
        self._started, self._fed = time.perf_counter(), fed

    def stop(self) -> None:
        """The step begun by :meth:`start` is done (its drafts verified); a step not started is ignored."""
        if self._started is not None:
            self.observe(self._fed, time.perf_counter() - self._started)
            self._started = None

    def observe(self, fed: int, seconds: float) -> None:
        """One step of ``fed`` tokens took ``seconds``."""
        for name in ("s0", "s1", "s2", "sy", "sxy"):
            setattr(self, name, getattr(self, name) * DECAY)
        self.s0 += 1.0
        self.s1 += fed
        self.s2 += fed * fed
        self.sy += seconds
        self.sxy += fed * seconds
        self.steps += 1

    def explore(self) -> bool:
        """Whether this step should feed a drafted token the budget would not (:func:`budget`'s
        ``explore``): every other step while the cost is not fitted, so steps of two sizes come."""
        return not self.fitted() and self.steps % 2 == 0

    def fitted(self) -> bool:
        """Whether the recent steps differ enough in size to tell ``a`` from ``b`` (else :meth:`ratio`
        is the prior; as steps of one size keep coming the older ones fade, and it becomes False again)."""
        return self.s0 > 0 and self.s2 / self.s0 - (self.s1 / self.s0) ** 2 >= MIN_SPREAD

    def ratio(self) -> float:
        """``a / b``: the prior until steps of different sizes were timed, then the fit (held in range)."""
        if not self.fitted():
            return PRIOR_RATIO
        b = (self.s0 * self.sxy - self.s1 * self.sy) / (self.s0 * self.s2 - self.s1 * self.s1)
        a = (self.sy - b * self.s1) / self.s0
        if b <= 0:
            return RATIO_RANGE[1]
        return min(max(a / b, RATIO_RANGE[0]), RATIO_RANGE[1])


def budget(drafts: list[list[int]], alphas: list[float], ratio: float, explore: bool = False) -> list[list[int]]:
    """``drafts`` cut to the tokens worth feeding: row i's draft token j (from 1) is accepted
    with chance ``alphas[i] ** j``; tokens are taken most likely first while that chance times
    ``ratio + T`` exceeds ``E`` (tokens fed and expected so far, see the module docstring).
    ``explore``: keep at least the most likely token (the step cost is not fitted yet: steps
    of one size tell it nothing, and rows that never draft never learn their acceptance)."""
    fed = float(len(drafts))  # every row feeds its own token
    expected = fed  # which is always kept
    chances = sorted(
        ((alphas[i] ** j, i) for i, d in enumerate(drafts) for j in range(1, len(d) + 1)), reverse=True
    )  # per row, later places are less likely: a row's kept tokens are a prefix of its draft
    keep = [0] * len(drafts)
    for k, (p, i) in enumerate(chances):
        if p * (ratio + fed) <= expected and not (explore and k == 0):
            break
        keep[i] += 1
        fed += 1
        expected += p
    return [d[:k] for d, k in zip(drafts, keep)]
