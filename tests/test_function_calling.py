"""OpenAI function calling and strict structured outputs (issue 29), as an agent uses them.

The official ``openai`` client against the live app on the tiny random model: a random model
writes valid calls only because the grammar makes it (``tool_grammar: false`` shows the
difference). One short check on Qwen2.5-Coder-0.5B (its own chat template with tools): it
decides to call in ``auto`` and, with ``tool_choice`` none, answers from the tool's result.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from sazanami.errors import ParameterError
from sazanami.server import Limits, create_app
from sazanami.server.testing import serving
from sazanami.server.tool_calls import (
    CallStream,
    FunctionCalling,
    chat,
    check_messages,
    fallback_messages,
    render_prompt,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 3, "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": -99, "maximum": 99},
                "b": {"type": "integer", "minimum": -99, "maximum": 99},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ONE = {"max_tokens": 200, "parallel_tool_calls": False}  # a random model would go on calling


@pytest.fixture(scope="module")
def client(tiny_engine):
    limits = Limits(max_tokens=256, max_n=8, max_tools=4, max_search_budget=2048, max_body_bytes=1 << 16)
    with serving(create_app("tiny-random", limits, engine=tiny_engine)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def _valid(call) -> dict:
    """The call's arguments, after checking they parse and follow its function's schema."""
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


# -- calls over HTTP ------------------------------------------------------------------------------
def test_named_call_is_valid_for_every_choice_and_seeded(client):
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, n=3, seed=4, **ONE
    )
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "tool_calls" and c.message.content is None
        (call,) = c.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
        _valid(call)
    again = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, n=3, seed=4, **ONE
    )
    args = [c.message.tool_calls[0].function.arguments for c in r.choices]
    assert [c.message.tool_calls[0].function.arguments for c in again.choices] == args
    assert len({c.seed for c in r.choices}) == 3  # each choice has its own seed
    other = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, n=3, seed=5, **ONE
    )
    assert [c.message.tool_calls[0].function.arguments for c in other.choices] != args


def test_required_calls_one_function_without_parallel(client):
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice="required", n=4, seed=1, **ONE
    )
    for c in r.choices:
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
        _valid(c.message.tool_calls[0])


def test_auto_without_a_call_is_free_text(client):
    """A random model never opens a call: the answer is text, as without tools (same seed, same text)."""
    r = client.chat.completions.create(model="tiny-random", messages=MSG, tools=TOOLS, seed=3, max_tokens=12)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length") and c.message.tool_calls is None and isinstance(c.message.content, str)
    none = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice="none", seed=3, max_tokens=12
    )
    assert none.choices[0].message.tool_calls is None
    plain = client.chat.completions.create(model="tiny-random", messages=MSG, seed=3, max_tokens=12)
    assert none.usage.prompt_tokens == r.usage.prompt_tokens > plain.usage.prompt_tokens  # none still describes them


def test_function_tools_with_server_tools(client):
    """server_tools run inside the text (their description joins the rendered system message) while
    function calls are constrained: a call's answer is still a valid call."""
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=2, extra_body={"server_tools": ["calc"]},
        **ONE,
    )  # fmt: skip
    assert r.choices[0].finish_reason == "tool_calls" and _valid(r.choices[0].message.tool_calls[0])


def test_completions_refuse_function_tools(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny-random", prompt="q", max_tokens=4, extra_body={"tools": TOOLS})
    assert e.value.body["param"] == "tools"


def test_grammar_off_leaves_calls_to_chance(client):
    """tool_grammar false: the same request is unconstrained, so the random model writes no valid call."""
    body = {"tool_grammar": False}
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=4, extra_body=body, **ONE
    )
    c = r.choices[0]
    assert (
        c.message.tool_calls is None
        and c.finish_reason in ("stop", "length")
        and "<tool_call>" not in c.message.content
    )


def test_streamed_call_reassembles_to_the_whole_response(client):
    kw = {"model": "tiny-random", "messages": MSG, "tools": TOOLS, "tool_choice": "required", "seed": 7, "n": 2, **ONE}
    whole = client.chat.completions.create(**kw)
    calls: dict[int, dict] = {0: {}, 1: {}}
    finish, pieces = {}, 0
    for chunk in client.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                call = calls[ch.index].setdefault(d.index, {"arguments": ""})
                if d.id is not None:
                    assert "id" not in call and d.type == "function"
                    call |= {"id": d.id, "name": d.function.name}
                call["arguments"] += d.function.arguments or ""
                pieces += 1
            assert not ch.delta.content
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert finish == {0: "tool_calls", 1: "tool_calls"}
    assert pieces > 10  # arguments arrive in pieces, not whole
    for c in whole.choices:
        (want,) = c.message.tool_calls
        (got,) = calls[c.index].values()
        assert (got["name"], got["arguments"]) == (want.function.name, want.function.arguments)
        assert got["id"].startswith("call_")


def test_streamed_content_without_a_call(client):
    kw = {"model": "tiny-random", "messages": MSG, "tools": TOOLS, "seed": 3, "max_tokens": 12}
    whole = client.chat.completions.create(**kw).choices[0].message.content
    text = "".join(
        ch.choices[0].delta.content or "" for ch in client.chat.completions.create(stream=True, **kw) if ch.choices
    )
    assert text == whole


def test_strict_json_output(client):
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 8},
            "score": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, response_format=fmt, n=3, seed=2, max_tokens=120
    )
    for c in r.choices:
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.message.content), schema)
    # with tools in auto: the answer is that JSON or a call
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, response_format=fmt, n=3, seed=2, **ONE
    )
    for c in r.choices:
        if c.message.tool_calls:
            _valid(c.message.tool_calls[0])
        else:
            jsonschema.validate(json.loads(c.message.content), schema)


def test_conversation_with_tool_results(client):
    """The agent's second turn: the assistant's call and the tool's result go back in the messages
    (as the openai client sends them back: the response's message object)."""
    first = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=1, **ONE
    )
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    messages = [*MSG, msg, {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    r = client.chat.completions.create(model="tiny-random", messages=messages, tools=TOOLS, seed=1, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.prompt_tokens > first.usage.prompt_tokens


def test_search_fluctuation_and_beams_with_calls(client):
    """A search whose candidates are calls (scored; the winner is a valid call), a fluctuation preset, beams."""
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=3, **ONE,
        extra_body={"search": {"strategy": "best_of_n", "budget": 800, "scorer": "logprob", "options": {"n": 3}}},
    )  # fmt: skip
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and r.search["nodes"] >= 3
    _valid(c.message.tool_calls[0])
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=3, n=2, **ONE,
        extra_body={"fluctuation": "pink-temperature"},
    )  # fmt: skip
    assert all(c.finish_reason == "tool_calls" and _valid(c.message.tool_calls[0]) for c in r.choices)
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, seed=3, extra_body={"beams": {"width": 3}},
        **ONE,
    )  # fmt: skip
    assert len(r.choices) == 3 and all(
        c.finish_reason == "tool_calls" and _valid(c.message.tool_calls[0]) for c in r.choices
    )


def test_server_tools_keep_working_under_both_spellings(client):
    for field in ("server_tools", "tools"):  # "tools": ["calc"] is the deprecated spelling
        r = client.completions.create(
            model="tiny-random",
            prompt="q",
            max_tokens=20,
            seed=5,
            extra_body={field: ["calc"], "regex": r"CALC\(6\*7\) is"},
        )
        assert r.choices[0].text.startswith("CALC(6*7) => 42\n")


# -- bad input: 400 naming the field --------------------------------------------------------------
def _tool(name: str = "f", parameters: object = None) -> dict:
    fn: dict = {"name": name}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def _deep(levels: int) -> dict:
    schema: dict = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


BAD = [
    ({"tools": [_tool(parameters={"type": "objekt"})]}, "tools[0].function.parameters"),
    (
        {"tools": [_tool(parameters={"type": "object", "properties": {"a": {"minimum": "zero"}}})]},
        "tools[0].function.parameters",
    ),
    ({"tools": [_tool(parameters={"type": "string"})]}, "tools[0].function.parameters"),
    ({"tools": [_tool(parameters=_deep(40))]}, "tools[0].function.parameters"),
    ({"tools": [_tool("f"), _tool("g"), _tool("f")]}, "tools[2].function.name"),
    ({"tools": [_tool(n) for n in "abcde"]}, "tools"),  # max_tools = 4 on this server
    ({"tools": [_tool("bad name")]}, "tools[0].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": ["calc", _tool()]}, "tools"),
    ({"tools": [_tool()], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": [_tool()], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": [_tool()], "regex": "a+"}, "regex"),
    ({"tools": [_tool()], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}},
        "response_format.json_schema.schema",
    ),
    (
        {"messages": [*MSG, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
        "messages[1].tool_call_id",
    ),
    (
        {
            "messages": [
                *MSG,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "b", "content": "1"},
            ]
        },
        "messages[2].tool_call_id",
    ),  # fmt: skip
    ({"server_tools": ["nope"]}, "server_tools[0]"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_input_is_400_naming_the_field(client, body, param):
    body = {"model": "tiny-random", "messages": MSG, "max_tokens": 4} | body
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", body=body, cast_to=object)
    assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body


# -- the module on its own ------------------------------------------------------------------------
def test_parse_and_stream_agree_on_every_split():
    calling = FunctionCalling.from_openai(TOOLS)
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "P}<", "unit": "c"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    content, calls = calling.parse(text)
    assert content == "Let me check." and [c.name for c in calls] == ["get_weather", "add"]
    assert calls[0].arguments == '{"city": "P}<", "unit": "c"}' and calling.validate(calls[0]) is None
    for step in (1, 2, 5, 17):
        stream, deltas = CallStream(calling), []
        for i in range(0, len(text), step):
            deltas += stream.feed(text[i : i + step])
        deltas += stream.finish()
        assert "".join(d.get("content", "") for d in deltas) == content
        args = ["", ""]
        for d in deltas:
            for t in d.get("tool_calls", []):
                args[t["index"]] += t["function"].get("arguments", "")
        assert args == [c.arguments for c in calls]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
        '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        '{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',  # a stray fence (unconstrained)
    ],
)
def test_bare_calls_parse_and_stream(text):
    calling = FunctionCalling.from_openai(TOOLS)
    content, (call,) = calling.parse(text)
    assert content is None and (call.name, call.arguments) == ("add", '{"a": 1, "b": 2}')
    for grammar in (True, False):
        stream = CallStream(FunctionCalling.from_openai(TOOLS, grammar=grammar))
        deltas = [d for ch in text for d in stream.feed(ch)]
        assert (len(deltas) > 2) is grammar  # unconstrained, a call comes whole at the end
        deltas += stream.finish()
        assert not any("content" in d for d in deltas)
        args = "".join(t["function"].get("arguments", "") for d in deltas for t in d["tool_calls"])
        assert args == call.arguments and stream.called


def test_several_bare_calls_parse_unconstrained():
    calling = FunctionCalling.from_openai(TOOLS, grammar=False)
    text = '{"name": "add", "arguments": {"a": 1, "b": 2}}\n{\n  "name": "get_weather",\n  "arguments": {"city": "Oslo"}\n}'
    content, calls = calling.parse(text)
    assert content is None and [(c.name, c.arguments) for c in calls] == [
        ("add", '{"a": 1, "b": 2}'),
        ("get_weather", '{"city": "Oslo"}'),  # re-written as json.dumps writes it
    ]
    assert calling.validate(calls[1]) == "'unit' is a required property"


def test_stream_sends_json_that_is_no_call_as_content_at_once():
    stream = CallStream(FunctionCalling.from_openai(TOOLS))
    assert stream.feed('{"na') == [] and stream.feed("mes") == [{"content": '{"names'}]  # not {"name": a call
    assert stream.feed('": 1}') + stream.finish() == [{"content": '": 1}'}] and not stream.called


def test_stream_keeps_a_call_cut_by_max_tokens_and_none_streams_text():
    cut = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b'
    stream = CallStream(FunctionCalling.from_openai(TOOLS))
    deltas = stream.feed(cut) + stream.finish()
    assert not any("content" in d for d in deltas) and stream.called  # what was sent of the call stays
    assert FunctionCalling.from_openai(TOOLS).parse(cut) == (cut, [])  # non-streamed: the text is content
    none = FunctionCalling.from_openai(TOOLS, "none")
    assert none is not None and none.constraint(None) is None
    stream = CallStream(none)
    assert stream.feed('{"name": "add"') + stream.finish() == [{"content": '{"name": "add"'}]


def test_parse_refuses_what_is_not_a_call():
    calling = FunctionCalling.from_openai(TOOLS)
    for text in (
        '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>',  # unknown function
        '<tool_call>\n{"name": "add", "arguments": {"a": 1\n</tool_call>',  # not JSON
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n',  # never closed
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call> and more',  # text after the calls
        '{"name": "add", "arguments": {"a": 1}} and more',
        '{"name": "add", "arguments": {"a": 1}}\n{"name": "final", "arguments": {}}',  # one unknown of two
    ):
        assert calling.parse(text) == (text, [])
    assert calling.validate(calling.parse('<tool_call>\n{"name": "add", "arguments": {"a": "x"}}\n</tool_call>')[1][0])


def test_grammar_accepts_exactly_valid_calls(tiny_engine):
    tok = tiny_engine.tokenizer
    bare = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    call = f"<tool_call>\n{bare}\n</tool_call>"
    cases = {
        "hello": (True, False, False),
        "Sure. " + call: (True, False, False),
        call: (True, True, False),
        call + "\n" + call: (True, True, False),
        call.replace('"b": 2', '"b": "2"'): (False, False, False),
        call.replace('"b": 2', '"b":2'): (False, False, False),  # json.dumps' separators only
        bare: (True, True, False),  # a bare call is the whole answer (small models write them)
        "```json\n" + bare + "\n```": (True, True, False),
        bare + "\n" + bare: (False, False, False),  # several calls need tags
        '{"answer": 5}': (True, False, False),  # JSON that is no call stays free text in auto
        '{"name": "nope", "arguments": {}}': (False, False, False),  # but {"name" starts a call
        '```json\n{"answer": 5}\n```': (False, False, False),  # and so does a json fence
    }
    grammars = [FunctionCalling.from_openai(TOOLS, c).constraint(tok) for c in ("auto", "required", NAMED)]
    for text, want in cases.items():
        assert tuple(g.matches(text, tok) for g in grammars) == want, text
    one = FunctionCalling.from_openai(TOOLS, "required", parallel_tool_calls=False).constraint(tok)
    assert one.matches(call, tok) and not one.matches(call + "\n" + call, tok)


def test_fallback_format_renders_calls_and_results(tiny_engine):
    messages = [
        {"role": "system", "content": "Be brief."},
        *MSG,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}},
            {"id": "c2", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "21"},
        {"role": "tool", "tool_call_id": "c2", "content": "3"},
    ]  # fmt: skip
    check_messages(messages)
    functions = FunctionCalling.from_openai(TOOLS).functions
    plain = fallback_messages(messages, functions)
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user"]
    assert plain[0]["content"].startswith("Be brief.\n\n# Tools") and '"name": "get_weather"' in plain[0]["content"]
    assert plain[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    assert plain[3]["content"] == "<tool_response>\n21\n</tool_response>\n<tool_response>\n3\n</tool_response>"
    text = render_prompt(tiny_engine.tokenizer, messages, functions)
    assert text == tiny_engine.tokenizer.apply_chat_template(plain)


def test_tools_grammar_is_bounded_as_a_whole(tiny_engine):
    """Each schema within the bounds, all of them together over the grammar's size: 400 naming tools."""
    big = {"type": "object", "properties": {"k": {"enum": [f"value-number-{i:06d}" for i in range(1500)]}}}
    tools = [_tool(f"f{i}", big) for i in range(4)]  # ~35,000 characters each, 100,000 at most in all
    calling = FunctionCalling.from_openai(tools)
    with pytest.raises(ParameterError) as e:
        calling.constraint(tiny_engine.tokenizer)
    assert e.value.param == "tools" and "100000 characters" in str(e.value)
    assert FunctionCalling.from_openai(tools[:2]).constraint(tiny_engine.tokenizer) is not None


def test_check_messages_and_tools_errors():
    with pytest.raises(ParameterError) as e:
        check_messages([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}])
    assert e.value.param == "messages[0].tool_calls[0].id"
    with pytest.raises(ParameterError) as e:
        FunctionCalling.from_openai([_tool()], parallel_tool_calls="yes")
    assert e.value.param == "parallel_tool_calls"
    assert FunctionCalling.from_openai([], "none") is None and FunctionCalling.from_openai([]) is None
    with pytest.raises(ParameterError) as e:
        FunctionCalling.from_openai(TOOLS, "required", content_schema={"type": "object"})
    assert e.value.param == "response_format"


def test_http_and_python_api_agree(client, tiny_engine):
    """The server is a thin layer over tool_calls.chat's objects: the same seeded request, the same calls."""
    from sazanami.sampling.params import SamplingParams

    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, tools=TOOLS, tool_choice=NAMED, n=3, seed=4, **ONE
    )
    params = SamplingParams(seed=4, n=3, max_tokens=200)
    out = chat(tiny_engine, MSG, tools=TOOLS, tool_choice=NAMED, parallel_tool_calls=False, params=params)
    assert [c.message["tool_calls"][0]["function"]["arguments"] for c in out] == [
        c.message.tool_calls[0].function.arguments for c in r.choices
    ]


def test_python_api_chat(tiny_engine):
    from sazanami.sampling.params import SamplingParams

    params = SamplingParams(seed=9, n=2, max_tokens=200)
    out = chat(tiny_engine, MSG, tools=TOOLS, tool_choice=NAMED, parallel_tool_calls=False, params=params)
    assert len(out) == 2
    for c in out:
        assert c.finish_reason == "tool_calls" and c.message["content"] is None
        (call,) = c.message["tool_calls"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS["get_weather"])
    again = chat(tiny_engine, MSG, tools=TOOLS, tool_choice=NAMED, parallel_tool_calls=False, params=params)
    assert [c.message["tool_calls"][0]["function"]["arguments"] for c in again] == [
        c.message["tool_calls"][0]["function"]["arguments"] for c in out
    ]


# -- the real model: its own template, a bare call in auto, an answer from the result ----------------------
QWEN = Path.home() / ".cache/sazanami/models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


@pytest.mark.real
@pytest.mark.skipif(not QWEN.exists(), reason="Qwen2.5-Coder-0.5B GGUF not downloaded (sazanami models pull)")
def test_qwen_calls_in_auto_and_answers_from_the_result():
    from sazanami import models
    from sazanami.engine.loop import Engine

    engine = Engine(models.load("qwen2.5-coder-0.5b", backend="llamacpp", threads=1))
    with serving(create_app("qwen2.5-coder-0.5b", Limits(max_tokens=64), engine=engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
        r = client.chat.completions.create(
            model="qwen2.5-coder-0.5b", messages=messages, tools=TOOLS, seed=1, temperature=0
        )
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c.message
        (call,) = c.message.tool_calls
        assert call.function.name == "get_weather" and _valid(call)["city"] == "Paris"
        messages += [c.message, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
        r = client.chat.completions.create(
            model="qwen2.5-coder-0.5b", messages=messages, tools=TOOLS, tool_choice="none", seed=1, temperature=0
        )  # the 0.5B model would call again in auto
        assert r.choices[0].message.tool_calls is None and "21" in r.choices[0].message.content


# -- bench/agent_tools.py: its tools, its scoring and one run of its loop (tiny model) ----------------
@pytest.fixture(scope="module")
def bench():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / "agent_tools.py"
    spec = importlib.util.spec_from_file_location("agent_tools_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_tools_and_scoring(bench):
    assert bench.convert_units(100, "c", "f") == "212" and bench.convert_units(1, "mi", "km") == "1.60934"
    assert bench.convert_units(1, "kg", "m").startswith("error")
    assert bench.calculate("(2 + 3) * 4") == "20" and bench.calculate("x").startswith("error")
    assert bench.lookup("Lyon", "population") == "522250"
    for question, expected, _ in bench.TASKS:  # every task's answer is reachable through the tools
        assert expected > 0, question
    assert bench.solved("It is 26.1 miles.", 42000 / 1609.344) and not bench.solved("About 30.", 26.1)
    assert bench.solved("2,102,650 people", 2102650)
    assert bench.call_attempts('{"name": "lookup", "arguments": {}} x') == 1 and bench.call_attempts("Hi {name}") == 0


def test_bench_agent_runs_against_the_live_app(bench, client, monkeypatch):
    # the byte-level tiny model's context (2048) holds two of the four tools' descriptions
    monkeypatch.setattr(bench, "TOOLS", [t for t in bench.TOOLS if t["function"]["name"] in ("lookup", "final_answer")])
    monkeypatch.setattr(bench, "SYSTEM", "Use the tools.")
    monkeypatch.setattr(bench, "MAX_TURNS", 0)  # final_answer at once: a random model never stops on its own
    rec = bench.agent(client, "tiny-random", bench.TASKS[2], seed=2, grammar=True)
    assert rec["turns"] == 1 and rec["calls"] == rec["valid"] == 1 and rec["answer"] is not None
    cut = bench.agent(client, "tiny-random", bench.TASKS[2], seed=0, grammar=True)  # digits until max_tokens
    assert cut["calls"] == 0 and cut["unparsed_attempts"] == cut["emitted"] == 1
    summary = bench.summarise([rec])
    assert summary["on"]["runs"] == 1 and "| on | 1 |" in bench.table(summary)
