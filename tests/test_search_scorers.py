"""Scorers and selectors on hand-made inputs; the judge on nonsense (fake and tiny-model)."""

from __future__ import annotations

import math

import pytest
import torch

from sazanami.errors import ParameterError
from sazanami.search import (
    MMR,
    CombinedScorer,
    ContainsScorer,
    JudgeScorer,
    LogprobScorer,
    Node,
    NoveltyScorer,
    RegexScorer,
    Score,
    TopK,
    VerifierScorer,
    make_scorer,
    make_selector,
    parse_judge_score,
)
from sazanami.search.inflection import inflections, uses_word
from sazanami.search.scorers import token_logprobs


class FakeEmbedder:
    """Texts → fixed hand-made vectors (by first word)."""

    table = {"a": [1.0, 0.0, 0.0], "b": [0.9, 0.1, 0.0], "c": [0.0, 1.0, 0.0], "d": [0.0, 0.0, 1.0]}

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self.table[t.split()[0]] for t in texts])


def nodes(*pairs: tuple[str, float | None]) -> list[Node]:
    return [Node(i + 1, 0, text=t, score=s) for i, (t, s) in enumerate(pairs)]


# --------------------------------------------------------------------------- judge parsing


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("85", 85.0),
        ("Score: 85.", 85.0),
        ("  I'd say 72 because it is fine", 72.0),
        ("85/100", 85.0),
        ("8/10", 80.0),
        ("4 out of 5", 80.0),
        ("3.5/5", 70.0),
        ("90%", 90.0),
        ("eighty", 80.0),
        ("0", 0.0),
        ("100", 100.0),
    ],
)
def test_parse_judge_score_forms(reply, expected):
    assert parse_judge_score(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply", ["", "no idea", "150", "-5", "12/5", "\x00\ufffd#@!", "∞", "NaN", None, 42])
def test_parse_judge_score_nonsense_is_none(reply):
    assert parse_judge_score(reply) is None


def test_fake_judge_nonsense_is_unscored_never_a_crash():
    replies = iter(["blue cheese", "Score: 90", "", "1000", "7/10"])
    judge = JudgeScorer(fn=lambda prompt: next(replies))
    out = judge.score(["t1", "t2", "t3", "t4", "t5"])
    assert [s.value for s in out] == [None, 0.9, None, None, pytest.approx(0.7)]
    assert "blue cheese" in out[0].reason
    assert judge.cost_per_item == 0


def test_judge_prompt_template_and_validation():
    seen = []
    judge = JudgeScorer(template="T={task} X={text} ?", fn=lambda p: seen.append(p) or "50")
    assert judge("hello").value == 0.5
    assert seen == ["T= X=hello ?"]
    with pytest.raises(ParameterError, match="template"):
        JudgeScorer(template="no slot")
    with pytest.raises(ParameterError, match="max_tokens"):
        JudgeScorer(max_tokens=0)


def test_judge_on_tiny_model_gibberish(tiny_engine):
    judge = JudgeScorer(engine=tiny_engine, max_tokens=6)
    out = judge.score(["some answer", "another answer"])
    assert len(out) == 2
    for s in out:
        assert s.value is None or 0 <= s.value <= 1
        assert s.reason


# --------------------------------------------------------------------------- verifiers


@pytest.mark.parametrize(
    "word, text",
    [
        ("jump", "He jumps."),
        ("jump", "She jumped."),
        ("jump", "Jumping!"),
        ("run", "They ran home."),
        ("run", "running late"),
        ("knife", "two knives"),
        ("child", "the children"),
        ("ski", "we skied"),
        ("sip", "she sipped tea"),
        ("bake", "baking bread"),
        ("cry", "he cried"),
        ("fry", "fried eggs"),
        ("sing", "they sang"),
        ("write", "she wrote"),
        ("sell", "he sold it"),
        ("dig", "they dug"),
        ("ice cream", "two ice creams"),
        ("Dog", "a DOG"),
    ],
)
def test_contains_inflections(word, text):
    assert uses_word(word, text)


@pytest.mark.parametrize(
    "word, text", [("sun", "a sunny day"), ("cat", "concatenate"), ("park", "parakeet"), ("ice cream", "cream ice")]
)
def test_contains_rejects_non_inflections(word, text):
    assert not uses_word(word, text)


def test_inflections_include_regular_forms():
    assert {"jump", "jumps", "jumped", "jumping"} <= inflections("jump")


def test_contains_scorer_fraction_and_reason():
    s = ContainsScorer(["dog", "ball", "park"])
    out = s("The dogs chased balls.")
    assert out.value == pytest.approx(2 / 3) and out.reason == "missing: park"
    assert s("A dog's ball in the park.").reason == "uses every word"
    with pytest.raises(ParameterError):
        ContainsScorer([])


def test_regex_scorer():
    s = RegexScorer([r"\d+", r"^A"])
    assert s("A 12").value == 1.0
    assert s("b 12").value == 0.5
    assert s("b").value == 0.0
    with pytest.raises(ParameterError, match="regular expression"):
        RegexScorer("(")


def test_verifier_scorer_kinds():
    out = VerifierScorer(lambda t: {"a": True, "b": False, "c": None, "d": math.nan, "e": 0.25, "f": (0.5, "half")}[t])(
        ["a", "b", "c", "d", "e", "f"]
    )
    assert [s.value for s in out] == [1.0, 0.0, None, None, 0.25, 0.5]
    assert out[5].reason == "half"

    def broken(text: str) -> float:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        VerifierScorer(broken)("x")
    with pytest.raises(ParameterError):
        VerifierScorer(42)  # type: ignore[arg-type]


def test_logprob_scorer_from_recorded_logprobs():
    n = Node(1, 0, text="x", logprobs=[-1.0, -3.0])
    s = LogprobScorer().score([n, Node(2, 0, text="")])
    assert s[0].value == -2.0 and "perplexity 7.39" in s[0].reason
    assert s[1].value is None


def test_logprob_teacher_forcing_on_tiny(tiny_engine):
    lps = token_logprobs(tiny_engine, "hi", "abc")
    assert len(lps) == 3 and all(x <= 0 for x in lps)
    # Without a search there is no task: the first token has nothing to condition on.
    bare = token_logprobs(tiny_engine, "", "abc")
    assert len(bare) == 2
    assert LogprobScorer(engine=tiny_engine)("abc").value == pytest.approx(sum(bare) / 2)


def test_novelty_with_fake_embedder():
    out = NoveltyScorer(FakeEmbedder()).score(["a", "b", "c"])
    # "c" is nearly orthogonal to both others: the most novel; a and b are near-duplicates.
    assert out[2].value > out[0].value and out[2].value > out[1].value
    assert NoveltyScorer(FakeEmbedder()).score(["a", "c", "d"])[0].value == pytest.approx(1.0, abs=1e-6)
    assert NoveltyScorer(FakeEmbedder()).score(["a"])[0].value is None
    ref = NoveltyScorer(FakeEmbedder(), reference=["a"]).score(["a", "d"])
    assert ref[0].value == pytest.approx(0.0, abs=1e-6) and ref[1].value == pytest.approx(1.0, abs=1e-6)


def test_combined_sum_drops_unscored_parts():
    a = VerifierScorer(lambda t: {"x": 1.0, "y": None}[t], "a")
    b = VerifierScorer(lambda t: {"x": 0.0, "y": 0.5}[t], "b")
    out = CombinedScorer([(a, 3.0), (b, 1.0)]).score(["x", "y"])
    assert out[0].value == pytest.approx(0.75)
    assert out[1].value == pytest.approx(0.5)  # a unscored: only b counts
    assert out[0].parts == {"a": 1.0, "b": 0.0}


def test_combined_rank_mode_with_ties_and_unscored():
    a = VerifierScorer(lambda t: {"p": 1.0, "q": 1.0, "r": 0.0, "s": None}[t], "a")
    out = CombinedScorer([(a, 1.0)], mode="rank").score(["p", "q", "r", "s"])
    # s unscored → rank 0; r next (1/3); p and q tie at the top ((2 + 3) / 2 / 3).
    assert [round(x.value, 4) for x in out] == [0.8333, 0.8333, 0.3333, 0.0]


def test_make_scorer_specs():
    assert isinstance(make_scorer("contains:dog, ball"), ContainsScorer)
    assert make_scorer("contains:dog, ball").words == ["dog", "ball"]
    r = make_scorer("regex:a+b")
    assert isinstance(r, RegexScorer) and r.patterns == ["a+b"]
    c = make_scorer("0.7*judge+0.3*novelty")
    assert isinstance(c, CombinedScorer) and [w for _, w in c.parts] == [0.7, 0.3] and c.mode == "sum"
    assert make_scorer("rank:judge+logprob").mode == "rank"
    assert make_scorer("py:math:isfinite").name == "isfinite"
    assert make_scorer({"type": "contains", "words": ["a"]}).words == ["a"]
    d = make_scorer({"type": "combine", "mode": "rank", "parts": [{"scorer": "logprob", "weight": 2}, "novelty"]})
    assert [s.name for s, _ in d.parts] == ["logprob", "novelty"]
    assert make_scorer(lambda t: 1.0)("x").value == 1.0
    for bad in ("judgee", "py:nope", "2x*judge+logprob", {"type": "nope"}, {"type": "contains", "word": "a"}, 3):
        with pytest.raises(ParameterError):
            make_scorer(bad)


def test_combined_duplicate_part_names_are_distinct():
    c = make_scorer("contains:a+contains:b")
    assert c.names == ["contains", "contains2"]
    assert c("a b").parts == {"contains": 1.0, "contains2": 1.0}


# --------------------------------------------------------------------------- selectors


def test_top_k_orders_by_score_unscored_last_ties_by_position():
    pool = nodes(("a", 0.5), ("b", None), ("c", 0.9), ("d", 0.5))
    assert [n.text for n in TopK(3).select(pool)] == ["c", "a", "d"]
    assert [n.text for n in TopK(10).select(pool)] == ["c", "a", "d", "b"]


def test_mmr_prefers_diverse_items():
    pool = nodes(("a x", 1.0), ("b x", 0.95), ("c x", 0.5), ("d x", 0.1))
    assert [n.text for n in TopK(2).select(pool)] == ["a x", "b x"]
    picked = MMR(2, diversity=0.5, embedder=FakeEmbedder()).select(pool)
    assert [n.text for n in picked] == ["a x", "c x"]  # b is a near-duplicate of a
    assert [n.text for n in MMR(3, diversity=0.0, embedder=FakeEmbedder()).select(pool)] == ["a x", "b x", "c x"]


def test_selector_validation():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="k must be"):
            TopK(bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="diversity"):
        MMR(2, diversity=1.5)
    with pytest.raises(ParameterError, match="selector"):
        make_selector("best")
    assert isinstance(make_selector({"method": "mmr", "k": 2}), MMR)
    assert make_selector("top-k", k=4).k == 4


def test_score_dataclass():
    assert Score(None).scored is False and Score(0.0).scored is True


def test_with_judge_template():
    from sazanami.search.scorer_specs import with_judge_template

    c = with_judge_template(make_scorer("0.5*judge+0.5*contains:a"), "Rate {text}")
    assert c.parts[0][0].template == "Rate {text}" and isinstance(c.parts[1][0], ContainsScorer)
    with pytest.raises(ParameterError, match="judge"):
        with_judge_template(make_scorer("logprob"), "Rate {text}")
