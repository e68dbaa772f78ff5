"""Grammar constraints (llguidance) in the engine, the two-phase mode and the CLI options (tiny model)."""

from __future__ import annotations

import json
import re

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sazanami.cli.options import highlight, island_options, islands_from_options
from sazanami.engine.loop import Engine, RowRequest
from sazanami.errors import ParameterError
from sazanami.islands import Constraint, Islands, builtin_tools, drawn_text
from sazanami.islands.constraints import ConstraintBatch, unpack_bitmask
from sazanami.islands.grammar_writer import REGEX_META_GRAMMAR, extract_grammar, generate_in_own_grammar, write_grammar
from sazanami.sampling.params import SamplingParams

PRESETS = [
    "none", "white-temperature", "pink-temperature", "brown-temperature",
    "pink-logits", "pink-draw", "pink-hidden", "pink-embedding",
]  # fmt: skip
REGEX = r"(yes|no|maybe), [a-z]{2,5}[0-9]{1,3}"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
LARK = r"""
start: "(" NUM (OP NUM){0,3} ")" " = " ANSWER
OP: "+" | "-" | "*"
NUM: /[0-9]{1,3}/
ANSWER: /[a-z]{1,4}/
"""


def check_schema(text: str) -> None:
    doc = json.loads(text)
    assert set(doc) == {"name", "age", "ok"}
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 6
    assert isinstance(doc["age"], int) and 0 <= doc["age"] <= 120
    assert isinstance(doc["ok"], bool)


def without_spans(c) -> str:
    return drawn_text(c.text, c.spans)


@pytest.fixture
def guard_spy(monkeypatch):
    """Counts draws the post-draw guard had to correct (must stay 0: the mask alone holds)."""
    repaired = []
    original = ConstraintBatch.guard

    def spy(self, tokens, masked):
        out = original(self, tokens, masked)
        repaired.append(int((out != tokens).sum()))
        return out

    monkeypatch.setattr(ConstraintBatch, "guard", spy)
    return repaired


@pytest.mark.parametrize("preset", PRESETS)
def test_constrained_outputs_always_match_under_every_fluctuation(tiny_engine: Engine, preset: str, guard_spy):
    pytest.importorskip("sazanami.noise.fluctuation")
    params = SamplingParams(n=3, seed=7, max_tokens=96, temperature=1.5, fluctuation=preset)
    tok = tiny_engine.tokenizer
    for constraint, check in (
        (Constraint.regex(REGEX), lambda t: re.fullmatch(REGEX, t)),
        (Constraint.json_schema(SCHEMA), check_schema),
        (Constraint.lark(LARK), lambda t: Constraint.lark(LARK).matches(t, tok)),
    ):
        out = tiny_engine.generate("x", params, raw=True, islands=Islands(constraint=constraint))
        assert len(out) == 3 and len({c.text for c in out}) > 1, [c.text for c in out]
        for c in out:
            assert c.finish_reason == "stop", c.text
            assert check(c.text) is not False, c.text
    assert sum(guard_spy) == 0


def test_mask_survives_every_sampler_option(tiny_engine: Engine, guard_spy):
    """Penalties, dynamic temperature, truncation and mirostat never revive a masked token."""
    isl = Islands(constraint=Constraint.regex(REGEX))
    for extra in (
        {"repetition_penalty": 1.5, "presence_penalty": 1.0, "frequency_penalty": 1.0},
        {"dynatemp_range": 1.0}, {"top_k": 5, "top_p": 0.5, "min_p": 0.1, "typical_p": 0.8},
        {"mirostat_tau": 3.0}, {"temperature": 0.0}, {"ignore_eos": True},
    ):  # fmt: skip
        for c in tiny_engine.generate("x", SamplingParams(n=2, seed=3, max_tokens=40, **extra), raw=True, islands=isl):
            assert re.fullmatch(REGEX, c.text) and c.finish_reason == "stop", (extra, c.text)
    assert sum(guard_spy) == 0


def test_guard_repairs_a_draw_outside_the_mask():
    """Should a sampler step ever unmask a token, the guard puts back the best allowed one."""
    batch = ConstraintBatch([None], 8)
    batch.masked_rows = [0]
    batch.allowed = np.array([[0, 1, 1, 0, 0, 0, 0, 0]], dtype=np.uint8)
    masked = torch.tensor([[0.0, 1.0, 3.0, 9.0, 0, 0, 0, 0]])
    assert batch.guard(torch.tensor([3]), masked).tolist() == [2]  # token 3 was drawn, though not allowed
    assert batch.guard(torch.tensor([1]), masked).tolist() == [1]
    assert batch.repairs == 1


def test_unpack_bitmask():
    packed = torch.tensor([[0b101, -1]], dtype=torch.int32)
    allowed = unpack_bitmask(packed, 40)
    assert allowed[0, :4].tolist() == [True, False, True, False]
    assert allowed[0, 32:].all() and not allowed[0, 3:32].any()


def test_tool_result_is_exempt_from_the_grammar(tiny_engine: Engine):
    isl = Islands(
        tools=builtin_tools(["calc"]), constraint=Constraint.regex(r"CALC\(6\*7\) is [a-z]{3}"), describe_tools=False
    )
    for c in tiny_engine.generate("x", SamplingParams(n=2, seed=1, max_tokens=40), raw=True, islands=isl):
        assert c.text.startswith("CALC(6*7) => 42\n is ")
        (span,) = c.spans
        assert re.fullmatch(r"CALC\(6\*7\) is [a-z]{3}", c.text[: span["start"]] + c.text[span["end"] :])


def test_a_continuation_stays_inside_the_grammar(tiny_engine: Engine):
    """Search continues partial outputs: the grammar first consumes the drawn prefix (tool results skipped)."""
    regex = r"CALC\(1\+1\) [a-z]{20,30}"
    isl = Islands(tools=builtin_tools(["calc"]), constraint=Constraint.regex(regex), describe_tools=False)
    ids = tiny_engine.encode("x", raw=True)
    (part,) = tiny_engine.run([RowRequest(ids, SamplingParams(max_tokens=14), 1, islands=isl)])
    assert part.finish_reason == "length" and part.spans
    cont, extra, _ = isl.continuing(tiny_engine.tokenizer, part.token_ids, part.spans)
    assert extra == [] and cont.calls_made == 1 and "CALC" not in cont.lead
    rest = RowRequest(ids + part.token_ids, SamplingParams(max_tokens=40), 2, islands=cont)
    (tail,) = tiny_engine.run([rest])
    whole = without_spans(part) + tail.text
    assert tail.finish_reason == "stop" and re.fullmatch(regex, whole), whole
    with pytest.raises(ParameterError, match="prefix"):
        tiny_engine.run(
            [
                RowRequest(
                    ids,
                    SamplingParams(max_tokens=4),
                    3,
                    islands=isl.continuing(tiny_engine.tokenizer, tiny_engine.encode("no"))[0],
                )
            ]
        )


def test_invalid_grammars_name_their_parameter():
    with pytest.raises(ParameterError) as info:
        Constraint.regex("(ab")
    assert info.value.param == "regex" and "invalid regex" in str(info.value)
    with pytest.raises(ParameterError) as info:
        Constraint.lark("start: undefined_rule")
    assert info.value.param == "grammar"
    with pytest.raises(ParameterError) as info:
        Constraint.json_schema("{not json")
    assert info.value.param == "json_schema"
    c = Constraint.json_schema(SCHEMA)
    assert Constraint.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_two_phase_regex_written_under_meta_grammar(tiny_engine: Engine):
    writer = SamplingParams(seed=3, max_tokens=24, temperature=1.0)
    written, out = generate_in_own_grammar(
        tiny_engine, "Name a colour.", SamplingParams(n=2, seed=4, max_tokens=24), writer_params=writer
    )
    if written.fell_back:  # the meta-grammar admits some invalid regexes (e.g. a{3,1}); then free text
        assert "falling back" in written.message and written.constraint is None
    else:
        assert written.constraint == Constraint.regex(written.source)
        assert Constraint.lark(REGEX_META_GRAMMAR).matches(written.source, tiny_engine.tokenizer)
        for c in out:
            if c.finish_reason == "stop":
                assert written.constraint.matches(c.text, tiny_engine.tokenizer), (written.source, c.text)


def test_two_phase_falls_back_with_a_clear_message(tiny_engine: Engine):
    fallback = Constraint.regex("[a-z]{3}")
    written = write_grammar(tiny_engine, "Name a colour.", "lark", SamplingParams(seed=1, max_tokens=16), 2, fallback)
    assert written.fell_back and written.constraint == fallback
    assert written.message.startswith("none of the model's 2 lark grammar(s) was valid")
    assert written.message.endswith("falling back to the fallback regex") and len(written.errors) == 2


def test_extract_grammar():
    assert extract_grammar("```regex\n/[a-z]+/\n```", "regex") == "[a-z]+"
    assert extract_grammar("`\\d{3}`\nexplanation", "regex") == "\\d{3}"
    assert extract_grammar('```lark\nstart: "a"\n```', "lark") == 'start: "a"'


@click.command()
@island_options
def _cmd(**kw):
    from sazanami import models

    isl = islands_from_options(kw, models.load("tiny-random").tokenizer)
    click.echo(json.dumps(isl.to_dict() if isl is not None else None))


def test_cli_options(tmp_path):
    run = CliRunner().invoke
    assert json.loads(run(_cmd, []).output) is None
    doc = json.loads(run(_cmd, ["--tools", "calc", "--regex", "[0-9]+", "--tool-timeout", "2"]).output)
    assert (
        doc["tools"] == ["CALC"] and doc["constraint"] == {"kind": "regex", "source": "[0-9]+"} and doc["timeout"] == 2
    )
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    assert json.loads(run(_cmd, ["--json-schema", str(schema)]).output)["constraint"]["kind"] == "json_schema"
    grammar = tmp_path / "g.lark"
    grammar.write_text(LARK)
    assert json.loads(run(_cmd, ["--grammar", str(grammar)]).output)["constraint"]["kind"] == "lark"
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "pink noise"}\n')
    assert json.loads(run(_cmd, ["--tools", "search,load", "--corpus", str(corpus)]).output)["tools"] == [
        "SEARCH",
        "LOAD",
    ]
    for args, param in (
        (["--regex", "a", "--grammar", str(grammar)], "grammar"),
        (["--corpus", str(corpus)], "corpus"),
        (["--tools", "search"], "corpus"),
        (["--regex", "(a"], "regex"),
        (["--json-schema", "missing.json"], "json_schema"),
    ):
        r = run(_cmd, args)
        assert isinstance(r.exception, ParameterError) and r.exception.param == param, (args, r.output)


def test_highlight_marks_injected_spans(tiny_engine: Engine):
    isl = Islands(tools=builtin_tools(["calc"]), constraint=Constraint.regex(r"CALC\(2\+2\)!"), describe_tools=False)
    (c,) = tiny_engine.generate("x", SamplingParams(seed=1, max_tokens=20), raw=True, islands=isl)
    assert highlight(c, lambda s: f"[{s}]") == "CALC(2+2)[ => 4\n]!"
