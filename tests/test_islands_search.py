"""Islands inside search and stochastic beams, on the tiny random model.

As in ``test_islands_engine``, a regex constraint makes the random model write the call
text (the honest way: through the sampler, token by token); the watcher, the tool, the
injection and the search's bookkeeping are the real ones.
"""

from __future__ import annotations

import json
import re
import threading

import pytest
import torch

from sazanami.engine.loop import Engine, RowRequest
from sazanami.islands import Constraint, Islands, ToolRegistry, drawn_text
from sazanami.islands.tools import CallSyntax, CallWatcher
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.sampler import SamplerBatch
from sazanami.search import search
from sazanami.search.tree import Tree

REGEX = r"The sum ADD\(1, 2\) is [a-z]{3,6}"
PARAMS = SamplingParams(max_tokens=30)
BUDGET = 600


def counting_tools() -> tuple[ToolRegistry, list[tuple[int, int]]]:
    """An ``ADD(a, b)`` tool that records every time it really runs."""
    tools = ToolRegistry()
    ran: list[tuple[int, int]] = []
    lock = threading.Lock()

    @tools.register
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        with lock:
            ran.append((a, b))
        return a + b

    return tools, ran


def forced(tools: ToolRegistry, regex: str = REGEX) -> Islands:
    return Islands(tools=tools, constraint=Constraint.regex(regex), describe_tools=False)


def check_node_spans(tree: Tree, engine: Engine, regex: str = REGEX) -> None:
    """Every finished candidate follows the grammar, holds the injected result, spans point at it."""
    tok = engine.tokenizer
    for node in tree.candidates():
        for sp in node.spans:
            assert node.text[sp["start"] : sp["end"]] == " => 3\n"
            assert tok.decode(node.token_ids[sp["token_start"] : sp["token_end"]]) == " => 3\n"
            assert all(node.logprobs[i] == 0.0 for i in range(sp["token_start"], sp["token_end"]))
            assert (sp["name"], sp["args"], sp["result"], sp["error"]) == ("ADD", "1, 2", "3", False)
        assert node.drawn == len(node.token_ids) - node.injected
        if node.partial or node.pruned or node.finish_reason == "length":  # cut short by the budget
            continue
        assert re.fullmatch(regex, drawn_text(node.text, node.spans)), node.text
        assert "ADD(1, 2) => 3\n" in node.text
        assert len(node.spans) == 1


STRATEGIES = [
    ("best_of_n", {"n": 3}),
    ("noise_search", {"mode": "paths", "rounds": 3}),
    ("noise_search", {"mode": "random", "rounds": 2}),
    ("tree", {"chunk": 5, "branch": 2}),
    ("beam", {"width": 3, "rounds": 1}),
    ("noise_search", {"mode": "zero-order", "rounds": 2, "n": 3}),
    ("anneal", {"rounds": 2}),
    ("optimize", {"n": 2}),
    ("synthesize", {"base": "noise_search", "mode": "paths", "k": 2}),
]


@pytest.mark.parametrize(("strategy", "options"), STRATEGIES, ids=[f"{s}-{o.get('mode', '')}" for s, o in STRATEGIES])
def test_every_strategy_runs_tools_and_keeps_the_grammar(tiny_engine: Engine, strategy, options):
    tools, ran = counting_tools()
    isl = forced(tools)
    tree = search(
        tiny_engine, "q", strategy, scorer="contains:a,e", budget=BUDGET, params=PARAMS, seed=3, islands=isl, **options
    )
    assert len(tree) > 2
    check_node_spans(tree, tiny_engine)
    assert re.fullmatch(REGEX, drawn_text(tree.text, tree.best_node.spans))  # the winner completed the grammar
    # Identical calls run once per search: every other branch got the cached result.
    assert ran == [(1, 2)]
    # Budgets count drawn tokens; injected results are run like prompt tokens.
    assert tree.spend["generated_tokens"] <= BUDGET
    if strategy != "beam":  # beams share their forced prefix: each beam node counts it
        assert sum(n.tokens for n in tree.candidates()) <= tree.spend["generated_tokens"]
    assert tree.config["islands"]["tools"] == ["ADD"]
    again = search(
        tiny_engine, "q", strategy, scorer="contains:a,e", budget=BUDGET, params=PARAMS, seed=3, islands=forced(tools),
        **options,
    )  # fmt: skip
    assert [n.text for n in again] == [n.text for n in tree]
    assert Tree.from_json(tree.to_json()).nodes[-1].spans == tree.nodes[-1].spans


def test_branches_keep_their_own_tool_history(tiny_engine: Engine):
    """A continuation cut after a call inherits it; one cut before it makes (and answers) its own."""
    tools, ran = counting_tools()
    tree = search(
        tiny_engine, "q", "noise_search", mode="paths", rounds=4, scorer="contains:e", budget=BUDGET,
        params=PARAMS, seed=8, islands=forced(tools),
    )  # fmt: skip
    kids = [n for n in tree.candidates() if n.kind == "continue"]
    assert kids
    inherited = own = 0
    for kid in kids:
        parent = tree[kid.parent]
        (sp,) = kid.spans
        (psp,) = parent.spans
        if kid.meta["cut"] >= psp["token_end"]:
            inherited += 1
            assert sp == psp  # the very same call, not run again
        else:
            own += 1
            assert sp["cached"]  # its own call, answered from the search's cache
        assert kid.meta["cut"] <= psp["token_start"] or kid.meta["cut"] >= psp["token_end"]  # never inside a result
    assert inherited and own
    assert ran == [(1, 2)]


def test_call_cap_counts_calls_of_the_inherited_prefix(tiny_engine: Engine):
    tools, _ = counting_tools()
    isl = Islands(tools=tools, describe_tools=False, max_calls=1)
    ids = tiny_engine.encode("The sum ADD(1, 2) => 3\n", raw=True)
    spans = [{"kind": "tool", "start": 15, "end": 22, "token_start": 0, "token_end": 0}]
    cont, extra, _ = isl.continuing(tiny_engine.tokenizer, ids, spans)
    assert cont.calls_made == 1 and extra == []
    again = forced(tools, r"ADD\(2, 2\)[a-z]{2}")
    again = Islands(tools=tools, constraint=again.constraint, describe_tools=False, max_calls=1, calls_made=1)
    (c,) = tiny_engine.run([RowRequest(tiny_engine.encode("q", raw=True), PARAMS, 1, islands=again)])
    assert c.spans[0]["result"].startswith("error: call limit reached")


def test_continuation_of_an_open_call_finishes_it(tiny_engine: Engine):
    """A prefix that ends inside a call: the row's watcher reads the open text first."""
    tools, ran = counting_tools()
    tok = tiny_engine.tokenizer
    isl = forced(tools)
    head = tok.encode("The sum ADD(1, ")
    cont, extra, extra_spans = isl.continuing(tok, head, [])
    assert (cont.lead, extra, extra_spans, cont.calls_made) == ("ADD(1, ", [], [], 0)
    prompt = tiny_engine.encode("q", raw=True)
    (c,) = tiny_engine.run([RowRequest(prompt + head, PARAMS, 4, islands=cont)])
    assert c.text.startswith("2) => 3\n is ")
    (sp,) = c.spans
    assert (sp["args"], sp["result"], sp["start"]) == ("1, 2", "3", 2)
    assert re.fullmatch(REGEX, tok.decode(head) + drawn_text(c.text, c.spans))
    assert ran == [(1, 2)]
    # A prefix that ends in what may still become a tool's name: the watcher reads that too.
    head = tok.encode("The sum AD")
    cont, _, _ = isl.continuing(tok, head, [])
    assert cont.lead.endswith(" AD")
    (c,) = tiny_engine.run([RowRequest(prompt + head, PARAMS, 4, islands=cont)])
    assert c.text.startswith("D(1, 2) => 3\n is ")


def test_continuation_answers_a_call_left_unanswered(tiny_engine: Engine):
    """A prefix whose row ran out of tokens right after a call: the call is answered before it goes on."""
    tools, ran = counting_tools()
    tok = tiny_engine.tokenizer
    head = tok.encode("The sum ADD(1, 2)")
    cont, extra, (sp,) = forced(tools).continuing(tok, head, [])
    assert tok.decode(extra) == " => 3\n" and cont.calls_made == 1 and cont.lead == ""
    assert (sp["start"], sp["end"], sp["token_start"], sp["token_end"]) == (17, 23, len(head), len(head) + len(extra))
    assert ran == [(1, 2)]


def test_watcher_lead_positions_are_relative_to_the_row():
    w = CallWatcher(CallSyntax(), lead="x ADD(1")
    assert w.find("+") is None
    call = w.find("+2) and")
    assert (call.name, call.args, call.start, call.end) == ("ADD", "1+2", -5, 3)
    w.settle(3)
    assert w.find("+2) and more") is None
    assert CallWatcher(CallSyntax()).open_call("so ADD(1, 2") == 3
    assert CallWatcher(CallSyntax()).open_call("so ADD(1, 2)") is None


def test_beams_follow_the_grammar_and_run_tools_per_beam(tiny_engine: Engine):
    tools, ran = counting_tools()
    regex = r"ADD\(1, 2\)( so| then)[a-z ]{2,6}"
    isl = forced(tools, regex)
    p = SamplingParams(fluctuation={"beams": {"width": 4, "beta": 1}}, seed=2, max_tokens=30)
    out = tiny_engine.generate("q", p, raw=True, islands=isl)
    assert len(out) == 4 and len({tuple(c.token_ids) for c in out}) == 4
    for c in out:
        assert re.fullmatch(regex, drawn_text(c.text, c.spans)), c.text
        (sp,) = c.spans
        assert c.text[sp["start"] : sp["end"]] == " => 3\n" and c.finish_reason == "stop"
    assert ran == [(1, 2)]
    # The injected tokens went through the model: each beam's next draw saw them.
    alone = tiny_engine.generate("q", p, raw=True, islands=forced(tools, regex))
    assert [c.token_ids for c in alone] == [c.token_ids for c in out]


@pytest.mark.parametrize("preset", ["pink-hidden", "pink-embedding"])
def test_injected_tokens_get_the_rows_hidden_noise(tiny_engine: Engine, preset):
    """The forward of injected tokens perturbs their last position with the row's own noise."""
    tools, _ = counting_tools()
    ids = tiny_engine.encode("q", raw=True)
    p = SamplingParams(max_tokens=30, fluctuation=preset, seed=1)
    rows = [RowRequest(ids, p, s, islands=forced(tools)) for s in (5, 6)]
    noisy = tiny_engine.run(rows)
    plain = tiny_engine.run([RowRequest(ids, p.replace(fluctuation=None), s, islands=forced(tools)) for s in (5, 6)])
    for c in noisy:
        assert re.fullmatch(REGEX, drawn_text(c.text, c.spans))
    assert [c.logprobs for c in noisy] != [c.logprobs for c in plain]


def test_one_row_hidden_hook_uses_that_rows_noise():
    """``hidden_hook(row=i)`` perturbs batch row 0 with sampler row i's stream, as the batched hook would."""
    C, L = 16, 2
    p = SamplingParams(fluctuation="pink-hidden")
    specs = [RowRequest([1], p, s) for s in (1, 2)]
    one, full = SamplerBatch(specs, 32, C), SamplerBatch(specs, 32, C)
    h = torch.randn(2, 3, C, generator=torch.Generator().manual_seed(0))
    for layer in range(L):
        got = one.hidden_hook(L, row=1)(layer, h[1:2])
        want = full.hidden_hook(L)(layer, h)
        assert torch.equal(got[0], want[1])
        assert torch.equal(got[0, :-1], h[1, :-1])  # only the last position
        assert torch.equal(got[0, -1], h[1, -1]) == (layer != L // 2)  # noise at the middle layer
    assert one.hidden_hook(L, row=0) is not None
    assert SamplerBatch([RowRequest([1], SamplingParams(), 1)], 32, C).hidden_hook(L, row=0) is None


def test_cli_search_and_flow_take_the_island_options(tmp_path):
    from click.testing import CliRunner

    from sazanami.cli import main

    base = ["-m", "tiny-random", "--seed", "2", "--max-tokens", "24", "--no-progress", "--json"]
    regex = r"CALC\(6\*7\) is [a-z]{3}"
    r = CliRunner().invoke(
        main,
        ["search", "q", "--raw", "--strategy", "noise_search", "--mode", "paths", "--scorer", "contains:a",
         "--budget", "150", "--tools", "calc", "--regex", regex, *base],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["config"]["islands"]["tools"] == ["CALC"]
    nodes = [n for n in doc["nodes"][1:] if n["finish_reason"] != "partial"]
    assert nodes and all(re.fullmatch(regex, drawn_text(n["text"], n["spans"])) for n in nodes)
    assert all(n["spans"][0]["result"] == "42" for n in nodes)
    # The readable form dims the injected result of the winner.
    r = CliRunner().invoke(
        main, ["search", "q", "--raw", "--scorer", "contains:a", "--budget", "60", "--tools", "calc", "--regex", regex,
               *base[:-1]],
    )  # fmt: skip
    assert r.exit_code == 0 and "CALC(6*7) => 42" in r.output, r.output
    flow = tmp_path / "f.json"
    flow.write_text(json.dumps({"name": "f", "prompt": "q", "raw": True, "steps": [{"generate": {"n": 2}}]}))
    r = CliRunner().invoke(
        main,
        [
            "flow",
            "run",
            str(flow),
            "--budget",
            "60",
            "--tools",
            "calc",
            "--regex",
            regex,
            *base[:2],
            "--json",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert all(n["spans"] for n in json.loads(r.output)["nodes"][1:])
    r = CliRunner().invoke(main, ["search", "q", "--regex", "(ab", *base])
    assert r.exit_code == 2 and "invalid regex" in r.output and "Traceback" not in r.output


def test_flow_files_carry_their_islands(tiny_engine: Engine):
    from sazanami.errors import ParameterError
    from sazanami.search import Flow

    regex = r"CALC\(6\*7\) is [a-z]{3}"
    doc = {
        "prompt": "q", "raw": True, "seed": 1, "budget": 120, "scorer": "contains:a",
        "params": {"max_tokens": 24}, "islands": {"tools": ["calc"], "regex": regex, "describe_tools": False},
        "steps": [{"generate": {"n": 2}}, {"extend": {"n": 2}}, {"score": {}}, {"select": {"k": 1}}],
    }  # fmt: skip
    flow = Flow.from_dict(doc)
    assert flow.islands is not None and flow.islands.tools.names == ["CALC"]
    tree = flow.run(tiny_engine)
    assert len(tree) > 3 and tree.config["islands"]["constraint"]["source"] == regex
    for n in tree.candidates():
        assert n.text.startswith("CALC(6*7) => 42\n") and re.fullmatch(regex, drawn_text(n.text, n.spans))
    assert "1 call" in tree.render() and '"CALC(6*7)⟦=> 42⟧ is' in tree.render()  # injected text marked
    again = Islands.from_dict(flow.islands.to_dict())
    assert again.to_dict() == flow.islands.to_dict()
    for bad, param in (({"tool": ["calc"]}, "islands.tool"), ({"regex": "a", "grammar": "b"}, "islands.grammar")):
        with pytest.raises(ParameterError) as info:
            Flow.from_dict(doc | {"islands": bad})
        assert info.value.param == param
    with pytest.raises(ParameterError, match="corpus"):
        Flow.from_dict(doc | {"islands": {"tools": "search,load"}})


def test_continuations_stop_at_a_stop_string_that_began_in_their_prefix(tiny_engine: Engine):
    """Cut after the newline of "\\nQ:": the continuation's "Q:" completes the stop; the node ends before it."""
    isl = Islands(constraint=Constraint.regex(r"[a-z]{4}\nQ: [a-z]{2}"))
    params = SamplingParams(max_tokens=12, stop=["\nQ:"])
    tree = search(
        tiny_engine, "q", "noise_search", mode="paths", rounds=4, scorer="contains:a", budget=200, params=params,
        seed=2, raw=True, islands=isl,
    )  # fmt: skip
    assert all(re.fullmatch(r"[a-z]{4}", n.text) for n in tree.candidates()), [n.text for n in tree.candidates()]
    assert any(n.kind == "continue" and n.meta["cut"] >= 5 for n in tree.candidates())  # cut after the newline
