"""Baselines for the noise LM on the same word ids: interpolated Kneser–Ney and a tiny GPT."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class KneserNey:
    """Interpolated Kneser–Ney with one absolute discount (Chen & Goodman 1998, §3).

    The highest order uses counts, lower orders continuation counts N1+(• h w); the
    bottom interpolates with the uniform distribution, so no token gets probability 0.
    """

    def __init__(self, ids: np.ndarray, vocab_size: int, order: int = 3, discount: float = 0.75) -> None:
        self.V, self.order, self.D = vocab_size, order, discount
        seq = [int(t) for t in ids]
        grams = Counter(tuple(seq[i : i + order]) for i in range(len(seq) - order + 1))
        counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k]: k-gram → (continuation) count
        counts[order] = grams
        for k in range(order - 1, 0, -1):
            for g in counts[k + 1]:
                counts[k][g[1:]] += 1  # one more distinct left neighbour
        self.tables: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]] = [{} for _ in range(order + 1)]
        for k in range(1, order + 1):
            by_ctx: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
            for g, c in counts[k].items():
                by_ctx[g[:-1]].append((g[-1], c))
            for h, wc in by_ctx.items():
                w, c = zip(*wc)
                self.tables[k][h] = (np.array(w), np.array(c, dtype=np.float64))

    def size(self) -> int:
        """Stored numbers: one (word, count) pair per n-gram entry."""
        return 2 * sum(len(w) for t in self.tables for w, _ in t.values())

    def dist(self, history: list[int]) -> np.ndarray:
        """p(· | history) over the vocabulary, (V,)."""
        p = np.full(self.V, 1.0 / self.V)
        for k in range(1, self.order + 1):
            h = tuple(history[len(history) - (k - 1) :]) if k > 1 else ()
            if len(h) < k - 1 or h not in self.tables[k]:
                continue
            w, c = self.tables[k][h]
            total = c.sum()
            p = p * (self.D * len(w) / total)
            p[w] += np.maximum(c - self.D, 0) / total
        return p

    def evaluate(self, ids: np.ndarray, limit: int | None = None) -> dict:
        hits, nll, n = 0, 0.0, 0
        for i in range(1, len(ids) if limit is None else min(len(ids), limit + 1)):
            p = self.dist([int(t) for t in ids[max(0, i - self.order + 1) : i]])
            hits += int(p.argmax() == ids[i])
            nll -= math.log(p[ids[i]])
            n += 1
        return {"tokens": n, "accuracy": hits / n, "perplexity": math.exp(nll / n)}


class TinyGPT(nn.Module):
    """A decoder-only transformer (pre-norm, learned positions, tied embeddings)."""

    def __init__(
        self, vocab_size: int, dim: int = 256, layers: int = 4, heads: int = 4, context: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.context = context
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(context, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                elif name.endswith("bias"):
                    p.zero_()  # nn.Linear drew these from the global RNG

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) → (B, T, V)
        T = x.shape[1]
        h = self.embed(x) + self.pos(torch.arange(T))
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        h = self.norm(self.blocks(h, mask=mask, is_causal=True))
        return h @ self.embed.weight.T

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def train_gpt(
    model: TinyGPT,
    ids: np.ndarray,
    seconds: float,
    seed: int = 0,
    batch: int = 16,
    lr: float = 3e-3,
    checkpoints: tuple[float, ...] = (),
    on_checkpoint=None,  # noqa: ANN001 - callable(model, seconds, tokens)
) -> dict:
    """AdamW on random windows (seeded generator) for ``seconds`` of wall time."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(ids.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    T, steps, seen, t0 = model.context, 0, 0, time.perf_counter()
    pending = sorted(checkpoints)
    while (elapsed := time.perf_counter() - t0) < seconds:
        while pending and elapsed >= pending[0]:
            on_checkpoint(model, pending.pop(0), seen)
            t0 += time.perf_counter() - t0 - elapsed  # evaluation time is not training time
        starts = torch.randint(0, len(data) - T - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + T] for s in starts])
        y = torch.stack([data[s + 1 : s + T + 1] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps, seen = steps + 1, seen + batch * T
    return {"steps": steps, "tokens_seen": seen, "seconds": seconds}


@torch.no_grad()
def evaluate_gpt(model: TinyGPT, ids: np.ndarray, limit: int | None = None) -> dict:
    """Accuracy and perplexity, each token predicted from up to ``context`` tokens before it."""
    model.eval()
    ids = ids[: (limit + 1) if limit is not None else None]
    T, hits, nll, n = model.context, 0, 0.0, 0
    data = torch.from_numpy(ids.astype(np.int64))
    # non-overlapping windows; the first token of each window has only the window's context
    for a in range(0, len(data) - 1, T):
        x, y = data[a : a + T][None], data[a + 1 : a + T + 1]
        x = x[:, : len(y)]
        logp = F.log_softmax(model(x)[0], -1)
        hits += int((logp.argmax(-1) == y).sum())
        nll -= float(logp[torch.arange(len(y)), y].sum())
        n += len(y)
    model.train()
    return {"tokens": n, "accuracy": hits / n, "perplexity": math.exp(nll / n)}
