"""Colored gradient noise: g ← g + η_t·n_t with n_t correlated across steps as 1/f^β.

Annealing as in Neelakantan et al. (2015), "Adding Gradient Noise Improves Learning for
Very Deep Networks": the noise variance is σ_t² = η / (1 + t)^γ (γ = 0.55).

Construction (memory). One AR(1)-bank state per parameter element would cost K copies
of the model. Instead each parameter tensor P gets ``directions`` = r fixed random
directions u_1 … u_r (i.i.d. N(0, 1) per element, regenerated every step from their own
seeded ``torch.Generator`` rather than stored) driven by r colored streams x_j(t)::

    n_t = (1/√r) Σ_j x_j(t) · u_j

Every element of n_t is zero-mean, unit-variance and, over steps, has the 1/f^β
spectrum of the streams. What it is not: independent across elements — the noise of a
tensor lives in a fixed r-dimensional subspace (r = 1: one direction whose amplitude
fluctuates as 1/f^β). Extra memory: the AR state, (K + 1)·r floats per tensor, plus one
scratch buffer as large as the largest tensor — at most one copy of the parameters
(:meth:`ColoredGradientNoise.extra_bytes` reports it; a test checks the bound).
Cost: r Gaussian draws per parameter element per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from sazanami.errors import check_index
from sazanami.noise.colored import ColoredNoise
from sazanami.seeds import derive_seed
from sazanami.training.colors import Color, check_positive

__all__ = ["ColoredGradientNoise"]


class ColoredGradientNoise:
    """Adds annealed colored noise to every ``p.grad``; call ``step()`` before ``optimizer.step()``.

    Args:
        params: the parameters (those without ``requires_grad`` are skipped).
        color: β and η (the noise variance at step 0, e.g. ``Color.parse("pink:0.01")``).
        seed: seeds the streams and the directions.
        gamma: annealing exponent ≥ 0 (0: constant variance).
        directions: r ≥ 1 random directions per tensor.
        max_steps: the longest time scale with the 1/f^β shape.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        color: Color,
        seed: int = 0,
        *,
        gamma: float = 0.55,
        directions: int = 2,
        max_steps: int = 4096,
    ) -> None:
        if not isinstance(color, Color):
            color = Color(*color)
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            from sazanami.errors import ParameterError

            raise ParameterError("params", "params must hold at least one parameter that requires grad, got none")
        self.color = color
        self.seed = seed
        self.gamma = check_positive("gamma", gamma, allow_zero=True)
        self.directions = check_index("directions", directions, 1)
        r = self.directions
        # block=2: refill two steps at a time, so the buffers stay O(streams) (values do not depend on it)
        self._streams = ColoredNoise(color.beta, len(self.params) * r, seed, max_steps=max_steps, block=2)
        self._dir_seeds = [[derive_seed(seed, "direction", i, j) for j in range(r)] for i in range(len(self.params))]
        biggest = max(self.params, key=lambda p: p.numel())
        self._buf = torch.empty(biggest.numel(), dtype=biggest.dtype, device=biggest.device)
        self._gen = torch.Generator(device=biggest.device)
        self.t = 0

    def sigma(self, t: int | None = None) -> float:
        """σ_t = √(η / (1 + t)^γ)."""
        t = self.t if t is None else t
        return math.sqrt(self.color.scale / (1 + t) ** self.gamma)

    @torch.no_grad()
    def step(self) -> None:
        """g ← g + σ_t·n_t for every parameter with a gradient; advances t."""
        x = self._streams.step().view(len(self.params), self.directions)  # (P, r)
        scale = self.sigma() / math.sqrt(self.directions)
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            u = self._buf[: p.numel()].view_as(p.grad)
            for j, s in enumerate(self._dir_seeds[i]):
                self._gen.manual_seed(s)
                torch.randn(u.shape, generator=self._gen, out=u, dtype=u.dtype)  # u_j, the same every step
                p.grad.add_(u.to(p.grad.dtype), alpha=scale * float(x[i, j]))
        self.t += 1

    def noise(self, i: int) -> torch.Tensor:
        """n_t of parameter ``i`` for the *current* step without advancing (for tests)."""
        state = self._streams.snapshot()
        x = self._streams.step().view(len(self.params), self.directions)
        self._streams.restore(state)
        p = self.params[i]
        out = torch.zeros_like(p)
        for j, s in enumerate(self._dir_seeds[i]):
            u = torch.randn(p.shape, generator=torch.Generator(device=p.device).manual_seed(s), dtype=p.dtype)
            out.add_(u, alpha=float(x[i, j]) / math.sqrt(self.directions))
        return out

    def extra_bytes(self) -> int:
        """Bytes of every tensor this object holds beyond the parameters (streams' state, keys,
        refill buffers, and the scratch buffer)."""

        def tensors(obj: object) -> list[torch.Tensor]:
            if isinstance(obj, torch.Tensor):
                return [obj]
            if isinstance(obj, (list, tuple)):
                return [t for o in obj for t in tensors(o)]
            return []

        held = [t for v in vars(self._streams).values() for t in tensors(v)] + [self._buf]
        return sum(t.numel() * t.element_size() for t in held)

    def state_dict(self) -> dict:
        return {"t": self.t, "streams": self._streams.snapshot()}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self._streams.restore(state["streams"])
