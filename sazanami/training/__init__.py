"""Training fluctuation: the noise sources applied over optimizer steps.

Each piece works in a plain PyTorch loop (call it between ``backward()`` and
``optimizer.step()``, or use it as the scheduler) and as a ``transformers`` Trainer
callback (:mod:`sazanami.training.callbacks`).
"""

from sazanami.training.colors import Color
from sazanami.training.embedding_noise import ColoredEmbeddingNoise
from sazanami.training.gradient_noise import ColoredGradientNoise
from sazanami.training.lr import ColoredLR, LRMultiplier, lr_multipliers, warmup_cosine
from sazanami.training.spectral_filter import GrokfastEMA, GrokfastMA, SpectralGain

__all__ = [
    "Color",
    "ColoredEmbeddingNoise",
    "ColoredGradientNoise",
    "ColoredLR",
    "GrokfastEMA",
    "GrokfastMA",
    "LRMultiplier",
    "SpectralGain",
    "lr_multipliers",
    "warmup_cosine",
]
