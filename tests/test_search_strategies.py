"""Strategies on the tiny model: budgets respected, trees well-formed, determinism by seed."""

from __future__ import annotations

import math
import random

import pytest
import torch

from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.search import (
    Budget,
    Ledger,
    Node,
    Tree,
    TreeError,
    neighbour,
    search,
    strategy_options,
    temperature_schedule,
)
from sazanami.search.strategies import annealed, check_mixture, mixture_cosine

PARAMS = SamplingParams(max_tokens=6)
BUDGET = 60

CASES = [
    ("best_of_n", {}),
    ("best_of_n", {"n": 3}),
    ("anneal", {"rounds": 2}),
    ("noise_search", {"mode": "random", "rounds": 2}),
    ("noise_search", {"mode": "paths", "rounds": 3}),
    (
        "noise_search",
        {
            "mode": "zero-order",
            "rounds": 2,
            "n": 3,
            "params": SamplingParams(max_tokens=6, fluctuation="pink-temperature"),
        },
    ),
    ("beam", {"width": 3}),
    ("tree", {"chunk": 3, "branch": 2}),
    ("optimize", {"n": 2}),
    ("synthesize", {"base": "noise_search", "mode": "paths", "k": 2}),
]


def run(engine, strategy, options, seed=5, scorer="contains:a,e", budget=BUDGET, params=PARAMS):
    options = dict(options)
    params = options.pop("params", params)
    return search(engine, "hello", strategy, scorer=scorer, budget=budget, params=params, seed=seed, **options)


def check_tree(tree: Tree, budget: int) -> None:
    tree.validate()
    ids = [n.id for n in tree.nodes]
    assert ids == list(range(len(tree.nodes)))
    assert all(n.parent is not None and n.parent < n.id for n in tree.nodes[1:])
    s = tree.spend
    assert s["generated_tokens"] <= budget
    assert sum(s["by_kind"].values()) == s["generated_tokens"]
    # Candidate tokens are part of what was charged (beam charges every live beam's step).
    charged = s["generated_tokens"] - s["by_kind"].get("judge", 0)
    assert sum(n.tokens for n in tree.nodes) <= charged
    for n in tree.nodes[1:]:
        assert len(n.token_ids) == len(n.logprobs) and n.tokens <= len(n.token_ids)
    assert tree.best is not None and not tree.best_node.partial
    assert Tree.from_json(tree.to_json()).to_dict() == tree.to_dict()


@pytest.mark.parametrize("strategy, options", CASES, ids=[f"{s}-{o.get('mode', '')}" for s, o in CASES])
def test_strategy_budget_tree_and_determinism(tiny_engine, strategy, options):
    a = run(tiny_engine, strategy, options)
    check_tree(a, BUDGET)
    assert len(a.nodes) > 2
    b = run(tiny_engine, strategy, options)
    # The second run reuses the first's prompt keys/values (prefix cache): the same tokens, and
    # log-probs up to the round-off of a prefill computed in another shape.
    strip = [{k: v for k, v in n.to_dict().items() if k != "logprobs"} for n in (*a.nodes, *b.nodes)]
    assert strip[: len(a.nodes)] == strip[len(a.nodes) :]
    for x, y in zip(a.nodes, b.nodes, strict=True):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    assert a.best == b.best
    c = run(tiny_engine, strategy, options, seed=6)
    assert [n.text for n in c.nodes] != [n.text for n in a.nodes]


def test_judge_scored_search_charges_the_judge(tiny_engine):
    tree = run(tiny_engine, "best_of_n", {}, scorer="judge", budget=80)
    check_tree(tree, 80)
    assert tree.spend["by_kind"]["judge"] > 0
    # Gibberish from the tiny model is fine: unscored, or a score in [0, 1].
    assert all(n.score is None or 0 <= n.score <= 1 for n in tree.nodes[1:])


@pytest.mark.parametrize("budget", [1, 5, 9, 37])
def test_tiny_budgets_never_exceeded(tiny_engine, budget):
    for strategy, options in (("best_of_n", {}), ("tree", {"chunk": 3}), ("beam", {}), ("synthesize", {})):
        tree = run(tiny_engine, strategy, options, budget=budget, scorer="judge")
        assert tree.spend["generated_tokens"] <= budget
        tree.validate()


def test_global_rng_does_not_matter(tiny_engine):
    torch.manual_seed(1)
    random.seed(1)
    a = run(tiny_engine, "noise_search", {"mode": "paths", "rounds": 2})
    torch.manual_seed(2)
    random.seed(2)
    b = run(tiny_engine, "noise_search", {"mode": "paths", "rounds": 2})
    assert [n.text for n in a.nodes] == [n.text for n in b.nodes]


def test_tree_search_prunes_and_never_reexplores(tiny_engine):
    tree = run(tiny_engine, "tree", {"chunk": 2, "branch": 3, "width": 2, "expand": 2, "keep": 1}, budget=120)
    pruned = [n for n in tree.nodes if n.pruned]
    assert pruned and tree.meta["pruned"] >= 1
    # Duplicates of explored prefixes are pruned too, but do not block that prefix.
    prefixes = {tuple(n.token_ids) for n in pruned if not n.meta["pruned"].startswith(("repeats", "extends"))}
    expanded = {n.parent for n in tree.nodes[1:]}
    # No pruned node is ever a parent, and no expanded node extends a pruned prefix.
    for n in tree.nodes[1:]:
        if n.id in expanded:
            assert not n.pruned
            assert not any(tuple(n.token_ids[: len(p)]) == p for p in prefixes)
    # Continuations inherit their parent's tokens.
    for n in tree.nodes[1:]:
        parent = tree[n.parent]
        if parent.parent is not None:
            assert n.token_ids[: len(parent.token_ids)] == parent.token_ids


def test_paths_continuations_keep_the_prefix(tiny_engine):
    tree = run(tiny_engine, "noise_search", {"mode": "paths", "rounds": 3})
    conts = [n for n in tree.nodes if n.kind == "continue"]
    assert conts
    assert len({n.seed for n in conts}) == len(conts)  # a winner kept over rounds gets new seeds
    for n in conts:
        cut = n.meta["cut"]
        assert n.token_ids[:cut] == tree[n.parent].token_ids[:cut]
        assert n.tokens == len(n.token_ids) - cut


def test_anneal_schedule_and_sigma(tiny_engine):
    params = SamplingParams(max_tokens=6, fluctuation="pink-temperature")
    tree = run(tiny_engine, "anneal", {"rounds": 3, "t_hot": 1.5, "t_cold": 0.5}, params=params, budget=120)
    temps = tree.meta["temperatures"]
    assert temps[0] == 1.5 and temps[-1] == 0.5 and temps[0] > temps[1] > temps[2]
    by_round = {n.round: n for n in tree.nodes[1:]}
    sig0 = by_round[0].fluctuation["temperature"]["sigma"]
    sig2 = by_round[2].fluctuation["temperature"]["sigma"]
    assert sig2 == pytest.approx(sig0 * 0.5 / 1.5)
    assert {n.kind for n in tree.nodes if n.round > 0} == {"improve"}


def test_schedules():
    assert temperature_schedule("linear", 3, 1.2, 0.4) == pytest.approx([1.2, 0.8, 0.4])
    assert temperature_schedule("geometric", 3, 1.6, 0.4) == pytest.approx([1.6, 0.8, 0.4])
    assert temperature_schedule([1.0, 0.3], 7, 1, 1) == [1.0, 0.3]
    with pytest.raises(ParameterError, match="schedule"):
        temperature_schedule("cosine", 3, 1, 0.5)
    p = annealed(SamplingParams(fluctuation="pink-logits"), 0.5, 0.5)
    assert p.temperature == 0.5 and p.fluctuation.logits.sigma == pytest.approx(0.15)


def test_bad_names_and_options_are_parameter_errors(tiny_engine):
    with pytest.raises(ParameterError, match="unknown strategy 'bogus'"):
        run(tiny_engine, "bogus", {})
    with pytest.raises(ParameterError, match="no option 'width'"):
        run(tiny_engine, "anneal", {"width": 3})
    with pytest.raises(ParameterError, match="budget must be"):
        run(tiny_engine, "best_of_n", {}, budget=0)
    with pytest.raises(ParameterError, match="mode"):
        run(tiny_engine, "noise_search", {"mode": "sideways"})
    with pytest.raises(ParameterError, match="rounds"):
        run(tiny_engine, "anneal", {"rounds": 0})
    with pytest.raises(ParameterError, match="base"):
        run(tiny_engine, "synthesize", {"base": "synthesize"})
    with pytest.raises(ParameterError, match="wall_s"):
        Budget(10, wall_s=-1)
    assert "rounds" in strategy_options("anneal")


def test_wall_time_stops_between_calls(tiny_engine):
    tree = run(tiny_engine, "best_of_n", {}, budget=Budget(10_000, wall_s=1e-9))
    assert tree.spend["generated_tokens"] == 0 and len(tree.nodes) == 1 and tree.best is None


# --------------------------------------------------------------------------- ledger


def test_ledger_allot_property():
    rng = random.Random(0)
    for _ in range(2000):
        ledger = Ledger(Budget(rng.randint(1, 300)))
        ledger.charge("x", rng.randint(0, ledger.budget.tokens))
        wants = [rng.randint(1, 64) for _ in range(rng.randint(1, 12))]
        reserve = rng.choice([0, 0, 4])
        limit = rng.choice([None, rng.randint(0, 300)])
        out = ledger.allot(wants, reserve, limit=limit)
        cap = ledger.remaining if limit is None else min(limit, ledger.remaining)
        assert len(out) <= len(wants)
        assert sum(out) + reserve * len(out) <= cap
        assert all(1 <= o <= w for o, w in zip(out, wants, strict=False))
        if sum(wants) + reserve * len(wants) <= cap:
            assert out == wants


def test_ledger_hold_and_limit():
    ledger = Ledger(Budget(100))
    with ledger.hold(30):
        assert ledger.remaining == 70
        with ledger.limit(20):
            assert ledger.remaining == 20
    assert ledger.remaining == 100


# --------------------------------------------------------------------------- noise mixtures


def test_neighbour_mixture_keeps_norm_and_similarity():
    m = [(1, 1.0)]
    for i in range(5):
        n = neighbour(m, 100 + i, 0.9)
        check_mixture(n)
        assert mixture_cosine(n, m) == pytest.approx(0.9)
        m = n
    assert len(m) == 6
    with pytest.raises(ParameterError, match="similarity"):
        neighbour([(1, 1.0)], 2, 1.0)
    with pytest.raises(ParameterError, match="squared"):
        neighbour([(1, 0.5)], 2, 0.9)


def test_mixed_streams_correlate_at_c():
    """Independent unit-variance streams mixed by the weights: variance 1, correlation c (±0.01, 200k samples)."""
    c = 0.95
    mix = neighbour([(11, 1.0)], 22, c)
    streams = {
        s: torch.randn(200_000, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (11, 22)
    }
    x = sum(w * streams[s] for s, w in mix)
    pivot = streams[11]
    assert float(x.var()) == pytest.approx(1.0, abs=0.01)
    corr = float(((x - x.mean()) * (pivot - pivot.mean())).mean() / (x.std() * pivot.std()))
    assert corr == pytest.approx(c, abs=0.01)


# --------------------------------------------------------------------------- tree documents


def test_tree_validation_and_rendering():
    t = Tree(prompt="p", strategy="x", seed=1)
    t.add(Node(0, None, text="p", kind="root"))
    t.add(Node(0, 0, text="a", score=0.5, tokens=3))
    t.add(Node(0, 1, text="b", score=math.nan, finish_reason="partial"))
    t.best = 1
    text = t.render()
    assert "★ #1" in text and "└─" in text and "…" in text
    d = t.to_dict()
    assert d["nodes"][2]["score"] is None  # nan is not JSON
    bad = t.to_dict()
    bad["nodes"][2]["parent"] = 7
    with pytest.raises(TreeError, match="parent"):
        Tree.from_dict(bad)
    bad = t.to_dict()
    bad["nodes"][1]["id"] = 2
    with pytest.raises(TreeError, match="id"):
        Tree.from_dict(bad)
    with pytest.raises(TreeError):
        Tree.from_json("{}")
    with pytest.raises(TreeError):
        t.add(Node(0, 99))


def test_beams_in_params_are_read_only_by_the_beam_strategy(tiny_engine):
    """``params.beams`` (or a fluctuation's beams entry) sets the beam strategy's width; other
    strategies sample their candidates as before."""
    p = SamplingParams(max_tokens=6, seed=1, fluctuation={"beams": {"width": 3}})
    bon = search(tiny_engine, "hi", "best_of_n", scorer="logprob", budget=40, params=p, n=2)
    plain = search(tiny_engine, "hi", "best_of_n", scorer="logprob", budget=40, params=p.replace(beams=None), n=2)
    assert [n.kind for n in bon.nodes] == ["root", "sample", "sample"]
    assert [n.token_ids for n in bon.nodes] == [n.token_ids for n in plain.nodes]
    beams = search(tiny_engine, "hi", "beam", scorer="logprob", budget=40, params=p, rounds=1)
    assert [n.kind for n in beams.nodes] == ["root", "beam", "beam", "beam"]
    assert all(n.meta["width"] == 3 for n in beams.nodes[1:])


# -- option bounds (issue 14): checked before any work, from the Python API and the CLI ---------------
@pytest.mark.parametrize(
    ("strategy", "options", "param"),
    [
        ("anneal", {"rounds": 10**9}, "rounds"),
        ("anneal", {"rounds": BUDGET + 1}, "rounds"),  # more rounds than the budget has tokens
        ("noise_search", {"rounds": BUDGET + 1}, "rounds"),
        ("best_of_n", {"n": BUDGET + 1}, "n"),
        ("beam", {"width": 10**6}, "width"),
        ("tree", {"branch": 20, "expand": 20}, "branch"),
        ("tree", {"chunk": 2**40}, "chunk"),
        ("noise_search", {"similarity": 0.0}, "similarity"),
        ("anneal", {"schedule": [1.0] * (BUDGET + 1)}, "schedule"),
        ("synthesize", {"base": "anneal", "rounds": 10**9}, "base_options.rounds"),
    ],
)
def test_options_out_of_range_are_refused_before_work(tiny_engine, strategy, options, param):
    calls = []
    real = tiny_engine.run
    tiny_engine.run = lambda rows: calls.append(rows) or real(rows)  # type: ignore[method-assign]
    try:
        with pytest.raises(ParameterError) as e:
            search(tiny_engine, "x", strategy, scorer="logprob", budget=BUDGET, params=PARAMS, seed=1, **options)
    finally:
        del tiny_engine.run
    assert e.value.param == param and not calls


def test_cli_search_refuses_unbounded_rounds():
    from click.testing import CliRunner

    from sazanami.cli import main

    args = ["search", "x", "--model", "tiny-random", "--strategy", "anneal", "--rounds", "1000000000"]
    result = CliRunner().invoke(main, [*args, "--budget", "64", "--scorer", "logprob", "--max-tokens", "4"])
    assert result.exit_code != 0 and "rounds must be an integer in [1, " in result.output


def test_paths_rounds_are_one_engine_call_each(tiny_engine):
    from collections import Counter

    from sazanami.engine.loop import Engine

    calls = []

    class Counting(Engine):
        def steps(self, requests, out, deltas=True):
            calls.append(len(requests))
            return super().steps(requests, out, deltas)

    engine = Counting(tiny_engine.backend, prefix_cache=False)
    params = SamplingParams(max_tokens=24)
    tree = search(engine, "Write a line about rivers.", "noise_search", mode="paths", rounds=4, scorer="contains:a",
                  budget=384, params=params, seed=2)  # fmt: skip
    per_round = Counter(n.round for n in tree.nodes[1:])
    assert calls[:3] == [per_round[0], per_round[1], per_round[2]]  # all rows of a round in one call
    assert sum(calls) == len(tree.nodes) - 1 and len(calls) >= 4
    # a continuation keeps a prefix and costs at most what is left of max_tokens: a round pays for more
    assert per_round[1] > per_round[0] == 96 // 24
    assert tree.spend["generated_tokens"] <= 384
