"""Colored embedding noise: NEFTune whose noise pattern is correlated across training steps.

NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning",
arXiv:2310.05914) adds, during training only, uniform noise to the input embeddings
(B, L, d)::

    x ← x + ε,   ε ~ U(−α/√(L·d), α/√(L·d)) element-wise

(L the padded sequence length, as in ``transformers``' ``neftune_post_forward_hook``).
Here ε at slot (row b, position l, channel c) is α/√(L·d) · (2Φ(x_t) − 1), x_t the slot's
unit-variance 1/f^β stream of :class:`sazanami.noise.colored.ColoredNoise` over training steps:
still exactly uniform on the same interval at every step, but a slot's noise drifts
slowly across steps instead of being redrawn. β = 0 is NEFTune itself, drawn with
``Tensor.uniform_`` from a ``torch.Generator`` seeded per step (bit-for-bit the formula
above; a test compares it with ``transformers``' hook).

Streams exist for ``max_batch × max_len × d`` slots ((K + 1) floats each); a longer or
wider batch is an error naming the limit.
"""

from __future__ import annotations

import math

import torch

from sazanami.errors import ParameterError, check_index
from sazanami.noise.colored import ColoredNoise
from sazanami.seeds import derive_seed
from sazanami.training.colors import Color

__all__ = ["ColoredEmbeddingNoise"]


class ColoredEmbeddingNoise:
    """NEFTune with color: ``noise(embeds)`` → embeds + ε (a new tensor); one call per training step.

    Args:
        color: β in [0, 2] and α (NEFTune's noise alpha, e.g. 5).
        seed: seeds the noise.
        max_batch: the largest batch the colored streams cover (β > 0).
        max_len: the longest sequence the colored streams cover (β > 0).
        max_steps: the longest time scale with the 1/f^β shape.

    :meth:`attach` registers it as a forward hook on an embedding module (active in
    ``train()`` mode only, like NEFTune). Keeps state (the step and the streams).
    """

    def __init__(
        self, color: Color, seed: int = 0, *, max_batch: int = 16, max_len: int = 512, max_steps: int = 4096
    ) -> None:
        if not isinstance(color, Color):
            color = Color(*color)
        self.color = color
        self.seed = seed
        self.max_batch = check_index("max_batch", max_batch, 1)
        self.max_len = check_index("max_len", max_len, 1)
        self.max_steps = check_index("max_steps", max_steps, 1)
        self.step = 0
        self._noise: ColoredNoise | None = None  # built on first use, when d is known

    def magnitude(self, length: int, dim: int) -> float:
        """α / √(L·d), rounded as ``transformers`` rounds it (a float32 square root)."""
        return float(self.color.scale / torch.sqrt(torch.tensor(length * dim)))

    def step_seed(self, step: int) -> int:
        """The seed of the white (β = 0) draw at ``step``."""
        return derive_seed(self.seed, "neftune", step)

    @torch.no_grad()
    def sample(self, shape: torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """ε for the current step, (B, L, d); advances the step."""
        B, L, d = shape
        mag = self.magnitude(L, d)
        if self.color.beta == 0.0:
            gen = torch.Generator().manual_seed(self.step_seed(self.step))
            eps = torch.zeros(shape, dtype=dtype).uniform_(-mag, mag, generator=gen)
        else:
            if B > self.max_batch:
                raise ParameterError("max_batch", f"batch of {B} rows exceeds max_batch = {self.max_batch}")
            if L > self.max_len:
                raise ParameterError("max_len", f"sequence of {L} positions exceeds max_len = {self.max_len}")
            if self._noise is None:
                self._dim = d
                self._noise = ColoredNoise(
                    self.color.beta, self.max_batch * self.max_len * d, self.seed, max_steps=self.max_steps
                )
            elif d != self._dim:
                raise ParameterError("embeds", f"embedding width changed from {self._dim} to {d}")
            x = self._noise.step().view(self.max_batch, self.max_len, d)[:B, :L]  # (B, L, d) unit normals
            eps = torch.erf(x / math.sqrt(2)).mul_(mag).to(dtype)  # 2Φ(x) − 1 ∈ (−1, 1), uniform
        self.step += 1
        return eps

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds (B, L, d) + ε; a new tensor (the input is not modified)."""
        return embeds + self.sample(embeds.shape, embeds.dtype).to(embeds.device)

    def attach(self, module: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
        """Add the noise to ``module``'s output in training mode; returns the hook handle."""

        def hook(mod: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return self(output) if mod.training else output

        return module.register_forward_hook(hook)

    def state_dict(self) -> dict:
        return {"step": self.step, "noise": None if self._noise is None else self._noise.snapshot()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        if state["noise"] is not None:
            snap = state["noise"]
            self._dim = snap.streams // (self.max_batch * self.max_len)
            self._noise = ColoredNoise(self.color.beta, snap.streams, self.seed, max_steps=self.max_steps)
            self._noise.restore(snap)
