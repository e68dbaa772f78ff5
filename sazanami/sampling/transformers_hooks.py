"""Fluctuations as drop-ins for ``transformers``' ``model.generate``.

- :class:`FluctuationLogitsProcessor` — the logits-level entries (``logits``,
  ``temperature``, ``draw``) as a ``LogitsProcessor``. With ``draw`` it leaves a
  single finite logit (the colored-Gumbel argmax), so ``generate``'s own
  multinomial draw returns exactly that token. Pass ``temperature=1.0`` and no
  other warpers to ``generate`` when the processor handles temperature.
- :func:`hidden_noise_hooks` — ``hidden`` / ``embedding`` entries as forward hooks
  on a Hugging Face Llama-style model, removed when the context exits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from sazanami.noise.fluctuation import Fluctuation, FluctuationState
from sazanami.seeds import derive_seed

try:  # transformers is optional at import time; the classes need it when used
    from transformers import LogitsProcessor
except ImportError:  # pragma: no cover
    LogitsProcessor = object  # type: ignore[assignment,misc]


class FluctuationLogitsProcessor(LogitsProcessor):  # type: ignore[misc]
    """Apply a fluctuation's logits-level entries; row b uses ``derive_seed(seed, b)``.

    Keeps state (noise streams advance once per call); returns a new tensor.
    Can change the argmax (logits noise, draw).
    """

    def __init__(self, fluctuation: Any, seed: int, temperature: float = 1.0) -> None:
        self.fluctuation = Fluctuation.parse(fluctuation)
        self.seed = seed
        self.base_temperature = temperature
        self.states: list[FluctuationState | None] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        B, V = scores.shape
        if not self.states:
            self.states = [self.fluctuation.start(derive_seed(self.seed, b), V) for b in range(B)]
        out = scores.float().clone()
        for b, st in enumerate(self.states):
            if st is None:
                continue
            row = st.perturb_logits(out[b])
            t = st.temperature(self.base_temperature)
            row = row / t if t > 0 else row
            if st.draws:
                token = st.draw(row)
                row = torch.full_like(row, -math.inf)
                row[token] = 0.0
            out[b] = row
        return out.to(scores.dtype)


@contextlib.contextmanager
def hidden_noise_hooks(model: Any, fluctuation: Any, seed: int) -> Iterator[None]:
    """Register forward hooks adding the fluctuation's hidden/embedding noise; always removed.

    Noise enters the last position of each forward (the token being generated).
    """
    fl = Fluctuation.parse(fluctuation)
    inner = model.model if hasattr(model, "model") else model
    layers = inner.layers
    hidden_size = model.config.hidden_size
    states: list[FluctuationState | None] = []
    handles = []

    def make(layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            h = output[0] if isinstance(output, tuple) else output  # (B, T, C)
            if not states:
                states.extend(fl.start(derive_seed(seed, b), 1, hidden_size) for b in range(h.shape[0]))
            h = h.clone()
            for b, st in enumerate(states):
                x = st.hidden_noise_for(layer, len(layers)) if st is not None else None
                if x is not None:
                    scale = st.sigma_for(layer) * h[b, -1].float().norm() / math.sqrt(h.shape[-1])
                    h[b, -1] += (scale * x).to(h.dtype)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    try:
        if fl.embedding is not None:
            handles.append(inner.embed_tokens.register_forward_hook(make(-1)))
        if fl.hidden is not None:
            for i in fl.hidden.layers or (len(layers) // 2,):
                handles.append(layers[i % len(layers)].register_forward_hook(make(i % len(layers))))
        yield
    finally:
        for h in handles:
            h.remove()
