"""Flows as graphs: pools, binding, validation (naming the node and field) and runs on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sazanami.search import Flow
from sazanami.search.flows import FlowError, print_event

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"

BRANCHES = {
    "name": "branches",
    "prompt": "hello",
    "seed": 3,
    "budget": 200,
    "params": {"max_tokens": 6},
    "scorer": "contains:a,e",
    "scorers": {"e_only": "regex:e"},
    "steps": [
        {"generate": {"id": "hot", "out": "hot", "n": 3, "temperature": 1.3, "fluctuation": "pink-temperature"}},
        {"generate": {"id": "cold", "out": "cold", "n": 3, "temperature": 0.5}},
        {"merge": {"id": "both", "in": ["hot", "cold"]}},
        {"score": {"id": "rate"}},
        {"select": {"id": "top", "k": 2}},
        {"synthesize": {"id": "mix", "n": 1}},
        {"improve": {"id": "polish", "in": "hot", "out": "polished", "n": 1}},
        {"score": {"id": "rate2", "in": ["pool", "polished"], "scorer": "e_only"}},
        {"select": {"id": "best", "k": 1}},
    ],
}


def test_linear_flow_is_one_pool_in_list_order():
    f = Flow.from_dict({"prompt": "x", "steps": [{"generate": {"n": 2}}, "score", {"select": {"k": 1}}]})
    g = f.graph()
    assert g.order == [0, 1, 2] and g.sources == [[], [0], [1]]
    assert [s.id for s in f.steps] == ["generate_0", "score_1", "select_2"]


def test_graph_binds_single_writers_anywhere_and_orders_topologically():
    doc = {
        "prompt": "x",
        "steps": [
            {"select": {"id": "pick", "in": "scored", "k": 1}},
            {"score": {"id": "rate", "in": "raw", "out": "scored"}},
            {"generate": {"id": "gen", "out": "raw", "n": 2}},
        ],
    }
    g = Flow.from_dict(doc).graph()
    assert [g.steps[i].id for i in g.order] == ["gen", "rate", "pick"]
    assert g.to_dict()["nodes"][0]["sources"] == ["rate"]


@pytest.mark.parametrize(
    "doc, param, node, words",
    [
        ({"steps": [{"dance": {"id": "d"}}]}, "steps[0]", "d", "unknown step 'dance'"),
        (
            {"steps": [{"generate": {"id": "a", "in": "b", "out": "a", "keep": True, "n": 1}},
                       {"score": {"id": "b", "in": "a", "out": "b"}}]},
            "steps[0].generate.in", "a", "cycle: a → b → a",
        ),
        ({"steps": [{"select": {"id": "s", "k": 1}}, {"generate": {"n": 2}}]}, "steps[0].select.in", "s",
         "before it is written"),
        ({"steps": [{"generate": {"n": 2}}, {"score": {"id": "r", "in": "nowhere"}}]}, "steps[1].score.in", "r",
         "which no step writes"),
        ({"steps": [{"generate": {"n": 2}}, {"score": {"id": "r", "scorer": "quality"}}]}, "steps[1].score.scorer",
         "r", "neither one of the flow's scorers"),
        ({"budget": 5, "steps": [{"generate": {"n": 2}}, {"improve": {"id": "imp", "n": 2}}]}, "budget", "imp",
         "cannot cover the planned steps"),
        ({"steps": [{"generate": {"id": "g", "n": 2, "top_p": 2}}]}, "top_p", "g", "top_p"),
        ({"steps": [{"generate": {"id": "g", "n": 1}}, {"select": {"id": "g", "k": 1}}]}, "steps[1].select.id", "g",
         "already used"),
        ({"steps": [{"repeat": {"id": "rep", "times": 2, "steps": [{"improve": {"n": 1, "in": "x"}}]}}]},
         "steps[0].repeat.steps[0].improve.in", "rep", "not allowed inside repeat"),
    ],
)  # fmt: skip
def test_invalid_graphs_name_the_node_and_the_field(doc, param, node, words):
    with pytest.raises(FlowError) as info:
        Flow.from_dict({"prompt": "x"} | doc)
    assert info.value.param == param and info.value.node == node
    assert words in str(info.value)


def test_budget_that_covers_the_least_passes_with_a_warning():
    doc = {"prompt": "x", "params": {"max_tokens": 10}, "budget": 30,
           "steps": [{"generate": {"n": 2}}, {"improve": {"id": "imp", "n": 2}}]}  # fmt: skip
    f = Flow.from_dict(doc)  # least: 2 + 4 rows of one token
    (warning,) = f.check_budget(30)  # most: 20 + 40
    assert warning["node"] == "imp" and "up to 60" in warning["message"]
    assert f.check_budget(60) == []
    with pytest.raises(FlowError, match="need at least 6"):
        f.check_budget(5)


def test_branches_run_merge_and_stay_in_budget(tiny_engine):
    events: list[dict] = []
    t = Flow.from_dict(BRANCHES).run(tiny_engine, on_event=events.append)
    t.validate()
    assert t.spend["generated_tokens"] <= 200
    finished = {e["node"]: e for e in events if e["event"] == "finished"}
    assert list(finished) == ["hot", "cold", "both", "rate", "top", "mix", "polish", "rate2", "best"]
    hot = {c["id"] for c in finished["hot"]["pool"]}
    cold = {c["id"] for c in finished["cold"]["pool"]}
    assert len(hot) == 3 and len(cold) == 3 and not hot & cold
    assert {c["id"] for c in finished["both"]["pool"]} == hot | cold
    assert finished["hot"]["tokens"] > 0 and finished["both"]["tokens"] == 0
    # the polish branch reads the hot pool only: one improvement per hot candidate, kept with them
    polished = finished["polish"]["pool"]
    assert len(polished) == 6 and {c["id"] for c in polished[:3]} == hot
    assert all(t.nodes[c["id"]].parent in hot for c in polished[3:])
    # rate2 reads the union of the main pool (top 2 + 1 synthesis) and the polished branch, each once
    main = [c["id"] for c in finished["mix"]["pool"]]
    union = main + [c["id"] for c in polished if c["id"] not in main]
    assert len(main) == 3 and [c["id"] for c in finished["rate2"]["pool"]] == union
    assert finished["best"]["candidates"] == 1
    assert finished["best"]["best"] is not None
    assert sum(e["tokens"] for e in finished.values()) == t.spend["generated_tokens"]
    temps = {t.nodes[i].temperature for i in hot} | {t.nodes[i].temperature for i in cold}
    assert temps == {1.3, 0.5}
    assert [e["event"] for e in events if e["node"] == "hot"] == ["started", "finished"]


def test_same_seed_same_tree_other_seed_other_tree(tiny_engine):
    a = Flow.from_dict(BRANCHES).run(tiny_engine)
    b = Flow.from_dict(BRANCHES).run(tiny_engine)
    c = Flow.from_dict(BRANCHES).run(tiny_engine, seed=4)
    assert [n.to_dict() for n in a.nodes] == [n.to_dict() for n in b.nodes]
    assert [n.text for n in a.nodes] != [n.text for n in c.nodes]


def test_list_order_does_not_change_a_graph_run(tiny_engine):
    shuffled = dict(BRANCHES, steps=[BRANCHES["steps"][i] for i in (2, 0, 3, 1, 4, 5, 6, 7, 8)])
    a = Flow.from_dict(BRANCHES).run(tiny_engine)
    b = Flow.from_dict(shuffled).run(tiny_engine)
    assert [n.text for n in a.nodes] == [n.text for n in b.nodes] and a.best == b.best


def test_budget_is_shared_by_branches(tiny_engine):
    hot = {"generate": {"id": "hot", "out": "hot", "share": 0.5}}  # as many rows as half the budget buys
    doc = BRANCHES | {"budget": 40, "steps": [hot, *BRANCHES["steps"][1:]]}
    events: list[dict] = []
    t = Flow.from_dict(doc).run(tiny_engine, on_event=events.append)
    assert t.spend["generated_tokens"] <= 40
    done = {e["node"]: e for e in events if e["event"] == "finished"}
    assert done["hot"]["tokens"] <= 20 and done["hot"]["candidates"] >= 1
    skipped = [e["node"] for e in events if e["event"] == "skipped"]
    assert all(e not in done for e in skipped)


def test_repeat_reports_progress_and_printer_writes_lines(tiny_engine):
    doc = {"prompt": "hi", "seed": 1, "budget": 80, "params": {"max_tokens": 4}, "scorer": "contains:a",
           "steps": [{"generate": {"n": 2}}, {"repeat": {"id": "loop", "times": 2,
                                                         "steps": [{"improve": {"n": 1}}, {"select": {"k": 1}}]}}]}  # fmt: skip
    events: list[dict] = []
    Flow.from_dict(doc).run(tiny_engine, on_event=events.append)
    kinds = [e["event"] for e in events if e["node"] == "loop"]
    assert kinds == ["started", "progress", "progress", "progress", "progress", "finished"]
    out = io.StringIO()
    for e in events:
        print_event(e, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events) and lines[-1].startswith("[2/2] loop") and "candidates" in lines[-1]


def test_branching_example_is_a_graph():
    f = Flow.load(EXAMPLES / "hot_and_cold.yaml")
    g = f.graph()
    assert g.to_dict()["nodes"][2]["sources"] == ["hot", "cold"] and f.check_budget(f.budget) == []
