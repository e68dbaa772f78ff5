"""Selectors: keep the winners of a pool of scored candidates.

- :class:`TopK` — the k best by score;
- :class:`MMR` — maximal marginal relevance (Carbonell & Goldstein, 1998): greedily pick
  the item maximising ``(1 − diversity) · relevance − diversity · max cos(item, picked)``,
  relevance = score min-max normalised over the pool, similarity from sentence embeddings.

Both are deterministic: ties go to the item that comes first in the pool. Unscored items
rank below every scored one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sazanami.errors import ParameterError, check_int, check_range

if TYPE_CHECKING:
    from sazanami.measure.embeddings import TextEncoder

__all__ = ["MMR", "Selector", "TopK", "make_selector", "rank"]


def rank(items: Sequence[Any]) -> list[Any]:
    """``items`` best first: by score (unscored last), then by their order in ``items``."""
    order = sorted(range(len(items)), key=lambda i: (items[i].score is None, -(items[i].score or 0.0), i))
    return [items[i] for i in order]


class Selector:
    """Base class: ``select(items, k=None)`` returns at most k items, best first."""

    name = "selector"

    def __init__(self, k: int = 1) -> None:
        self.k = check_int("k", k, 1)

    def select(self, items: Sequence[Any], k: int | None = None) -> list[Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"method": self.name, "k": self.k}


class TopK(Selector):
    """The k highest-scoring items."""

    name = "top-k"

    def select(self, items: Sequence[Any], k: int | None = None) -> list[Any]:
        return rank(items)[: check_int("k", k, 1) if k is not None else self.k]


class MMR(Selector):
    """Diversity-aware selection by maximal marginal relevance over embeddings.

    Args:
        k: how many to keep.
        diversity: weight of dissimilarity in [0, 1]; 0 = top-k, 1 = only diversity
            (after the best item, which is always first).
        embedder: any ``encode(texts) -> (N, D)``; default all-MiniLM-L6-v2.
    """

    name = "mmr"

    def __init__(self, k: int = 1, diversity: float = 0.3, embedder: TextEncoder | None = None) -> None:
        super().__init__(k)
        check_range("diversity", diversity, 0, 1)
        self.diversity = float(diversity)
        self.embedder = embedder

    def select(self, items: Sequence[Any], k: int | None = None) -> list[Any]:
        import torch

        k = check_int("k", k, 1) if k is not None else self.k
        pool = rank(items)
        if len(pool) <= 1 or k == 1 or self.diversity == 0:
            return pool[:k]
        values = [x.score for x in pool]
        scored = [v for v in values if v is not None]
        lo, hi = (min(scored), max(scored)) if scored else (0.0, 0.0)
        rel = [0.0 if v is None else (1.0 if hi == lo else (v - lo) / (hi - lo)) for v in values]
        embedder = self.embedder
        if embedder is None:
            from sazanami.measure.embeddings import get_embedder

            embedder = get_embedder()
        emb = torch.nn.functional.normalize(embedder.encode([x.text for x in pool]).float(), dim=-1)  # (N, D)
        sim = (emb @ emb.T).tolist()  # (N, N)
        picked = [0]
        lam = 1.0 - self.diversity
        while len(picked) < min(k, len(pool)):
            best, best_val = -1, float("-inf")
            for i in range(len(pool)):
                if i in picked:
                    continue
                val = lam * rel[i] - self.diversity * max(sim[i][j] for j in picked)
                if val > best_val + 1e-12:
                    best, best_val = i, val
            picked.append(best)
        return [pool[i] for i in picked]

    def spec(self) -> dict[str, Any]:
        return {"method": self.name, "k": self.k, "diversity": self.diversity}


def make_selector(spec: Any, k: int | None = None) -> Selector:
    """A selector from a Selector, a name (``top-k``, ``mmr``) or a dict ``{method, k, diversity}``."""
    if isinstance(spec, Selector):
        return spec
    if spec is None:
        spec = "top-k"
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, dict):
        raise ParameterError("selector", f"selector must be a name or an object, got {spec!r}")
    spec = dict(spec)
    method = str(spec.pop("method", "top-k")).lower().replace("_", "-")
    if k is not None and "k" not in spec:
        spec["k"] = k
    if method in ("top-k", "topk", "top"):
        extra = sorted(set(spec) - {"k"})
        if extra:
            raise ParameterError(f"select.{extra[0]}", f"unknown field {extra[0]!r} for top-k; known: k")
        return TopK(spec.get("k", 1))
    if method == "mmr":
        extra = sorted(set(spec) - {"k", "diversity"})
        if extra:
            raise ParameterError(f"select.{extra[0]}", f"unknown field {extra[0]!r} for mmr; known: k, diversity")
        return MMR(spec.get("k", 1), spec.get("diversity", 0.3))
    raise ParameterError("selector", f"selector must be 'top-k' or 'mmr', got {method!r}")
