"""One decision, one place (issue 26): the default search budget, the fresh seed, the unknown-field
check and the noise-mixture type are each written once, and every caller goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sazanami.search.budget as budget_module
import sazanami.seeds as seeds
from sazanami import BeamParams, Engine, ParameterError, SamplingParams
from sazanami.errors import check_known
from sazanami.noise.fluctuation import Fluctuation
from sazanami.sampling.beam_params import split_beams
from sazanami.search.budget import DEFAULT_BUDGET_SAMPLES, Budget, search_budget
from sazanami.search.context import SearchContext
from sazanami.search.tree import Node, TreeError
from sazanami.seeds import SEED_MAX, seed_or_fresh

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sazanami"


def _sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


# -- the unknown-field check ---------------------------------------------------------------------


def test_check_known_names_the_first_unknown_key_and_what_is_known() -> None:
    check_known({"a": 1}, ["a", "b"], "field")  # nothing unknown: no error
    with pytest.raises(ParameterError, match=r"^unknown field 'x' in thing; known: b, a$") as err:
        check_known(["z", "x", "a"], ["b", "a"], "field", where="thing", prefix="thing.")
    assert err.value.param == "thing.x"  # sorted: x before z; known in the order given
    with pytest.raises(KeyError, match="unknown node field 'q'"):
        check_known(["q"], ["id"], "node field", error=lambda _param, message: KeyError(message))


@pytest.mark.parametrize(
    ("build", "param", "message"),
    [
        (lambda: SamplingParams.from_dict({"bogus": 1}), "bogus", "unknown parameter 'bogus'; known: seed, max_tokens"),
        (
            lambda: BeamParams.from_dict({"bogus": 1}),
            "bogus",
            "unknown beam search parameter 'bogus'; known: seed, max_tokens",
        ),
        (lambda: Fluctuation.from_dict({"zeta": {}, "colour": {}}), "colour", "unknown fluctuation field 'colour'"),
        (
            lambda: Fluctuation.from_dict({"draw": {"gamma": 1}}),
            "draw.gamma",
            "unknown field 'gamma' in fluctuation.draw",
        ),
        (lambda: split_beams({"beams": {"gamma": 1}}), "beams.gamma", "in fluctuation.beams"),
        (
            lambda: Budget.parse({"tokens": 5, "tokenz": 1}),
            "budget.tokenz",
            "unknown budget field 'tokenz'; known: tokens, wall_s",
        ),
    ],
)
def test_every_mapping_reader_reports_unknown_fields_alike(build, param: str, message: str) -> None:
    with pytest.raises(ParameterError) as err:
        build()
    assert err.value.param == param and message in str(err.value)


def test_tree_nodes_report_unknown_fields_through_the_same_check() -> None:
    with pytest.raises(TreeError, match=r"unknown node field 'bogus'; known: id, parent"):
        Node.from_dict({"id": 0, "parent": None, "bogus": 1})


def test_no_hand_written_unknown_field_check_is_left() -> None:
    """The six readers issue 26 found with their own copy of the check now call check_known."""
    pattern = re.compile(r"unknown\w* = (sorted\()?set\(")
    readers = [
        "sampling/params.py",
        "sampling/beam_params.py",
        "noise/fluctuation.py",
        "search/budget.py",
        "search/tree.py",
    ]
    sources = _sources()
    hits = [path for path in (f"sazanami/{r}" for r in readers) if pattern.search(sources[path])]
    assert hits == []
    assert all("check_known(" in sources[f"sazanami/{r}"] for r in readers)


# -- the fresh seed ------------------------------------------------------------------------------


def test_seed_or_fresh_prefers_the_first_seed_given() -> None:
    assert seed_or_fresh(5, 7) == 5 and seed_or_fresh(None, 7) == 7 and seed_or_fresh(0) == 0
    drawn = {seed_or_fresh(None, None) for _ in range(4)}
    assert len(drawn) == 4 and all(0 <= s <= SEED_MAX for s in drawn)


def test_every_caller_draws_its_fresh_seed_through_seeds(monkeypatch: pytest.MonkeyPatch, tiny_engine: Engine) -> None:
    monkeypatch.setattr(seeds, "fresh_seed", lambda: 424242)
    rows = tiny_engine.rows_for(["hi"], SamplingParams(n=2, max_tokens=2))
    assert [r.seed for r in rows] == [seeds.derive_seed(424242, 0, i) for i in range(2)]
    ctx = SearchContext(tiny_engine, "hi", strategy="best_of_n", params=SamplingParams(max_tokens=4), scorer="logprob")
    assert ctx.seed == 424242
    with_seed = SearchContext(
        tiny_engine, "hi", strategy="best_of_n", params=SamplingParams(max_tokens=4, seed=3), scorer="logprob"
    )
    assert with_seed.seed == 3
    drawn = [p for p, text in _sources().items() if "fresh_seed()" in text and p != "sazanami/seeds.py"]
    assert drawn == []  # the engine, the search, the server and `sazanami batch` call seed_or_fresh


# -- the default search budget -------------------------------------------------------------------


def test_search_budget_default_cap_and_wall_time() -> None:
    assert search_budget(None, 40) == Budget(DEFAULT_BUDGET_SAMPLES * 40)
    assert search_budget(None, 40, cap=100) == Budget(100)
    assert search_budget(5000, 40, cap=100) == Budget(5000)  # a given budget is checked elsewhere, not clipped
    assert search_budget({"tokens": 9, "wall_s": 2.0}, 40) == Budget(9, 2.0)
    assert search_budget(None, 4, wall_s=3.0) == Budget(DEFAULT_BUDGET_SAMPLES * 4, 3.0)


def test_every_default_budget_comes_from_one_constant(monkeypatch: pytest.MonkeyPatch, tiny_engine: Engine) -> None:
    from sazanami.server.limits import Limits
    from sazanami.server.schemas import ChatCompletionRequest

    monkeypatch.setattr(budget_module, "DEFAULT_BUDGET_SAMPLES", 3)
    ctx = SearchContext(tiny_engine, "hi", strategy="best_of_n", params=SamplingParams(max_tokens=10), scorer="logprob")
    assert ctx.budget.tokens == 30
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "q"}], "max_tokens": 10, "search": {"strategy": "best_of_n"}}
    )
    limits = Limits()
    assert req.search_budget(req.sampling_params(limits), limits).tokens == 30
    written = [p for p, text in _sources().items() if re.search(r"\b16 \* \w*\.?max_tokens", text)]
    assert written == []  # no caller multiplies by hand


# -- `-n`: candidates side by side, for every strategy ---------------------------------------------


@pytest.mark.parametrize("strategy", ["best_of_n", "anneal", "noise_search", "beam", "tree", "optimize", "synthesize"])
def test_n_is_the_candidates_side_by_side_for_every_strategy(strategy: str, tiny_engine: Engine) -> None:
    from sazanami.search import search

    params = SamplingParams(max_tokens=4, temperature=0.8)
    tree = search(tiny_engine, "hello", strategy, scorer="logprob", budget=120, params=params, seed=1, raw=True, n=3)
    per_round: dict[int, int] = {}
    for node in tree.nodes[1:]:
        if node.kind != "synthesis":
            per_round[node.round] = per_round.get(node.round, 0) + 1
    assert per_round and max(per_round.values()) == 3, per_round


def test_tree_n_shares_a_round_and_refuses_branch_beside_it(tiny_engine: Engine) -> None:
    from sazanami.search import check_strategy_options, search

    params = SamplingParams(max_tokens=12, temperature=0.8)
    tree = search(
        tiny_engine, "hello", "tree", scorer="logprob", budget=200, params=params, seed=1, raw=True, n=5, chunk=4
    )
    rounds: dict[int, list[int | None]] = {}
    for node in tree.nodes[1:]:
        rounds.setdefault(node.round, []).append(node.parent)
    assert all(len(parents) <= 5 for parents in rounds.values()) and len(rounds[0]) == 5
    later = [parents for r, parents in rounds.items() if r > 0 and len(parents) == 5]
    assert later and all(len(set(p)) <= 2 for p in later)  # shared among at most `expand` (2) prefixes
    with pytest.raises(ParameterError, match="tree takes n .* or branch .*, not both") as err:
        check_strategy_options("tree", {"n": 4, "branch": 2})
    assert err.value.param == "n"
    with pytest.raises(ParameterError, match=r"n must be an integer in \[1, 8\]"):
        check_strategy_options("tree", {"n": 9}, max_rows=8)
    # without n a seeded tree is what it was: branch × expand continuations per round
    plain = search(tiny_engine, "hello", "tree", scorer="logprob", budget=200, params=params, seed=1, raw=True, chunk=4)
    assert sum(1 for node in plain.nodes if node.round == 0 and node.parent is not None) == 3  # branch 3, the root


def test_n_lands_where_the_strategy_keeps_it() -> None:
    from sazanami.search import check_strategy_options

    assert check_strategy_options("beam", {"n": 4}) == {"width": 4}
    assert check_strategy_options("beam", {"n": 4, "width": 4}) == {"width": 4}
    with pytest.raises(ParameterError, match="n is beam's width") as err:
        check_strategy_options("beam", {"n": 4, "width": 2})
    assert err.value.param == "n"
    assert check_strategy_options("synthesize", {"n": 4, "base": "beam"}) == {"base": "beam", "base_options": {"n": 4}}


def test_cli_search_tree_takes_n() -> None:
    from click.testing import CliRunner

    from sazanami.cli import main

    args = ["search", "hello", "-m", "tiny-random", "--strategy", "tree", "-n", "4", "--scorer", "logprob"]
    args += ["--max-tokens", "4", "--budget", "60", "--seed", "1", "--json", "--no-progress", "--raw"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    doc = __import__("json").loads(r.output)
    assert doc["config"]["options"] == {"n": 4}
    assert (
        max(sum(1 for node in doc["nodes"] if node["round"] == k and node["parent"] is not None) for k in range(3)) == 4
    )


# -- the noise-mixture type, and the search's flows on public names --------------------------------


def test_noise_mixture_type_is_defined_once() -> None:
    import sazanami.noise.fluctuation as fluctuation
    import sazanami.sampling.rows as rows
    import sazanami.search.strategies as strategies

    assert rows.NoiseMix is fluctuation.NoiseMix and strategies.NoiseMix is fluctuation.NoiseMix
    defined = [p for p, text in _sources().items() if re.search(r"^\w+ = list\[tuple\[int, float\]\]", text, re.M)]
    assert defined == ["sazanami/noise/fluctuation.py"]


def test_no_module_imports_private_names_of_another() -> None:
    """A name another module needs is public (strategies' helpers for flows, plots and metrics
    helpers for the long-form eval, the scorers' item coercion for the doctest scorer)."""
    import ast

    offenders = []
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sazanami"):
                offenders += [
                    (path, a.name) for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert offenders == []


# -- what machine ran a benchmark: one reader ------------------------------------------------------


def test_benchmarks_name_the_machine_through_models_cpu_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import sazanami.models as models
    from sazanami.evals.frontier.run import machine_info
    from sazanami.evals.humaneval.run import machine

    monkeypatch.setattr(models, "_cpuinfo", lambda: "processor\t: 0\nmodel name\t: Test CPU 9000\n")
    assert models.cpu_model() == "Test CPU 9000"
    assert machine().startswith("Test CPU 9000, ") and machine().endswith(" cores")
    assert machine_info()["cpu"] == "Test CPU 9000"
    readers = [p for p, text in _sources().items() if 'startswith("model name")' in text]
    assert readers == ["sazanami/models.py"]


# -- the fields SamplingParams and BeamParams share: declared once -----------------------------------


def test_shared_decoding_fields_are_declared_once() -> None:
    import ast
    import dataclasses
    import inspect
    import textwrap

    from sazanami.field_docs import field_docs
    from sazanami.sampling.beam_params import DecodeParams

    shared = {f.name for f in dataclasses.fields(DecodeParams)}
    assert shared == set(SamplingParams.field_names()) & set(BeamParams.field_names())
    for cls, again in ((SamplingParams, set()), (BeamParams, {"temperature"})):  # beams draw at T = 1 by default
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        declared = {node.target.id for node in body if isinstance(node, ast.AnnAssign)}
        assert declared & shared == again, cls.__name__
        docs = field_docs(cls)  # the CLI's help and the HTTP schema read the inherited docs too
        assert set(docs) == set(cls.field_names()) and all(docs.values())
    assert SamplingParams().temperature == 0.7 and BeamParams().temperature == 1.0
    assert {k: v for k, v in dataclasses.asdict(SamplingParams()).items() if k in shared and k != "temperature"} == {
        k: v for k, v in dataclasses.asdict(BeamParams()).items() if k in shared and k != "temperature"
    }
