"""Islands on the embedded SmolLM2-135M-Instruct: few, short checks."""

from __future__ import annotations

import json
import re

import pytest
import torch

from sazanami import models
from sazanami.backends.tokenizer import Tokenizer
from sazanami.engine.decode_step import RowState
from sazanami.engine.loop import Engine, RowRequest
from sazanami.islands import Constraint, Islands, builtin_tools
from sazanami.islands.runtime import IslandBatch
from sazanami.sampling.params import SamplingParams

pytestmark = pytest.mark.real

FEW_SHOT = "Q: What is 12*7?\nA: CALC(12*7) => 84\nSo the answer is 84.\nQ: What is 17*23?\nA: "


def test_model_calls_calc_and_continues_from_the_result(real_engine: Engine):
    """The model writes the call (its expression under a grammar), CALC answers, the model goes on."""
    isl = Islands(
        tools=builtin_tools(["calc"]),
        constraint=Constraint.regex(r"CALC\([0-9*+ ]{1,12}\)[A-Za-z0-9 ,.]{1,40}"),
        describe_tools=False,
    )
    out = real_engine.generate(
        FEW_SHOT, SamplingParams(n=2, seed=1, max_tokens=24, temperature=0.5), raw=True, islands=isl
    )
    for c in out:
        assert c.text.startswith("CALC(17*23) => 391\n"), c.text
        assert c.spans[0]["result"] == "391" and c.finish_reason == "stop"
        assert "391" in c.text[c.spans[0]["end"] :]  # grounded: it repeats the injected result


def test_json_schema_on_the_real_model(real_engine: Engine):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    isl = Islands(constraint=Constraint.json_schema(schema))
    params = SamplingParams(n=2, seed=3, max_tokens=32, fluctuation="pink-draw")
    for c in real_engine.generate("Name a big city and its country as JSON.", params, islands=isl):
        doc = json.loads(c.text)
        assert set(doc) == {"city", "country"} and c.finish_reason == "stop"


def test_a_token_running_past_the_call_is_cut_at_its_bracket():
    """``).`` drawn after ``CALC(2+2`` becomes ``)`` so the result follows the call directly."""
    tok = Tokenizer.from_dir(models.embedded_dir())
    isl = Islands(tools=builtin_tools(["calc"]), describe_tools=False)
    row = RowState(RowRequest([1], SamplingParams(), 0, islands=isl), tok)
    batch = IslandBatch([isl], tok, tok.vocab_size)
    for t in tok.encode("Sum: CALC(2+2") + tok.encode(")."):
        row.push(t, -1.0, False)
    assert row.text == "Sum: CALC(2+2)." and len(tok.encode(").")) == 1
    logits = torch.zeros(1, tok.vocab_size)
    injected = batch.inject([row], logits)
    first, ids = injected[0]
    assert first == tok.encode(")")[0] and tok.decode(ids) == " => 4\n"
    assert row.text == "Sum: CALC(2+2) => 4\n"
    assert row.logprobs[-len(ids) - 1] == pytest.approx(-torch.log(torch.tensor(float(tok.vocab_size))).item())
    assert re.fullmatch(r"Sum: CALC\(2\+2\)", tok.decode(row.tokens[: -len(ids)]))


def test_search_over_paths_with_a_tool_on_the_real_model(real_engine: Engine):
    """Every branch of a search calls CALC (answered once, then from the cache) and goes on from the result."""
    from sazanami.islands import drawn_text
    from sazanami.search import search

    regex = r"CALC\([0-9*+ ]{1,12}\)[A-Za-z0-9 ,.]{1,40}"
    isl = Islands(tools=builtin_tools(["calc"]), constraint=Constraint.regex(regex), describe_tools=False)
    params = SamplingParams(max_tokens=20, temperature=0.7)
    tree = search(
        real_engine, FEW_SHOT, "noise_search", mode="paths", rounds=3, n=4, scorer="contains:391", budget=200,
        params=params, seed=1, raw=True, islands=isl,
    )  # fmt: skip
    assert tree.spend["generated_tokens"] <= 200
    done = tree.candidates()
    assert len(done) >= 8
    for n in done:  # each branch's own call, answered by CALC, inside the grammar
        (sp,) = n.spans
        assert sp["name"] == "CALC" and sp["result"].isdigit() and not sp["error"]
        assert re.fullmatch(regex, drawn_text(n.text, n.spans)), n.text
    best = tree.best_node
    assert best.score == 1.0 and best.text.startswith("CALC(17*23) => 391\n"), best.text
    assert any(sp["cached"] for n in done for sp in n.spans)  # the same call made twice ran once
    kids = [n for n in done if n.kind == "continue"]
    assert any(n.meta["cut"] >= n.spans[0]["token_end"] for n in kids)  # inherited its parent's call
    assert any(n.meta["cut"] <= n.spans[0]["token_start"] for n in kids)  # made its own
