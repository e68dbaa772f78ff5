"""The HTTP API through the official openai client, against a live uvicorn server (tiny model)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import openai
import pytest

from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

MSG = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def url(tiny_engine):
    limits = Limits(max_tokens=64, max_n=8, max_search_budget=512, max_concurrent=8, max_queue=8, max_body_bytes=4096)
    with serving(create_app("tiny-random", limits, engine=tiny_engine)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


# -- plain requests ------------------------------------------------------------------------------
def test_models(client):
    assert [m.id for m in client.models.list()] == ["tiny-random"]
    assert client.models.retrieve("tiny-random").owned_by == "sazanami"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_plain(client):
    r = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=12, seed=3)
    assert r.object == "chat.completion" and len(r.choices) == 1
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    assert r.seed == 3 and isinstance(c.seed, int)  # extensions: request and variant seeds


def test_completion_logprobs_and_echo(client):
    r = client.completions.create(model="tiny-random", prompt="abc", max_tokens=8, seed=1, logprobs=0, echo=True)
    c = r.choices[0]
    assert c.text.startswith("abc")
    assert len(c.logprobs.token_logprobs) == r.usage.completion_tokens == len(c.logprobs.tokens)
    assert all(lp <= 0 for lp in c.logprobs.token_logprobs)


def test_top_logprobs_are_the_raw_alternatives(client, tiny_engine):
    """top_logprobs: the k most likely tokens of the raw distribution, chat and completions, streamed too."""
    r = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=6,
        seed=2,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and item.logprob <= tops[0] + 1e-4
    stream = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=6,
        seed=2,
        logprobs=True,
        top_logprobs=3,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    streamed = [i for ch in stream for c in ch.choices if c.logprobs and c.logprobs.content for i in c.logprobs.content]
    assert [[t.token for t in i.top_logprobs] for i in streamed] == [[t.token for t in i.top_logprobs] for i in content]
    r = client.completions.create(model="tiny-random", prompt="abc", max_tokens=4, seed=1, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.top_logprobs) == len(lp.tokens) and all(len(d) <= 2 for d in lp.top_logprobs)
    assert all(1 <= len(d) and all(v <= 0 for v in d.values()) for d in lp.top_logprobs)  # texts may collide


def test_new_samplers_over_http(client):
    """logit_bias in OpenAI's shape, and XTC / DRY / top-nσ as body fields."""
    ids = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=4,
        seed=1,
        temperature=0,
        logit_bias={"7": 100},
        extra_body={"ignore_eos": True, "trace": True},
    ).choices[0]
    assert [step["token"] for step in ids.model_extra["trace"]] == [7] * 4
    r = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=4,
        seed=1,
        extra_body={"xtc_probability": 0.5, "dry_multiplier": 0.8, "top_n_sigma": 1.0, "dry_sequence_breakers": ["\n"]},
    )
    assert r.choices[0].finish_reason in ("stop", "length")


def test_completions_several_prompts_index_order(client):
    r = client.completions.create(model="tiny-random", prompt=["a", "b"], n=2, max_tokens=4, seed=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]


def test_seeded_reproducibility(client):
    def texts(seed: int) -> list[str]:
        r = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=16, n=3, seed=seed)
        return [c.message.content for c in r.choices]

    a = texts(11)
    assert a == texts(11)
    assert a != texts(12)
    assert len(set(a)) > 1  # variants differ from each other


def test_no_seed_is_reported_and_reruns(client):
    r = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=10)
    again = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=10, seed=r.seed)
    assert again.choices[0].message.content == r.choices[0].message.content


# -- streaming -----------------------------------------------------------------------------------
def test_stream_n_by_choice_index_matches_whole_response(client):
    stream = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=16,
        n=3,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, finish, roles, usage = {}, {}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles[ch.index] = ch.delta.role
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    whole = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=16, n=3, seed=5)
    assert roles == {0: "assistant", 1: "assistant", 2: "assistant"}
    assert [texts[i] for i in range(3)] == [c.message.content for c in whole.choices]
    assert [finish[i] for i in range(3)] == [c.finish_reason for c in whole.choices]
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_stream_wire_format(url):
    body = {"model": "tiny-random", "prompt": "x", "max_tokens": 4, "stream": True, "seed": 1}
    req = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ")
        assert json.loads(e[6:])["object"] == "text_completion"


def test_stream_completions(client):
    pieces = [
        c.choices[0].text
        for c in client.completions.create(model="tiny-random", prompt="x", max_tokens=8, seed=9, stream=True)
        if c.choices
    ]
    whole = client.completions.create(model="tiny-random", prompt="x", max_tokens=8, seed=9)
    assert "".join(pieces) == whole.choices[0].text


def test_usage_reports_prompt_tokens_served_by_the_prefix_cache(client, tiny_engine):
    # A long system prompt no other test sends: the first request computes it, the next reuse it.
    tiny_engine.clear_prefix_cache()  # the session's engine: other files' prompts share the template's head
    system = "You are the archivist of the lighthouse at Kerrow Point. " * 12
    chat = [{"role": "system", "content": system}]
    first = client.chat.completions.create(
        model="tiny-random", messages=chat + [{"role": "user", "content": "Name a bird."}], max_tokens=4, seed=1
    )
    second = client.chat.completions.create(
        model="tiny-random", messages=chat + [{"role": "user", "content": "Name a fish."}], max_tokens=4, seed=1
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens and cached >= first.usage.prompt_tokens // 2
    # streamed: the final usage chunk carries it too
    stream = client.chat.completions.create(
        model="tiny-random", messages=chat + [{"role": "user", "content": "Name a tree."}], max_tokens=4, seed=1,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens_details.cached_tokens == cached
    # completions: n rows of one prompt count its cached tokens once, as prompt_tokens counts it
    raw = system + "Q: Name a stone. A:"
    again = client.completions.create(model="tiny-random", prompt=raw, max_tokens=4, n=3, seed=2)
    assert again.usage.prompt_tokens_details.cached_tokens == 0  # raw text: not the chat template's tokens
    again = client.completions.create(model="tiny-random", prompt=raw, max_tokens=4, n=3, seed=2)
    assert 0 < again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens


# -- extensions ----------------------------------------------------------------------------------
def test_fluctuation_preset_and_json_with_trace(client):
    r = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=16,
        seed=1,
        extra_body={"fluctuation": "pink-temperature", "trace": True},
    )
    trace = r.choices[0].trace
    assert len(trace) >= 1 and "temperature" in trace[0]["noise"]
    temps = {round(s["temperature"], 6) for s in trace}
    assert len(trace) == 1 or len(temps) > 1  # the temperature fluctuates
    spec = {"temperature": {"sigma": 0.5, "beta": 2.0}}
    r2 = client.chat.completions.create(
        model="tiny-random", messages=MSG, max_tokens=8, seed=1, extra_body={"fluctuation": spec}
    )
    assert r2.choices[0].message.content is not None


def test_search_with_tree(client):
    r = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=8,
        seed=4,
        extra_body={
            "search": {"strategy": "best_of_n", "budget": 40, "scorer": "logprob", "return_tree": True},
            "trace": True,
        },
    )
    s = r.search
    tree = s["tree"]
    assert tree["format"] == "sazanami.tree/1" and s["best"] == tree["best"]
    best = tree["nodes"][s["best"]]
    assert r.choices[0].message.content == best["text"] == tree["text"]
    assert len(tree["nodes"]) >= 3 and s["spend"]["generated_tokens"] <= 40
    assert "trace" in best["meta"]  # per-node traces for the playground
    again = client.chat.completions.create(
        model="tiny-random",
        messages=MSG,
        max_tokens=8,
        seed=4,
        extra_body={"search": {"strategy": "best_of_n", "budget": 40, "scorer": "logprob"}},
    )
    assert again.choices[0].message.content == best["text"] and "tree" not in again.search


def test_search_streamed(client):
    chunks = list(
        client.chat.completions.create(
            model="tiny-random",
            messages=MSG,
            max_tokens=6,
            seed=4,
            stream=True,
            extra_body={"search": {"budget": 24, "scorer": "logprob"}},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.search["strategy"] == "best_of_n" and isinstance(text, str)


def test_regex_constraint(client):
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, max_tokens=12, seed=2, extra_body={"regex": "[ab]{3}"}
    )
    assert re.fullmatch("[ab]{3}", r.choices[0].message.content)


def test_tools_accepted_and_unknown_tool_refused(client):
    r = client.chat.completions.create(
        model="tiny-random", messages=MSG, max_tokens=6, seed=2, extra_body={"tools": ["calc"]}
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    # function objects are OpenAI function calling now (tests/test_function_calling.py); server tools by name
    for field in ("tools", "server_tools"):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny-random", messages=MSG, extra_body={field: ["get_weather"]})
        assert e.value.body["param"] == f"{field}[0]"


def test_tools_and_grammar_inside_search_and_beams(client):
    """Islands compose with search and stochastic beams: the winner follows the grammar, results injected."""
    regex = r"CALC\(6\*7\) is [a-z]{3}"
    body = {"tools": ["calc"], "regex": regex, "search": {"strategy": "noise_search", "budget": 120,
            "scorer": "contains:a", "options": {"mode": "paths"}, "return_tree": True}}  # fmt: skip
    r = client.completions.create(model="tiny-random", prompt="q", max_tokens=20, seed=5, extra_body=body)
    c = r.choices[0]
    assert c.text.startswith("CALC(6*7) => 42\n is ")
    (span,) = c.spans
    assert (span["name"], span["result"]) == ("CALC", "42")
    nodes = [n for n in r.search["tree"]["nodes"][1:] if n["finish_reason"] != "partial"]
    assert all(n["spans"] and n["text"].startswith("CALC(6*7) => 42") for n in nodes)
    body = {"tools": ["calc"], "regex": regex, "fluctuation": {"beams": {"width": 3}}}
    r = client.completions.create(model="tiny-random", prompt="q", max_tokens=20, seed=5, extra_body=body)
    assert len(r.choices) == 3
    assert all(c.text.startswith("CALC(6*7) => 42\n is ") and c.spans for c in r.choices)


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1], got 1.5"),
        ({"temperature": -1}, "temperature", "[0, 100]"),
        ({"n": 9}, "n", "n must be in [1, 8] on this server, got 9"),
        ({"max_tokens": 65}, "max_tokens", "[1, 64]"),
        ({"extra_body": {"nonsense": 1}}, "nonsense", "unknown field"),
        ({"extra_body": {"fluctuation": "purple"}}, "fluctuation", "purple"),
        ({"extra_body": {"search": {"budget": 10_000}}}, "search.budget", "[1, 512]"),
        ({"extra_body": {"search": {"scorer": "py:os:system"}}}, "search.scorer", "HTTP"),
        ({"extra_body": {"search": {"strategy": "magic"}}}, "strategy", "magic"),
        ({"extra_body": {"regex": "(", "max_tokens": 4}}, "regex", "regex"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "[-100, 100]"),
        ({"extra_body": {"xtc_probability": 1.5}}, "xtc_probability", "[0, 1]"),
    ],
)
def test_bad_fields_are_400_with_param(client, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-random", messages=MSG, **kwargs)
    err = e.value.body
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert err["param"] == param and words in err["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=MSG)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_too_large_is_413(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "x" * 5000}])
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"


def test_error_format_for_bad_json_and_routes(url):
    req = urllib.request.Request(f"{url}/v1/chat/completions", b"{nope", {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and set(json.loads(e.value.read())["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{url}/v1/nothing", timeout=10)
    assert e.value.code == 404 and "error" in json.loads(e.value.read())


# -- load shedding and cancellation ----------------------------------------------------------------
@pytest.fixture
def small(tiny_engine):
    """One request at a time, no queue: the second concurrent request is refused."""
    with serving(
        create_app("tiny-random", Limits(max_tokens=1500, max_concurrent=1, max_queue=0), engine=tiny_engine)
    ) as base:
        yield base, openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)


def test_overload_is_503_and_disconnect_cancels(small):
    base, client = small
    long = {"max_tokens": 1500, "extra_body": {"ignore_eos": True}}
    stream = client.chat.completions.create(model="tiny-random", messages=MSG, stream=True, seed=1, **long)
    next(iter(stream))  # it runs
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=4)
    assert e.value.status_code == 503 and e.value.body["code"] == "server_overloaded"
    stream.close()  # the client goes away mid-generation
    deadline = time.monotonic() + 10
    while True:
        health = _get(f"{base}/health")
        if health["admitted"] == 0 and health["running_rows"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    assert health["stats"]["steps"] < 1500  # the row was dropped, not run to its end
    r = client.chat.completions.create(model="tiny-random", messages=MSG, max_tokens=4)  # served again
    assert r.choices[0].finish_reason in ("stop", "length")


def test_info_and_playground_page(url):
    info = _get(f"{url}/v1/sazanami")
    assert "pink-temperature" in info["presets"] and "best_of_n" in info["strategies"]
    assert info["tools"] == ["CALC"] and info["limits"]["max_n"] == 8
    assert not any(s.startswith("py:") for s in info["scorers"])
    assert "prompt" in info["speculative"]["sources"]  # the playground's speculative field offers them
    with urllib.request.urlopen(f"{url}/", timeout=10) as r:
        assert b"sazanami playground" in r.read()
    with urllib.request.urlopen(f"{url}/static/app.js", timeout=10) as r:
        assert b"drawTree" in r.read()


def test_disconnect_cancels_a_whole_response_request(small):
    base, _ = small
    impatient = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):  # the client gives up and closes its connection
        impatient.chat.completions.create(
            model="tiny-random", messages=MSG, max_tokens=1500, seed=1, extra_body={"ignore_eos": True}
        )
    deadline = time.monotonic() + 10
    while (health := _get(f"{base}/health"))["admitted"] or health["running_rows"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    assert health["stats"]["steps"] < 1500


def test_server_runs_search_and_load_over_its_corpus(tiny_engine, tmp_path):
    """`sazanami serve --tools calc,search,load --corpus DIR`: requests may use the corpus tools."""
    from sazanami.cli.serve import tool_registry
    from sazanami.errors import ParameterError

    (tmp_path / "pink.txt").write_text("Pink noise has a power spectrum that falls as one over f.")
    (tmp_path / "brown.txt").write_text("Brown noise is integrated white noise, a random walk.")
    tools = tool_registry("calc, search,load", str(tmp_path))
    assert tools.names == ["CALC", "SEARCH", "LOAD"]
    with serving(create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine, tools=tools)) as base:
        c = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        body = {"tools": ["search", "load"], "regex": r"SEARCH\(spectrum\) LOAD\(pink\) [a-z]{2}"}
        r = c.completions.create(model="tiny-random", prompt="q", max_tokens=40, seed=1, extra_body=body)
        (choice,) = r.choices
        assert [(s["name"], s["result"]) for s in choice.spans] == [
            ("SEARCH", "[pink]"),
            ("LOAD", "Pink noise has a power spectrum that falls as one over f."),
        ], choice.text
        info = _get(f"{base}/v1/sazanami")
        assert info["tools"] == ["CALC", "SEARCH", "LOAD"]
    assert tool_registry("", None) is None
    with pytest.raises(ParameterError, match="corpus"):
        tool_registry("search", None)
    with pytest.raises(ParameterError, match="corpus"):
        tool_registry("", str(tmp_path))
