"""Tool calls inside the engine loop, on the tiny random model.

The random model does not write calls by itself, so the tests make it write them the
honest way: a regex constraint (a grammar island) forces the call text token by token,
through the same sampling path as any generation. The watcher, the tool, the injection
and the forward of the injected tokens are then the engine's own.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from sazanami.engine.loop import Engine, RowRequest
from sazanami.errors import ParameterError
from sazanami.islands import Constraint, Islands, ToolRegistry, builtin_tools, drawn_text
from sazanami.sampling.params import SamplingParams


def forced(regex: str, tools: ToolRegistry | None = None, **kw) -> Islands:
    return Islands(
        tools=tools or builtin_tools(["calc"]), constraint=Constraint.regex(regex), describe_tools=False, **kw
    )


def without_spans(c) -> str:
    return drawn_text(c.text, c.spans)


def recomputed_logprobs(engine: Engine, prompt_ids: list[int], c) -> list[float]:
    """Log-probs of the completion's tokens from one fresh forward over the whole sequence."""
    be = engine.backend
    ids = prompt_ids + c.token_ids
    cache = be.new_cache(1, len(ids))
    logits = be.forward(torch.tensor([ids]), cache, torch.zeros(1, dtype=torch.long), last_only=False)[0]
    logp = torch.log_softmax(logits, -1)
    P = len(prompt_ids)
    return [logp[P - 1 + i, t].item() for i, t in enumerate(c.token_ids)]


def drawn(c) -> list[int]:
    injected = {i for s in c.spans for i in range(s["token_start"], s["token_end"])}
    return [i for i in range(len(c.token_ids)) if i not in injected]


def test_call_injected_mid_generation_while_other_rows_continue(tiny_engine: Engine):
    isl = forced(r"The sum CALC\(1\+2\)[a-z ]{8,12}")
    ids = tiny_engine.encode("q", raw=True)
    free = SamplingParams(seed=1, max_tokens=30, ignore_eos=True)
    rows = [
        RowRequest(ids, free, 11),
        RowRequest(ids, SamplingParams(max_tokens=40), 12, islands=isl),
        RowRequest(ids, free, 13),
    ]
    out = tiny_engine.run(rows)
    c = out[1]
    assert c.text.startswith("The sum CALC(1+2) => 3\n")
    (span,) = c.spans
    assert c.text[span["start"] : span["end"]] == " => 3\n"
    assert (span["name"], span["args"], span["result"], span["error"]) == ("CALC", "1+2", "3", False)
    assert tiny_engine.tokenizer.decode(c.token_ids[span["token_start"] : span["token_end"]]) == " => 3\n"
    assert re.fullmatch(r"[a-z ]{8,12}", c.text[span["end"] :])  # it went on after the result
    assert c.finish_reason == "stop"
    # Injected tokens are given (log-prob 0) and not counted in the mean.
    assert all(c.logprobs[i] == 0.0 for i in range(span["token_start"], span["token_end"]))
    assert c.mean_logprob == pytest.approx(sum(c.logprobs) / len(drawn(c)))
    # The rows beside it went on, untouched by their neighbour's pause and injection.
    alone = tiny_engine.run([RowRequest(ids, free, 11), RowRequest(ids, free, 13)])
    assert [out[0].token_ids, out[2].token_ids] == [a.token_ids for a in alone]
    assert all(o.completion_tokens == 30 for o in (out[0], out[2]))


def test_injected_tokens_went_through_the_model(tiny_engine: Engine):
    """After an injection, every drawn token's log-prob equals a fresh forward over prompt + all tokens."""
    isl = forced(r"CALC\(6\*7\)[a-z]{6} CALC\(2\*\*5\)[a-z]{6}")
    ids = tiny_engine.encode("x", raw=True)
    (c,) = tiny_engine.run([RowRequest(ids, SamplingParams(max_tokens=60), 3, islands=isl)])
    assert [s["result"] for s in c.spans] == ["42", "32"]
    ref = recomputed_logprobs(tiny_engine, ids, c)
    for i in drawn(c):
        assert c.logprobs[i] == pytest.approx(ref[i], abs=1e-4)


def test_cache_grows_for_long_injections(tiny_engine: Engine):
    tools = ToolRegistry()
    tools.register(lambda x: "z" * 150, name="LONG")
    isl = forced(r"(LONG\(1\)[a-z] ){3}", tools, max_result_tokens=200, max_result_chars=200)
    ids = tiny_engine.encode("x", raw=True)
    rows = [
        RowRequest(ids, SamplingParams(max_tokens=30), 3, islands=isl),
        RowRequest(ids, SamplingParams(max_tokens=30), 4),
    ]
    c = tiny_engine.run(rows)[0]
    assert len(c.spans) == 3 and sum(s["token_end"] - s["token_start"] for s in c.spans) > 450
    ref = recomputed_logprobs(tiny_engine, ids, c)
    for i in drawn(c):
        assert c.logprobs[i] == pytest.approx(ref[i], abs=1e-4)


def test_errors_and_timeouts_are_injected_not_raised(tiny_engine: Engine):
    tools = builtin_tools(["calc"])

    @tools.register(timeout=0.2)
    def slow(x: str) -> str:
        time.sleep(3.0)
        return "late"

    @tools.register
    def boom(x: str) -> str:
        raise RuntimeError("kaput")

    isl = forced(r"SLOW\(1\)BOOM\(2\)NOPE\(3\)CALC\(1/0\)ok", tools)
    (c,) = tiny_engine.generate("x", SamplingParams(seed=2, max_tokens=60), raw=True, islands=isl)
    assert [s["result"] for s in c.spans] == [
        "error: timed out after 0.2s",
        "error: RuntimeError: kaput",
        "error: unknown tool NOPE (available: CALC, SLOW, BOOM)",
        "error: division by zero",
    ]
    assert all(s["error"] for s in c.spans)
    assert c.spans[0]["seconds"] < 2.0  # the 3 s tool was not waited for
    assert c.text.endswith("CALC(1/0) => error: division by zero\nok")
    assert without_spans(c) == "SLOW(1)BOOM(2)NOPE(3)CALC(1/0)ok"


def test_hostile_argument_never_runs(tiny_engine: Engine, tmp_path):
    target = tmp_path / "x"
    hostile = f"__import__('os').system('touch {target}')"
    echo = builtin_tools(["calc"])
    echo.register(lambda text: f"{len(text)} chars", name="ECHO")
    isl = forced(f"CALC\\({re.escape(hostile)}\\)ECHO\\({re.escape(hostile)}\\)!", echo)
    (c,) = tiny_engine.generate("x", SamplingParams(seed=2, max_tokens=400), raw=True, islands=isl)
    assert c.finish_reason == "stop"
    assert c.spans[0]["result"].startswith("error: not arithmetic")
    assert c.spans[1]["result"] == f"{len(hostile)} chars"  # a tool gets the text, never its value
    time.sleep(0.1)
    assert not target.exists()


def test_call_cap_per_row(tiny_engine: Engine):
    isl = forced(r"(CALC\(1\+1\)){4}k", max_calls=2)
    (c,) = tiny_engine.generate("x", SamplingParams(seed=2, max_tokens=60), raw=True, islands=isl)
    assert [s["result"] for s in c.spans] == ["2", "2", "error: call limit reached (2 per row)"]
    assert [s["cached"] for s in c.spans] == [False, True, False]
    assert c.text.endswith("error: call limit reached (2 per row)\nCALC(1+1)k")  # the 4th is left alone


def test_identical_calls_cached_across_variants_and_runs(tiny_engine: Engine):
    calls = []
    tools = ToolRegistry()
    tools.register(lambda x: calls.append(x) or "ok", name="COUNT")
    isl = forced(r"COUNT\(a\)[a-z]{2}", tools)
    out = tiny_engine.generate("x", SamplingParams(n=3, seed=1, max_tokens=20), raw=True, islands=isl)
    assert calls == ["a"]
    assert sorted(c.spans[0]["cached"] for c in out) == [False, True, True]
    tiny_engine.generate("x", SamplingParams(n=2, seed=2, max_tokens=20), raw=True, islands=isl)
    assert calls == ["a"]  # the same Islands object: the same request's cache


def test_stream_carries_injected_text_and_json_marks_spans(tiny_engine: Engine):
    isl = forced(r"CALC\(3\*3\)[a-z]{4}")
    p = SamplingParams(seed=5, max_tokens=20)
    text = "".join(d.text for deltas in tiny_engine.stream("x", p, raw=True, islands=isl) for d in deltas)
    (c,) = tiny_engine.generate("x", p, raw=True, islands=isl)
    assert text == c.text and " => 9\n" in text
    doc = json.loads(json.dumps(c.to_dict()))
    assert doc["spans"][0]["kind"] == "tool" and doc["spans"][0]["result"] == "9"


def test_idle_watcher_changes_nothing(tiny_engine: Engine):
    p = SamplingParams(n=3, seed=4, max_tokens=40, ignore_eos=True)
    plain = tiny_engine.generate("hello", p)
    watched = tiny_engine.generate("hello", p, islands=Islands(tools=builtin_tools(["calc"]), describe_tools=False))
    assert [c.token_ids for c in plain] == [c.token_ids for c in watched]
    assert all(not c.spans for c in watched)


def test_tool_descriptions_go_into_the_prompt(tiny_engine: Engine):
    isl = Islands(tools=builtin_tools(["calc"]))
    (row,) = tiny_engine.rows_for(["What is 2+2?"], SamplingParams(), islands=isl)
    prompt = tiny_engine.tokenizer.decode(row.prompt_ids, skip_special=False)
    assert "CALC(expr)" in prompt and prompt.index("CALC(expr)") < prompt.index("What is 2+2?")
    assert row.islands is isl


def big_result_islands() -> Islands:
    """A forced ``BIG(1)`` call whose 200-token result is too long for a row near the context's end."""
    tools = ToolRegistry()

    @tools.register
    def big(x: str) -> str:
        return "w " * 300

    return Islands(
        tools=tools, constraint=Constraint.regex(r"BIG\(1\)[a-z ]{1,60}"), describe_tools=False, max_result_tokens=200
    )


def test_rows_end_at_the_models_context_instead_of_overrunning_it(tiny_engine: Engine):
    """A result that would not fit the context ends its row ("length"); so does a row that fills it."""
    limit = tiny_engine.max_positions
    long = tiny_engine.encode("a " * limit, raw=True)[: limit - 40]
    free = SamplingParams(max_tokens=60, ignore_eos=True)
    isl = big_result_islands()
    out = tiny_engine.run([RowRequest(long, SamplingParams(max_tokens=30), 1, islands=isl), RowRequest(long, free, 2)])
    assert out[0].finish_reason == "length" and out[0].text.startswith("BIG(1) => w w")
    assert out[1].finish_reason == "length" and len(long) + out[1].completion_tokens == limit + 1
    with pytest.raises(ParameterError, match="context"):
        tiny_engine.run([RowRequest(long + long, free, 3)])


def test_beams_end_at_the_models_context(tiny_engine: Engine):
    limit = tiny_engine.max_positions
    prompt = tiny_engine.tokenizer.decode(tiny_engine.encode("a " * limit, raw=True)[: limit - 40])
    p = SamplingParams(fluctuation={"beams": {"width": 2}}, seed=1, max_tokens=30)
    out = tiny_engine.generate(prompt, p, raw=True, islands=big_result_islands())
    assert out and all(c.text.startswith("BIG(1) => w w") for c in out)  # the forced prefix leaves one beam
    free = tiny_engine.generate(prompt, p.replace(max_tokens=80, ignore_eos=True), raw=True)
    assert all(c.finish_reason == "length" and c.prompt_tokens + len(c.token_ids) <= limit + 1 for c in free)


def test_stop_strings_may_begin_in_the_lead(tiny_engine: Engine):
    """A continuation's kept prefix (``lead``) can hold the start of a stop string, never a whole one."""
    ids = tiny_engine.encode("q", raw=True)
    p = SamplingParams(max_tokens=12, stop=("\nQ:",))

    def run(lead: str, regex: str) -> tuple[str, str]:
        row = RowRequest(ids, p, 1, islands=Islands(constraint=Constraint.regex(regex)), lead=lead)
        (c,) = tiny_engine.run([row])
        return c.text, c.finish_reason

    assert run("So 2001.\n", r"Q: [a-z]{3}") == ("", "stop")
    assert run("So 2001.", r"ab\nQ: [a-z]{3}") == ("ab", "stop")
    assert run("x\nQ: y", r"abc") == ("abc", "stop")  # ends with its grammar, not at the lead's stop
    assert run("So.\n", r"abQ") == ("abQ", "stop")


def test_copy_island_fills_a_document_span_in_one_piece(tiny_engine: Engine, tmp_path):
    """COPY(doc, start, length): the span is injected verbatim and runs through the model as one
    prefill piece (the drawn tokens after it see it as a fresh forward over the whole text does)."""
    from sazanami.islands import Corpus

    (tmp_path / "x003.txt").write_text("".join(f"entry {i}: pink noise falls as 1/f\n" for i in range(30)))
    corpus = Corpus.load(tmp_path)
    isl = forced(r"COPY\(x003, 489, 40\)[a-z]{5}", builtin_tools(["copy"], corpus), max_result_tokens=200)
    ids = tiny_engine.encode("x", raw=True)
    (c,) = tiny_engine.run([RowRequest(ids, SamplingParams(max_tokens=80), 3, islands=isl)])
    (span,) = c.spans
    assert span["name"] == "COPY" and span["result"] == corpus.docs["x003"][489:529] and not span["error"]
    ref = recomputed_logprobs(tiny_engine, ids, c)
    for i in drawn(c):
        assert c.logprobs[i] == pytest.approx(ref[i], abs=1e-4)
