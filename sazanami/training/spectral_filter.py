"""Spectral gradient filters: amplify the slow part of each gradient's time series.

Call ``filter.step()`` between ``loss.backward()`` and ``optimizer.step()``; it rewrites
every ``p.grad`` as ``g + λ·lowpass(g)`` (Lee et al. 2024, "Grokfast: Accelerated Grokking
by Amplifying Slow Gradients", arXiv:2405.20233).

- :class:`GrokfastEMA`: lowpass = EMA, m_t = α·m_{t−1} + (1 − α)·g_t, m_0 = g_0.
  Memory: one copy of the parameters.
- :class:`GrokfastMA`: lowpass = mean of the last ``window`` gradients, applied once the
  window is full (before that g is unchanged). Memory: ``window`` copies plus a float64
  running sum (a float32 running sum keeps the rounding residue of large early gradients
  long after they left the window, and it swamps the mean of the small late ones).
- :class:`SpectralGain`: lowpass = the causal minimum-phase filter H whose power gain
  |H(f)|² is the 1/f^β spectrum fitted by :class:`sazanami.noise.colored.ColoredNoise` (the same
  AR(1) bank in innovations form, driven by the gradient instead of white noise)::

      y_t = (a·g_t + Σ_k c_k v_k(t)) / H(1),   v_k(t+1) = v_k(t) + (1 − φ_k)(g_t − v_k(t))

  normalised to unit gain at f = 0, so the slowest components get 1 + λ and the gain
  falls as f^{−β/2} towards the fastest. Memory: K copies of the parameters (K ≈ 2 per
  decade of ``max_steps``; 7 at 1000 steps), so it is meant for small models.

All three keep state (``state_dict`` / ``load_state_dict`` for checkpoints) and never
touch the RNG.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import torch

from sazanami.errors import check_index, check_range
from sazanami.noise.colored import fit_bank
from sazanami.training.colors import check_positive

__all__ = ["GradientFilter", "GrokfastEMA", "GrokfastMA", "SpectralGain", "spectral_gain_response"]


class GradientFilter:
    """Base: holds the parameters that have gradients; subclasses implement ``_filter``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lamb: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lamb = check_positive("lamb", lamb, allow_zero=True)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """Rewrite each ``p.grad`` (parameters without a gradient this step are skipped)."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._filter(i, p.grad)
        self.steps += 1

    def _filter(self, i: int, grad: torch.Tensor) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])


class GrokfastEMA(GradientFilter):
    """g ← g + λ·EMA_α(g). Paper defaults for modular arithmetic: α = 0.98, λ = 2."""

    def __init__(self, params: Iterable[torch.nn.Parameter], alpha: float = 0.98, lamb: float = 2.0) -> None:
        super().__init__(params, lamb)
        check_range("alpha", alpha, 0, 1, high_open=True)
        self.alpha = float(alpha)
        self._ema: dict[int, torch.Tensor] = {}

    def _filter(self, i: int, grad: torch.Tensor) -> None:
        m = self._ema.get(i)
        if m is None:
            m = self._ema[i] = grad.detach().clone()  # m_0 = g_0
        else:
            m.mul_(self.alpha).add_(grad, alpha=1 - self.alpha)
        grad.add_(m, alpha=self.lamb)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "ema": {i: m.clone() for i, m in self._ema.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._ema = {int(i): m.clone() for i, m in state["ema"].items()}


class GrokfastMA(GradientFilter):
    """g ← g + λ·mean(last ``window`` gradients), once ``window`` gradients are held (warm-up).

    Paper defaults for modular arithmetic: window 100, λ = 5.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], window: int = 100, lamb: float = 5.0) -> None:
        super().__init__(params, lamb)
        self.window = check_index("window", window, 1)
        self._queue: dict[int, deque[torch.Tensor]] = {}
        self._sum: dict[int, torch.Tensor] = {}

    def _filter(self, i: int, grad: torch.Tensor) -> None:
        q = self._queue.setdefault(i, deque())
        s = self._sum.get(i)
        if s is None:
            s = self._sum[i] = torch.zeros_like(grad, dtype=torch.float64)
        g = grad.detach().clone()
        q.append(g)
        s.add_(g)
        if len(q) > self.window:
            s.sub_(q.popleft())
        if len(q) == self.window:
            grad.add_((s * (self.lamb / self.window)).to(grad.dtype))

    def state_dict(self) -> dict:
        return {"steps": self.steps, "queue": {i: [g.clone() for g in q] for i, q in self._queue.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._queue = {int(i): deque(g.clone() for g in q) for i, q in state["queue"].items()}
        # the running sum is rebuilt in order, so it rounds exactly as it did before the save
        self._sum = {}
        for i, q in self._queue.items():
            if q:
                s = self._sum[i] = torch.zeros_like(q[0], dtype=torch.float64)
                for g in q:
                    s.add_(g)


class SpectralGain(GradientFilter):
    """g ← g + λ·H_β(g), |H_β(f)|² ∝ 1/f^β over [1/(10·max_steps), 1/2], H_β(0) = 1 (module doc).

    β = 0 is H = 1 (g ← (1 + λ)·g); larger β amplifies slower components more.
    """

    def __init__(
        self, params: Iterable[torch.nn.Parameter], beta: float = 1.0, lamb: float = 2.0, *, max_steps: int = 1000
    ) -> None:
        super().__init__(params, lamb)
        check_range("beta", beta, 0, 2)
        self.beta = float(beta)
        self.max_steps = check_index("max_steps", max_steps, 1)
        bank = fit_bank(self.beta, self.max_steps)
        dc = bank.a + float(bank.c.sum())
        self._a = bank.a / dc
        self._c = (bank.c / dc).tolist()
        self._lerp = bank.lerp.tolist()
        self._v: dict[int, list[torch.Tensor]] = {}

    @property
    def components(self) -> int:
        """K, the AR(1) states per parameter (the extra memory in parameter copies)."""
        return len(self._c)

    def _filter(self, i: int, grad: torch.Tensor) -> None:
        g = grad.detach().clone()
        states = self._v.get(i)
        if states is None:  # start from rest
            states = self._v[i] = [torch.zeros_like(g) for _ in self._c]
        y = g * self._a
        for v, c, w in zip(states, self._c, self._lerp):
            y.add_(v, alpha=c)
            v.lerp_(g, w)
        grad.add_(y, alpha=self.lamb)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "v": {i: [v.clone() for v in vs] for i, vs in self._v.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._v = {int(i): [v.clone() for v in vs] for i, vs in state["v"].items()}


def spectral_gain_response(beta: float, freqs: np.ndarray, *, max_steps: int = 1000) -> np.ndarray:
    """The complex response H_β(e^{2πif}) of :class:`SpectralGain`'s lowpass (closed form).

    H(z) = (a + Σ_k c_k (1 − φ_k) z⁻¹ / (1 − φ_k z⁻¹)) / H(1).
    """
    bank = fit_bank(float(beta), int(max_steps))
    dc = bank.a + float(bank.c.sum())
    zinv = np.exp(-2j * np.pi * np.asarray(freqs, dtype=np.float64))[:, None]
    phi = 1 - bank.lerp[None, :]
    h = bank.a + (bank.c[None, :] * bank.lerp[None, :] * zinv / (1 - phi * zinv)).sum(axis=1)
    return h / dc
