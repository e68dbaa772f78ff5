"""Diversity, coherence and spectral metrics for sets of generated texts.

Four families, each a plain function:

- **lexical diversity** of a set of texts: :func:`distinct_n`, :func:`ngram_diversity`,
  :func:`self_bleu`, :func:`compression_ratio`, :func:`self_repetition`;
- **semantic diversity** from sentence embeddings (all-MiniLM-L6-v2 by default, see
  :mod:`sazanami.measure.embeddings`): :func:`semantic_diversity`, :func:`semantic_clusters`,
  and the creativity proxies :func:`novelty` and :func:`typicality`;
- **coherence** from per-token statistics under a reference model, so they do not depend on
  a model class: :func:`token_stats` computes them from any ``forward``;
  :func:`perplexity` and :func:`surprisal_entropy_gap` summarise them;
- **spectra** of the surprisal series: :func:`surprisal_spectrum`.

Lexical metrics share one tokenisation, :func:`words`: lowercase, then the regex ``\\w+``
(runs of Unicode letters, digits and underscores; punctuation is dropped, so "don't" is
two words). N-grams never cross the boundary between two texts.

A metric that is undefined on its input (no n-gram of the requested order, a surprisal
series too short for a spectrum) returns ``nan``; malformed input (an empty list, ``n < 1``,
mismatched lengths) raises :class:`~sazanami.errors.ParameterError` naming the argument.
"""

from __future__ import annotations

import gzip
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from sazanami.errors import ParameterError, SazanamiError, check_int, check_range
from sazanami.measure.embeddings import check_texts

if TYPE_CHECKING:
    from sazanami.measure.embeddings import TextEncoder

__all__ = [
    "MIN_SPECTRUM_LENGTH",
    "compression_ratio",
    "distinct_n",
    "ngram_diversity",
    "novelty",
    "perplexity",
    "self_bleu",
    "self_repetition",
    "semantic_clusters",
    "semantic_diversity",
    "surprisal_entropy_gap",
    "surprisal_spectrum",
    "token_stats",
    "typicality",
    "words",
]

#: Shortest surprisal series :func:`surprisal_spectrum` analyses; shorter ones give nan.
MIN_SPECTRUM_LENGTH = 64

_WORD = re.compile(r"\w+")
# Per-token log-probabilities are <= 0 and entropies >= 0 up to float rounding.
_ROUNDING = 1e-5

Series = torch.Tensor | Sequence[float]


# --------------------------------------------------------------------------- lexical


def words(text: str) -> list[str]:
    """Split ``text`` into the words the lexical metrics count: lowercase, regex ``\\w+``.

    >>> words("The cat, the HAT!")
    ['the', 'cat', 'the', 'hat']
    """
    return _WORD.findall(text.lower())


def distinct_n(texts: list[str], n: int = 1) -> float:
    """Distinct-n of a set: distinct n-grams / total n-grams, pooled over all texts.

    Li et al. (2016), "A Diversity-Promoting Objective Function for Neural Conversation
    Models". In [0, 1]; 1 when no n-gram repeats anywhere in the set. nan when the texts
    hold no n-gram (every text shorter than ``n`` words).

    >>> distinct_n(["a b", "a c"], 1)
    0.75
    """
    texts = check_texts(texts)
    check_int("n", n, 1)
    counts = _ngram_counts(texts, n)
    total = sum(counts.values())
    return len(counts) / total if total else math.nan


def ngram_diversity(texts: list[str]) -> float:
    """N-gram diversity: the sum of :func:`distinct_n` for n = 1, 2, 3, 4.

    As in Meister et al. (2023), "Locally Typical Sampling" (TACL). In [0, 4]; 4 when no
    n-gram of any order repeats. nan when the set holds no 4-gram (every text is shorter
    than 4 words).
    """
    texts = check_texts(texts)
    return sum(distinct_n(texts, n) for n in range(1, 5))


def self_bleu(texts: list[str]) -> float:
    """Self-BLEU (Zhu et al., 2018, Texygen): mean BLEU of each text against all the others.

    Each text is the hypothesis and the other texts are its references, scored with
    sacrebleu's ``sentence_bleu`` (13a tokenizer, ``lowercase=True``, exponential smoothing,
    effective order). Returned on a **0-1 scale** (sacrebleu's score / 100), so it reads
    like the other set metrics; higher = more alike = less diverse. Needs at least 2 texts.

    Requires ``sacrebleu`` (``pip install sacrebleu``).
    """
    texts = check_texts(texts)
    if len(texts) < 2:
        raise ParameterError("texts", f"texts must hold at least 2 texts, got {len(texts)}")
    try:
        from sacrebleu import sentence_bleu
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SazanamiError("self_bleu needs sacrebleu; run `pip install sacrebleu`") from exc
    scores = [sentence_bleu(hyp, texts[:i] + texts[i + 1 :], lowercase=True).score for i, hyp in enumerate(texts)]
    # Clipped: sacrebleu can return 100.00000000000004.
    return min(max(sum(scores) / len(scores) / 100.0, 0.0), 1.0)


def compression_ratio(texts: list[str]) -> float:
    """gzip compression ratio: ``len(raw) / len(gzip(raw))``, raw = the texts joined by newlines (UTF-8).

    Higher = more repetitive (within and across texts). gzip's header and trailer (~20
    bytes) dominate short inputs, so below a few hundred bytes the ratio is < 1 and only
    comparisons between sets of similar size mean much. Deterministic (mtime fixed at 0).
    """
    texts = check_texts(texts)
    raw = "\n".join(texts).encode("utf-8")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


def self_repetition(texts: list[str], n: int = 4) -> float:
    """Cross-text repetition: the mean, over texts, of the fraction of a text's distinct
    n-grams that also occur in at least one other text of the set.

    A normalised form of the self-repetition of Salkar et al. (2022), "Self-Repetition in
    Abstractive Neural Summarizers", who count n-grams (n >= 4) shared by several outputs
    of the same system. In [0, 1]; 0 when no text shares an n-gram with another, 1 when
    every n-gram of every text recurs elsewhere. Repetition *inside* one text does not
    count. Texts with fewer than ``n`` words are left out of the mean; nan when all are.
    Needs at least 2 texts.
    """
    texts = check_texts(texts)
    check_int("n", n, 1)
    if len(texts) < 2:
        raise ParameterError("texts", f"texts must hold at least 2 texts, got {len(texts)}")
    sets = [set(_ngrams(words(t), n)) for t in texts]
    # In how many texts each n-gram occurs: shared iff in >= 2.
    doc_freq = Counter(g for s in sets for g in s)
    fractions = [sum(doc_freq[g] > 1 for g in s) / len(s) for s in sets if s]
    return sum(fractions) / len(fractions) if fractions else math.nan


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _ngram_counts(texts: list[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(_ngrams(words(text), n))
    return counts


# --------------------------------------------------------------------------- semantic


def semantic_diversity(texts: list[str], embedder: TextEncoder | None = None) -> float:
    """Mean pairwise cosine distance (1 - cosine similarity) over all pairs of texts.

    In [0, 2]; 0 when all texts embed identically; unrelated sentences under
    all-MiniLM-L6-v2 sit around 0.8-1. Needs at least 2 texts. ``embedder`` defaults to
    :func:`sazanami.measure.embeddings.get_embedder`.
    """
    texts = check_texts(texts)
    if len(texts) < 2:
        raise ParameterError("texts", f"texts must hold at least 2 texts, got {len(texts)}")
    emb = embed_texts(texts, embedder)  # (N, D), unit rows
    n = len(texts)
    i, j = torch.triu_indices(n, n, offset=1)
    sims = (emb @ emb.T)[i, j]  # (N*(N-1)/2,)
    return float((1.0 - sims).mean())


def semantic_clusters(texts: list[str], threshold: float = 0.3, embedder: TextEncoder | None = None) -> int:
    """Number of clusters of meaning: average-linkage agglomerative clustering of the
    embeddings under cosine distance, cut at ``threshold``.

    Two groups merge while the mean cosine distance between their members is <= threshold
    (``scipy.cluster.hierarchy.linkage(method="average")``, ``fcluster(criterion="distance")``).
    ``threshold`` in (0, 2]; 0.3 keeps paraphrases together and splits different topics.
    Between 1 and ``len(texts)``.
    """
    texts = check_texts(texts)
    check_range("threshold", threshold, 0.0, 2.0, low_open=True)
    if len(texts) == 1:
        return 1
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    emb = embed_texts(texts, embedder).double().numpy()  # (N, D)
    # Clipped: rounding can give -1e-16 for identical directions.
    distances = pdist(emb, metric="cosine").clip(min=0.0)
    labels = fcluster(linkage(distances, method="average"), t=threshold, criterion="distance")
    return len(set(labels.tolist()))


def novelty(texts: list[str], reference_text: str, embedder: TextEncoder | None = None) -> list[float]:
    """Per text, the cosine distance of its embedding to that of ``reference_text``.

    A creativity proxy after Peeperkorn et al. (2024), "Is Temperature the Creativity
    Parameter of Large Language Models?" (ICCC'24), who measure how far sampled stories
    move from an exemplar in embedding space. Pass the greedy (or otherwise default)
    output as ``reference_text``: novelty is then how far each text moves away from what
    the model says by default. Each value in [0, 2].
    """
    texts = check_texts(texts)
    if not isinstance(reference_text, str):
        raise ParameterError("reference_text", f"reference_text must be a str, got {type(reference_text).__name__}")
    emb = embed_texts([*texts, reference_text], embedder)  # (N+1, D)
    return (1.0 - emb[:-1] @ emb[-1]).tolist()


def typicality(texts: list[str], embedder: TextEncoder | None = None) -> list[float]:
    """Per text, the cosine similarity of its embedding to the centroid of the set.

    A creativity proxy after Peeperkorn et al. (2024): how typical each text is of what
    the set says on average. The centroid is the mean of the unit embeddings. Each value
    in [-1, 1]; 1 for every text of a set of identical texts.
    """
    texts = check_texts(texts)
    emb = embed_texts(texts, embedder)  # (N, D)
    centroid = torch.nn.functional.normalize(emb.mean(dim=0), dim=0)  # (D,)
    return (emb @ centroid).tolist()


def embed_texts(texts: list[str], embedder: TextEncoder | None) -> torch.Tensor:
    """Embed with ``embedder`` (default: the shared MiniLM), as float64 unit rows (N, D)."""
    if embedder is None:
        from sazanami.measure.embeddings import get_embedder

        embedder = get_embedder()
    emb = torch.as_tensor(embedder.encode(list(texts))).detach().cpu().double()
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise SazanamiError(f"embedder.encode returned shape {tuple(emb.shape)}, expected ({len(texts)}, D)")
    return torch.nn.functional.normalize(emb, dim=-1)


# --------------------------------------------------------------------------- coherence


def token_stats(
    forward: Callable[[torch.Tensor], torch.Tensor],
    prompt_ids: list[int],
    completion_ids: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score a completion under a reference causal LM, token by token.

    Args:
        forward: ``forward(input_ids: LongTensor (B, T)) -> logits (B, T, V)``, where
            ``logits[:, t]`` predicts token ``t + 1`` (any causal LM; e.g.
            ``lambda ids: model(ids).logits`` for a transformers model).
        prompt_ids: the context, at least one token (the first completion token needs one).
        completion_ids: the tokens to score, at least one.

    Returns:
        ``(logprobs, entropies)``, float32 tensors of shape (T,), T = len(completion_ids):
        ``logprobs[t] = log p(c_t | prompt, c_<t)`` and ``entropies[t]`` the entropy (nats)
        of that next-token distribution. One forward pass over prompt + completion, under
        ``torch.no_grad``; the distribution is the model's own (T = 1, no truncation).
    """
    prompt = _check_ids("prompt_ids", prompt_ids)
    completion = _check_ids("completion_ids", completion_ids)
    ids = torch.tensor([prompt + completion], dtype=torch.long)  # (1, P+T)
    with torch.no_grad():
        logits = forward(ids)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or logits.shape[:2] != ids.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SazanamiError(f"forward must return logits of shape (1, {ids.shape[1]}, V), got {shape}")
    vocab = logits.shape[-1]
    if max(completion) >= vocab:
        raise ParameterError("completion_ids", f"completion_ids must be in [0, {vocab}), got {max(completion)}")
    p, t = len(prompt), len(completion)
    # Position p-1+k holds the distribution of completion token k.
    logp = torch.log_softmax(logits[0, p - 1 : p - 1 + t].float(), dim=-1)  # (T, V)
    target = torch.tensor(completion, device=logp.device)
    logprobs = logp.gather(-1, target[:, None]).squeeze(-1)  # (T,)
    # 0 * log 0 = 0: masked (-inf) logits contribute nothing instead of nan.
    entropies = -torch.where(logp.isfinite(), logp.exp() * logp, 0.0).sum(-1)  # (T,)
    return logprobs.cpu(), entropies.cpu()


def perplexity(token_logprobs: Series) -> float:
    """Perplexity of one text: ``exp(-mean(token_logprobs))`` (natural-log probabilities).

    1 when every token had probability 1; inf when some token had probability 0.
    """
    lp = _as_series("token_logprobs", token_logprobs, upper=0.0)
    return float(torch.exp(-lp.mean()))


def surprisal_entropy_gap(token_logprobs: Series, token_entropies: Series) -> float:
    """Mean surprisal minus mean entropy of one text: ``mean(-log p_t) - mean(H_t)``, in nats.

    The zero-shot statistic of Radvand, Abdolmaleki, Mostagir & Tewari (2025), "Zero-Shot
    Statistical Tests for LLM-Generated Text Detection using Finite Sample Concentration
    Inequalities" (arXiv:2501.02406): for text sampled from the reference model itself at
    temperature 1, each ``-log p_t`` has conditional mean ``H_t``, so the gap concentrates
    around 0 (its deviation shrinks like 1/sqrt(T)). Text that favours likely tokens
    (greedy, low temperature, truncation) gives a negative gap; text the model finds
    surprising (high temperature, another author) a positive one.
    """
    lp = _as_series("token_logprobs", token_logprobs, upper=0.0)
    ent = _as_series("token_entropies", token_entropies, lower=0.0)
    if lp.shape != ent.shape:
        raise ParameterError(
            "token_entropies",
            f"token_entropies must have the length of token_logprobs ({lp.numel()}), got {ent.numel()}",
        )
    return float((-lp).mean() - ent.mean())


def _as_series(
    param: str,
    values: Series,
    *,
    lower: float | None = None,
    upper: float | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Check a per-token series and return it as a 1-D float64 tensor."""
    try:
        x = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ParameterError(param, f"{param} must be a 1-D sequence of numbers") from exc
    if x.ndim != 1:
        raise ParameterError(param, f"{param} must be 1-D, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ParameterError(param, f"{param} must not be empty")
    if x.isnan().any():
        raise ParameterError(param, f"{param} must not contain nan")
    if finite and not x.isfinite().all():
        raise ParameterError(param, f"{param} must be finite")
    if upper is not None and (x > upper + _ROUNDING).any():
        raise ParameterError(param, f"{param} must be in (-inf, {upper:g}], got {x.max().item():g}")
    if lower is not None and (x < lower - _ROUNDING).any():
        raise ParameterError(param, f"{param} must be in [{lower:g}, inf), got {x.min().item():g}")
    return x


def _check_ids(param: str, ids: object) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)) or not ids:
        raise ParameterError(param, f"{param} must be a non-empty list of token ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ParameterError(param, f"{param} must hold ints")
    if min(ids) < 0:
        raise ParameterError(param, f"{param} must be in [0, vocab), got {min(ids)}")
    return list(ids)


# --------------------------------------------------------------------------- spectra


def surprisal_spectrum(token_logprobs: Series) -> dict[str, float]:
    """Spectral shape of the surprisal series ``-token_logprobs`` of one text.

    Returns ``{"psd_slope": ..., "dfa_exponent": ...}`` from
    :func:`sazanami.noise.spectra.psd_slope` and :func:`sazanami.noise.spectra.dfa_exponent`, under their
    conventions (white noise: slope ~0, DFA exponent ~0.5; pink: DFA ~1). Both are nan for
    series shorter than ``MIN_SPECTRUM_LENGTH`` (64) tokens, where the fits mean little.
    """
    lp = _as_series("token_logprobs", token_logprobs, upper=0.0, finite=True)
    if lp.numel() < MIN_SPECTRUM_LENGTH:
        return {"psd_slope": math.nan, "dfa_exponent": math.nan}
    # Imported here: scipy.signal (behind sazanami.noise.spectra) is slow to import; only this needs it.
    from sazanami.noise.spectra import dfa_exponent, psd_slope

    surprisal = (-lp).numpy()
    return {"psd_slope": float(psd_slope(surprisal)), "dfa_exponent": float(dfa_exponent(surprisal))}
