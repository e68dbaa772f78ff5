"""Per-sample measures of a long text, and the partition of a prompt's samples into classes.

- **repetition** inside one sample: :func:`longest_repeat` (the longest word n-gram that occurs
  twice) beside :func:`sazanami.measure.metrics.distinct_n` of the sample alone;
- **degeneration point** (:func:`degeneration_point`): the first token that starts a loop (a
  token n-gram seen before) or that had probability below ``p_min`` under the generator at T = 1;
- **equivalence classes** (:func:`partition`, :func:`distinct_k`): NoveltyBench's count of
  genuinely different answers (Zhang et al. 2025, "NoveltyBench"), offline: each sample joins
  the first class whose first member it is equivalent to, else opens a class. Equivalence is
  cosine similarity of all-MiniLM-L6-v2 embeddings ≥ a threshold (``embedding``) or unigram
  Jaccard overlap ≥ a threshold (``unigram``); :data:`PARTITIONERS` holds the thresholds chosen
  on the hand-labelled pairs of ``bench/data/equivalence_pairs.jsonl``
  (:func:`validate_partitioner`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sazanami.errors import ParameterError, check_int, check_range

if TYPE_CHECKING:
    from sazanami.measure.embeddings import TextEncoder

#: The hand-labelled pairs (same / different) that fix the partitioners' thresholds.
EQUIVALENCE_PAIRS = Path(__file__).resolve().parents[3] / "bench" / "data" / "equivalence_pairs.jsonl"

#: Partitioner name → its equivalence threshold (similarity at or above it = one class).
PARTITIONERS: dict[str, float] = {"embedding": 0.735, "unigram": 0.155}


def longest_repeat(text: str) -> int:
    """Length in words (:func:`sazanami.measure.metrics.words`) of the longest n-gram that occurs at
    least twice in ``text`` (occurrences may overlap); 0 when no word repeats.

    >>> longest_repeat("a b c a b d")
    2
    """
    from sazanami.measure.metrics import words

    w = words(text)
    n = 0
    # If an (n+1)-gram repeats, so does its n-gram prefix: grow n until none repeats.
    while n < len(w) - 1:
        grams = [tuple(w[i : i + n + 1]) for i in range(len(w) - n)]
        if len(set(grams)) == len(grams):
            break
        n += 1
    return n


def first_loop(token_ids: Sequence[int], n: int = 12) -> int | None:
    """Index of the first token of the first token n-gram that already occurred earlier
    (the second occurrence's start), or None. 12 tokens repeated verbatim is a loop in prose."""
    check_int("n", n, 1)
    seen: set[tuple[int, ...]] = set()
    ids = list(token_ids)
    for i in range(len(ids) - n + 1):
        g = tuple(ids[i : i + n])
        if g in seen:
            return i
        seen.add(g)
    return None


def first_improbable(logprobs: Sequence[float], p_min: float = 1e-4) -> int | None:
    """Index of the first token whose probability under the generator at T = 1 is below ``p_min``."""
    check_range("p_min", p_min, 0.0, 1.0, low_open=True)
    cut = math.log(p_min)
    return next((i for i, lp in enumerate(logprobs) if lp < cut), None)


def degeneration_point(
    token_ids: Sequence[int], logprobs: Sequence[float], n: int = 12, p_min: float = 1e-4
) -> dict[str, int | None]:
    """``{"loop": ..., "improbable": ..., "first": ...}``: :func:`first_loop`,
    :func:`first_improbable` and the earlier of the two (None where none happens)."""
    if len(token_ids) != len(logprobs):
        raise ParameterError(
            "logprobs", f"logprobs must have one value per token ({len(token_ids)}), got {len(logprobs)}"
        )
    loop, low = first_loop(token_ids, n), first_improbable(logprobs, p_min)
    first = min((x for x in (loop, low) if x is not None), default=None)
    return {"loop": loop, "improbable": low, "first": first}


def similarity_matrix(texts: list[str], partitioner: str, embedder: TextEncoder | None = None) -> torch.Tensor:
    """(N, N) similarities under ``partitioner``: embedding cosine or unigram Jaccard."""
    from sazanami.measure.metrics import embed_texts, words

    if partitioner not in PARTITIONERS:
        raise ParameterError(
            "partitioner", f"partitioner must be one of {', '.join(PARTITIONERS)}, got {partitioner!r}"
        )
    if partitioner == "embedding":
        emb = embed_texts(texts, embedder)  # (N, D) unit rows
        return emb @ emb.T
    sets = [set(words(t)) for t in texts]
    n = len(sets)
    sim = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            union = sets[i] | sets[j]
            sim[i, j] = sim[j, i] = len(sets[i] & sets[j]) / len(union) if union else 1.0
    return sim


def partition(
    texts: list[str],
    partitioner: str = "embedding",
    threshold: float | None = None,
    embedder: TextEncoder | None = None,
) -> list[int]:
    """Class label of each text (0, 1, ... in order of first appearance), NoveltyBench's greedy way:
    a text joins the first class whose first member it is equivalent to (similarity ≥ threshold)."""
    threshold = PARTITIONERS.get(partitioner, math.nan) if threshold is None else threshold
    if not texts:
        return []
    sim = similarity_matrix(texts, partitioner, embedder)
    check_range("threshold", threshold, -1.0, 1.0)
    heads: list[int] = []
    labels = []
    for i in range(len(texts)):
        label = next((c for c, h in enumerate(heads) if float(sim[i, h]) >= threshold), None)
        if label is None:
            label = len(heads)
            heads.append(i)
        labels.append(label)
    return labels


def distinct_k(
    texts: list[str],
    partitioner: str = "embedding",
    threshold: float | None = None,
    embedder: TextEncoder | None = None,
) -> int:
    """NoveltyBench's distinct_k: the number of equivalence classes among ``texts``."""
    return len(set(partition(texts, partitioner, threshold, embedder)))


def load_pairs(path: str | Path = EQUIVALENCE_PAIRS) -> list[dict]:
    """The labelled pairs: ``{"a": ..., "b": ..., "same": bool}`` per line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def validate_partitioner(
    partitioner: str, pairs: list[dict] | None = None, embedder: TextEncoder | None = None
) -> dict[str, float]:
    """Accuracy of ``partitioner`` at its threshold on the labelled pairs, and the best threshold.

    Returns ``{"threshold", "accuracy", "best_threshold", "best_accuracy", "pairs"}``; the best
    threshold is the midpoint between adjacent sorted similarities that classifies most pairs right.
    """
    pairs = load_pairs() if pairs is None else pairs
    sims = [float(similarity_matrix([p["a"], p["b"]], partitioner, embedder)[0, 1]) for p in pairs]
    same = [bool(p["same"]) for p in pairs]

    def acc(t: float) -> float:
        return sum((s >= t) == y for s, y in zip(sims, same, strict=True)) / len(pairs)

    s = sorted(sims)
    cands = [(a + b) / 2 for a, b in zip(s, s[1:], strict=False)] or s
    best = max(cands, key=acc)
    t = PARTITIONERS[partitioner]
    return {"threshold": t, "accuracy": acc(t), "best_threshold": best, "best_accuracy": acc(best), "pairs": len(pairs)}
