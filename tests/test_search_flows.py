"""Flows (parse, validate, run) and the search / flow / tree commands, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sazanami.cli import _Group
from sazanami.cli.search import flow, search, tree
from sazanami.errors import ParameterError
from sazanami.search import Flow, Tree

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"

SMALL = {
    "name": "small",
    "prompt": "hello",
    "seed": 3,
    "budget": 90,
    "params": {"max_tokens": 6},
    "scorer": "contains:a,e",
    "scorers": {"judge_fake": "regex:e"},
    "steps": [
        {"generate": {"n": 4, "temperature": 1.0}},
        {"score": {}},
        {"select": {"k": 2, "method": "top-k"}},
        {"extend": {"n": 1}},
        {"improve": {"n": 1, "max_tokens": 4}},
        {"score": {"scorer": "judge_fake"}},
        {"select": {"k": 2}},
        {"synthesize": {"n": 1}},
        {"repeat": {"times": 2, "steps": [{"generate": {"n": 1, "keep": True}}, {"select": {"k": 1}}]}},
        {"strategy": {"name": "best_of_n", "share": 0.5}},
        {"select": {"k": 1}},
    ],
}


@pytest.fixture(scope="module")
def cli() -> click.Group:
    @click.group(cls=_Group)
    def group() -> None:
        pass

    for command in (search, flow, tree):
        group.add_command(command)
    return group


def test_example_flows_parse():
    names = sorted(p.name for p in EXAMPLES.iterdir())
    assert any(n.endswith(".yaml") for n in names) and any(n.endswith(".json") for n in names)
    for path in EXAMPLES.iterdir():
        f = Flow.load(path)
        assert f.prompt and f.steps and f.budget is not None


def test_flow_runs_and_respects_budget(tiny_engine):
    f = Flow.from_dict(SMALL)
    t = f.run(tiny_engine)
    t.validate()
    assert t.spend["generated_tokens"] <= 90
    kinds = {n.kind for n in t.nodes}
    assert {"sample", "continue", "improve", "synthesis"} <= kinds
    assert t.best is not None
    again = Flow.from_dict(SMALL).run(tiny_engine)
    assert [n.to_dict() for n in again.nodes] == [n.to_dict() for n in t.nodes]
    other = f.run(tiny_engine, seed=4, budget=40, prompt="hey")
    assert other.spend["generated_tokens"] <= 40 and other.prompt == "hey"


def test_yaml_and_json_give_the_same_flow():
    import yaml

    a = Flow.loads(json.dumps(SMALL))
    b = Flow.loads(yaml.safe_dump(SMALL))
    assert a.to_dict() == b.to_dict() and [s.kind for s in a.steps] == [s.kind for s in b.steps]


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"steps": [{"dance": {}}]}, "steps[0]"),
        ({"steps": [{"select": {"k": 0}}]}, "steps[0].select.k"),
        ({"steps": [{"select": {"k": 2, "colour": 1}}]}, "steps[0].select.colour"),
        ({"steps": [{"generate": {"n": 2, "top_p": 2}}]}, "top_p"),
        ({"steps": [{"improve": {}}]}, "steps[0].improve.n"),
        ({"steps": [{"strategy": {"name": "anneal", "width": 2}}]}, "width"),
        ({"steps": [{"strategy": {"name": "nope"}}]}, "strategy"),
        ({"steps": [{"repeat": {"times": 2, "steps": [{"select": {}}]}}]}, "steps[0].repeat.steps[0].select.k"),
        ({"steps": []}, "steps"),
        ({"budget": -3}, "budget"),
        ({"scorer": "nonsense"}, "scorer"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_flows_name_the_place(patch, where):
    with pytest.raises(ParameterError) as info:
        Flow.from_dict(SMALL | patch)
    assert info.value.param == where or where in str(info.value)


def test_flow_without_prompt_needs_one(tiny_engine):
    f = Flow.from_dict({k: v for k, v in SMALL.items() if k != "prompt"})
    with pytest.raises(ParameterError, match="prompt"):
        f.run(tiny_engine)


def test_cli_search_json_tree_and_show(cli, tmp_path):
    out = tmp_path / "t.json"
    args = [
        "search",
        "hi",
        "-m",
        "tiny-random",
        "--strategy",
        "anneal",
        "--rounds",
        "2",
        "--n",
        "2",
        "--scorer",
        "contains:a",
        "--budget",
        "60",
        "--seed",
        "1",
        "--max-tokens",
        "6",
        "--no-progress",
    ]
    r = CliRunner().invoke(cli, args + ["--json", "--save", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["strategy"] == "anneal" and doc["spend"]["generated_tokens"] <= 60
    assert doc["config"]["options"] == {"rounds": 2, "n": 2}
    assert Tree.load(out).to_dict() == doc
    r = CliRunner().invoke(cli, args + ["--tree"])
    assert r.exit_code == 0 and "#0 prompt: hi" in r.output and "── best #" in r.output
    r = CliRunner().invoke(cli, ["tree", "show", str(out), "--width", "20"])
    assert r.exit_code == 0 and "★" in r.output


def test_cli_errors_are_one_line(cli, tmp_path):
    base = ["search", "hi", "-m", "tiny-random", "--no-progress", "--budget", "20", "--max-tokens", "4"]
    for extra, message in (
        (["--strategy", "nope"], "error: unknown strategy 'nope'"),
        (["--strategy", "anneal", "--width", "2"], "error: strategy anneal has no option 'width'"),
        (["--budget", "0"], "error: budget must be"),
        (["--scorer", "contains:"], "error: contains scorer needs"),
        (["--schedule", "hot,cold", "--strategy", "anneal"], "error: schedule must be"),
        (["--scorer", "logprob", "--judge-template", "Rate {text}"], "error: a judge template needs a judge"),
    ):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert r.output.startswith(message) and "Traceback" not in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"dance": {}}]}))
    r = CliRunner().invoke(cli, ["flow", "check", str(bad)])
    assert r.exit_code == 2 and "unknown step 'dance'" in r.output
    r = CliRunner().invoke(cli, ["tree", "show", str(bad)])
    assert r.exit_code == 2 and "not a sazanami tree" in r.output


def test_cli_flow_run_and_check(cli, tmp_path):
    path = tmp_path / "f.yaml"
    import yaml

    path.write_text(yaml.safe_dump(SMALL))
    r = CliRunner().invoke(cli, ["flow", "check", str(path)])
    assert r.exit_code == 0 and "generate → score → select" in r.output
    r = CliRunner().invoke(
        cli, ["flow", "run", str(path), "-m", "tiny-random", "--budget", "30", "--json", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["spend"]["generated_tokens"] <= 30 and doc["strategy"] == "flow:small"
