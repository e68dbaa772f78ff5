"""``transformers`` Trainer callbacks for the training fluctuations.

    from transformers import Trainer
    from sazanami.training import Color
    from sazanami.training.callbacks import (
        ColoredLRCallback, EmbeddingNoiseCallback, GradientNoiseCallback, GradientFilterCallback)

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[
        ColoredLRCallback(Color.parse("pink:0.3"), seed=0),
        EmbeddingNoiseCallback(Color.parse("pink:5"), seed=0),
        GradientNoiseCallback(Color.parse("pink:0.01"), seed=0),
        GradientFilterCallback("ema", lamb=2.0),
    ])

- The colored LR multiplies the Trainer's own schedule: at each step's start the group's
  learning rate becomes the scheduler's value (``get_last_lr``) times m_t.
- Gradient noise and filters run in ``on_pre_optimizer_step`` (after clipping, before
  ``optimizer.step()``), on the parameters that require grad.
- Embedding noise hooks the model's input embeddings from ``on_train_begin`` to
  ``on_train_end``; leave the Trainer's own ``neftune_noise_alpha`` unset.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from sazanami.training.colors import Color
from sazanami.training.embedding_noise import ColoredEmbeddingNoise
from sazanami.training.gradient_noise import ColoredGradientNoise
from sazanami.training.lr import LRMultiplier
from sazanami.training.spectral_filter import GrokfastEMA, GrokfastMA, SpectralGain

__all__ = ["ColoredLRCallback", "EmbeddingNoiseCallback", "GradientFilterCallback", "GradientNoiseCallback"]


class ColoredLRCallback(TrainerCallback):
    """lr_t = (the Trainer's scheduled lr) · exp(σ·x_t − σ²/2)."""

    def __init__(self, color: Color, seed: int = 0, *, max_steps: int = 4096) -> None:
        self.multiplier = LRMultiplier(color, seed, max_steps=max_steps)
        self.history: list[float] = []

    def on_step_begin(
        self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None, **kw: Any
    ) -> None:
        m = self.multiplier.next()
        self.history.append(m)
        base = lr_scheduler.get_last_lr() if lr_scheduler is not None else [g["lr"] for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * m


class _GradientCallback(TrainerCallback):
    def __init__(self) -> None:
        self.piece: Any = None

    def _make(self, params: list) -> Any:
        raise NotImplementedError

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.piece = self._make([p for p in model.parameters() if p.requires_grad])

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.piece.step()


class GradientNoiseCallback(_GradientCallback):
    """Colored gradient noise (:class:`~sazanami.training.gradient_noise.ColoredGradientNoise`)."""

    def __init__(self, color: Color, seed: int = 0, **options: Any) -> None:
        super().__init__()
        self.color, self.seed, self.options = color, seed, options

    def _make(self, params: list) -> Any:
        return ColoredGradientNoise(params, self.color, self.seed, **self.options)


class GradientFilterCallback(_GradientCallback):
    """A spectral gradient filter: ``ema``, ``ma`` or ``spectral`` with its options."""

    KINDS = {"ema": GrokfastEMA, "ma": GrokfastMA, "spectral": SpectralGain}

    def __init__(self, kind: str, **options: Any) -> None:
        super().__init__()
        if kind not in self.KINDS:
            from sazanami.errors import ParameterError

            raise ParameterError("kind", f"kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        self.kind, self.options = kind, options

    def _make(self, params: list) -> Any:
        return self.KINDS[self.kind](params, **self.options)


class EmbeddingNoiseCallback(TrainerCallback):
    """Colored NEFTune on the model's input embeddings during training."""

    def __init__(self, color: Color, seed: int = 0, **options: Any) -> None:
        self.noise = ColoredEmbeddingNoise(color, seed, **options)
        self._handle: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self._handle = self.noise.attach(model.get_input_embeddings())

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
