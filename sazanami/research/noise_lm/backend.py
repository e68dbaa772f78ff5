"""The noise LM behind sazanami's Backend protocol: ``models.load("noise-lm:DIR")``.

What it can and cannot do:

- logits are the model's next-token log-probabilities (the full vocabulary, exact distances),
  so every sampler, fluctuation, search strategy and beam runs on it unchanged;
- the "cache" holds each row's token ids (the model has no keys/values), so it cannot feed
  the prefix cache (``supports_prefix_cache = False``);
- hidden and embedding fluctuations perturb the encoder embedding, the seed's own site of a
  noise embedding (hook layers −1 then 0; ``num_layers = 1``);
- its vocabulary is word-level; a prompt's out-of-vocabulary words become ``<unk>``;
- islands (tools, grammars) are not offered: they need a byte-level tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sazanami.backends import Capabilities, HiddenHook
from sazanami.noise.fluctuation import POINTS
from sazanami.research.noise_lm.model import NoiseLM
from sazanami.research.noise_lm.noise import PAD


class TokenCache:
    """Each row's token ids, (B, capacity); −1 where nothing is written yet."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    @classmethod
    def empty(cls, batch: int, capacity: int) -> TokenCache:
        return cls(torch.full((batch, capacity), PAD, dtype=torch.long))

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        return self.tokens.shape[1]

    def select(self, rows: torch.Tensor) -> TokenCache:
        return TokenCache(self.tokens.index_select(0, rows))

    def narrow(self, row: int, count: int = 1) -> TokenCache:
        """A view: writes go to this cache."""
        return TokenCache(self.tokens.narrow(0, row, count))

    def copy_rows(self, src: TokenCache, src_row: int, dst_rows: torch.Tensor, length: int) -> None:
        self.tokens[dst_rows, :length] = src.tokens[src_row : src_row + 1, :length]


class NoiseLMBackend:
    """A :class:`~sazanami.research.noise_lm.model.NoiseLM` as a sazanami backend."""

    supports_prefix_cache = False
    num_layers = 1
    capabilities = Capabilities(backend="noise-lm", fluctuation_points=POINTS, islands=False, beams=True)

    def __init__(self, model: NoiseLM, name: str = "noise-lm") -> None:
        self.model = model
        self.name = name
        self.tokenizer = model.tokenizer
        self.vocab_size = model.vocab_size
        self.hidden_size = model.config.dim
        self.max_positions = 1 << 20

    @classmethod
    def from_dir(cls, path: str | Path) -> NoiseLMBackend:
        return cls(NoiseLM.load(path), name=f"noise-lm:{path}")

    def new_cache(self, batch: int, capacity: int) -> TokenCache:
        return TokenCache.empty(batch, capacity)

    def forward(
        self,
        tokens: torch.Tensor,
        cache: TokenCache,
        starts: torch.Tensor,
        hidden_hook: HiddenHook | None = None,
        last_only: bool = True,
    ) -> torch.Tensor:
        B, T = tokens.shape
        order = self.model.config.order
        pos = starts[:, None] + torch.arange(T)[None]  # (B, T)
        cache.tokens.scatter_(1, pos, tokens)
        # context of position p: the `order` tokens before and including p, most recent first
        back = pos[..., None] - torch.arange(order)  # (B, T, order)
        ctx = cache.tokens.gather(1, back.clamp(min=0).view(B, -1)).view(B, T, order)
        ctx = torch.where(back >= 0, ctx, PAD)
        if last_only:
            ctx = ctx[:, -1:]
        Tq = ctx.shape[1]
        enc = torch.from_numpy(self.model.encoder(ctx.reshape(-1, order).numpy())).view(B, Tq, -1)  # (B, Tq, dim)
        if hidden_hook is not None:
            enc = hidden_hook(0, hidden_hook(-1, enc)).clamp(0.0, 1.0)  # keys live in [0, 1)
        cfg = self.model.config
        dist = self.model.key_distances(enc.reshape(B * Tq, -1).numpy())
        logits = torch.from_numpy(self.model.logprobs_from(dist, cfg.temperature, cfg.floor)).view(B, Tq, -1)
        return logits[:, -1] if last_only else logits
