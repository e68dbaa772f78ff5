"""Colored learning rate: any base schedule times exp(σ·x_t − σ²/2), x a 1/f^β stream.

x_t is one unit-variance stream of :class:`sazanami.noise.colored.ColoredNoise` over optimizer
steps, so the multiplier m_t = exp(σ·x_t − σ²/2) is log-normal with E[m_t] = 1 (the
mean learning rate is the base schedule's) and log m_t has the 1/f^β spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler

from sazanami.errors import check_index
from sazanami.noise.colored import ColoredNoise
from sazanami.training.colors import Color

__all__ = ["ColoredLR", "LRMultiplier", "lr_multipliers"]


class LRMultiplier:
    """The stream m_0, m_1, … of multipliers for one color and seed (stateful, resumable)."""

    def __init__(self, color: Color, seed: int, *, max_steps: int = 4096) -> None:
        if not isinstance(color, Color):
            color = Color(*color)
        self.color = color
        self._noise = ColoredNoise(
            color.beta, 1, seed, max_steps=check_index("max_steps", max_steps, 1), dtype=torch.float64
        )

    def next(self) -> float:
        """m_t for the next step."""
        s = self.color.scale
        return math.exp(s * float(self._noise.step()[0]) - s * s / 2)

    def state_dict(self) -> dict:
        return {"noise": self._noise.snapshot()}

    def load_state_dict(self, state: dict) -> None:
        self._noise.restore(state["noise"])


def lr_multipliers(color: Color, steps: int, seed: int | list[int], *, max_steps: int = 4096) -> torch.Tensor:
    """m_t for ``steps`` steps: (steps,) for one seed, (steps, len(seeds)) for several."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    noise = ColoredNoise(color.beta, len(seeds), seeds, max_steps=max_steps, dtype=torch.float64)
    x = noise.steps(check_index("steps", steps, 1))  # (steps, streams)
    m = torch.exp(color.scale * x - color.scale**2 / 2)
    return m[:, 0] if isinstance(seed, int) else m


class ColoredLR(LRScheduler):
    """lr_t = base_lr · base(t) · m_t: a ``torch.optim`` scheduler.

    Args:
        optimizer: any ``torch.optim`` optimizer.
        color: β and σ (``Color(1.0, 0.3)`` or ``Color.parse("pink:0.3")``).
        seed: the stream's seed.
        base: the base schedule as a factor of step (like ``LambdaLR``'s ``lr_lambda``):
            constant 1 when ``None``; see :func:`warmup_cosine`.
        max_steps: the longest time scale with the 1/f^β shape.

    ``state_dict`` holds the noise state, so a resumed run continues the same stream.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        color: Color,
        seed: int = 0,
        *,
        base: Callable[[int], float] | None = None,
        max_steps: int = 4096,
        last_epoch: int = -1,
    ) -> None:
        self.multiplier = LRMultiplier(color, seed, max_steps=max_steps)
        self.base = base or (lambda step: 1.0)
        self.current_multiplier = 1.0
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # called once per step() (and once at construction)
        self.current_multiplier = self.multiplier.next()
        factor = self.base(self.last_epoch) * self.current_multiplier
        return [lr * factor for lr in self.base_lrs]

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "multiplier", "base")}
        state["multiplier"] = self.multiplier.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        self.multiplier.load_state_dict(state.pop("multiplier"))
        self.__dict__.update(state)


def warmup_cosine(total: int, warmup: int = 0, floor: float = 0.0) -> Callable[[int], float]:
    """A base schedule: linear warm-up over ``warmup`` steps, then cosine to ``floor``·lr at ``total``."""
    total = check_index("total", total, 1)
    warmup = check_index("warmup", warmup, 0, total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


__all__ += ["warmup_cosine"]
