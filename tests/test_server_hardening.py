"""Regression tests for the defects a hostile client found (issue 14): bounds before work,
cancelled and time-bounded searches, integer ranges, schema depth, no file paths over HTTP,
batch-invariant requests, the OpenAPI request bodies and the invalid-JSON answers."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import typing
import urllib.error
import urllib.request
from typing import Any

import pytest

from sazanami.errors import ParameterError
from sazanami.sampling.params import INT_RANGES, SamplingParams
from sazanami.server import Limits, create_app
from sazanami.server.batcher import Batcher
from sazanami.server.testing import serving

MSG = [{"role": "user", "content": "Say something."}]


def _post(url: str, body: Any, timeout: float = 30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def app(tiny_engine):
    limits = Limits(max_tokens=64, max_n=8, max_search_budget=512, max_batch_rows=16, max_body_bytes=1 << 20)
    return create_app("tiny-random", limits, engine=tiny_engine)


@pytest.fixture(scope="module")
def url(app):
    with serving(app) as base:
        yield base


def _error(url: str, path: str, body: Any) -> tuple[int, dict]:
    status, out = _post(url + path, body)
    assert "error" in out, out
    return status, out["error"]


# -- 1. every strategy option is bounded before any work -------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "options", "param", "words"),
    [
        ("anneal", {"rounds": 10**9}, "search.options.rounds", "[1, 64]"),
        ("noise_search", {"rounds": 10**9}, "search.options.rounds", "[1, 64]"),
        ("anneal", {"schedule": [1.0] * 100}, "search.options.schedule", "1 to 64"),
        ("best_of_n", {"n": 17}, "search.options.n", "[1, 16]"),
        ("beam", {"width": 10**6}, "search.options.width", "[1, 16]"),
        ("tree", {"branch": 5, "expand": 4}, "search.options.branch", "branch × expand"),
        ("tree", {"chunk": 2**40}, "search.options.chunk", "chunk"),
        ("noise_search", {"similarity": 1.0}, "search.options.similarity", "(0, 1)"),
        ("synthesize", {"rounds": 10**9, "base": "anneal"}, "search.options.base_options.rounds", "[1, 64]"),
    ],
)
def test_search_options_out_of_range_are_400_before_work(app, url, strategy, options, param, words):
    steps = app.state.server.batcher.stats["steps"]
    search = {"strategy": strategy, "budget": 64, "scorer": "logprob", "options": options}
    status, err = _error(
        url, "/v1/completions", {"prompt": "Name a fruit.", "max_tokens": 8, "seed": 1, "search": search}
    )
    assert status == 400 and err["param"] == param and words in err["message"], err
    assert app.state.server.batcher.stats["steps"] == steps  # nothing ran


@pytest.mark.parametrize(
    ("scorer", "ok"),
    [
        ("regex:(a+)+$", False),
        ("regex:(\\w|\\w)*!", False),
        ("regex:(x)\\1", False),
        ({"type": "regex", "patterns": ["ok", "(.*)*z"]}, False),
        ({"type": "combine", "parts": [{"scorer": "regex:(a*)*b"}]}, False),
        ("regex:\\bfruit\\w*", True),
        ({"type": "regex", "patterns": ["apple", "pear|plum"]}, True),
    ],
)
def test_backtracking_regex_scorers_are_refused_over_http(url, scorer, ok):
    body = {"prompt": "x", "max_tokens": 2, "seed": 1, "search": {"budget": 8, "scorer": scorer}}
    status, out = _post(f"{url}/v1/completions", body)
    if ok:
        assert status == 200, out
    else:
        assert status == 400 and out["error"]["param"].startswith("search.scorer"), out
        assert "exponential" in out["error"]["message"]


def test_bad_nested_option_objects_are_400(url):
    for options, param in (
        ({"synthesizer": {"nope": 1}}, "search.options.synthesizer"),
        ({"selector": {"method": "mmr", "diversity": "x"}}, "search.options.diversity"),
    ):
        search = {"strategy": "synthesize", "budget": 64, "scorer": "logprob", "options": options}
        status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "search": search})
        assert status == 400 and err["param"] == param, err
    parts = [{"scorer": "logprob", "weight": "heavy"}]
    search = {"budget": 64, "scorer": {"type": "combine", "parts": parts}}
    status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "search": search})
    assert status == 400 and err["param"] == "search.scorer", err


def test_library_search_bounds_options_by_budget(tiny_engine):
    from sazanami.search import check_strategy_options, search
    from sazanami.search.strategies import MAX_ROUNDS

    params = SamplingParams(max_tokens=4, seed=1)
    t = time.monotonic()
    with pytest.raises(ParameterError) as e:
        search(tiny_engine, "x", "anneal", scorer="logprob", budget=64, params=params, rounds=10**9)
    assert e.value.param == "rounds" and "[1, 1024]" in str(e.value)
    with pytest.raises(ParameterError) as e:  # more rounds than the budget has tokens
        search(tiny_engine, "x", "noise_search", scorer="logprob", budget=64, params=params, rounds=100)
    assert e.value.param == "rounds" and "[1, 64]" in str(e.value)
    assert time.monotonic() - t < 5  # refused, not run
    with pytest.raises(ParameterError) as e:
        check_strategy_options("anneal", {"rounds": MAX_ROUNDS + 1})  # no budget: the absolute cap
    assert e.value.param == "rounds"
    with pytest.raises(ParameterError) as e:
        check_strategy_options("best_of_n", {"n": 300})
    assert e.value.param == "n" and "256" in str(e.value)
    with pytest.raises(ParameterError) as e:
        check_strategy_options("anneal", {"schedule": "cubic"})
    assert e.value.param == "schedule"
    # within range: accepted, and synthesize gathers its base's options
    opts = check_strategy_options("synthesize", {"base": "anneal", "rounds": 2}, budget=64)
    assert opts == {"base": "anneal", "base_options": {"rounds": 2}}
    tree = search(tiny_engine, "x", "anneal", scorer="logprob", budget=64, params=params, rounds=64)
    assert tree.spend["generated_tokens"] <= 64


# -- 2. a search stops when its client goes away, and at the server's time limit ---------------------
def test_disconnect_cancels_a_search(tiny_engine):
    import openai

    app = create_app("tiny-random", Limits(max_tokens=64, max_search_budget=8192, max_searches=1), engine=tiny_engine)
    server = app.state.server
    with serving(app) as base:
        impatient = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=0.5)
        search = {"strategy": "noise_search", "budget": 8192, "scorer": "logprob", "options": {"rounds": 1000}}
        with pytest.raises(openai.APITimeoutError):
            impatient.completions.create(
                model="tiny-random",
                prompt="x",
                max_tokens=64,
                seed=1,
                extra_body={"ignore_eos": True, "search": search},
            )
        # The search thread stops at its next engine call; its queued rows are dropped.
        deadline = time.monotonic() + 10
        while server.admission.admitted or server.batcher.running_rows or server.batcher.waiting or server.searching:
            assert time.monotonic() < deadline, _get(f"{base}/health")
            time.sleep(0.05)
        rows = server.batcher.stats["rows"]
        time.sleep(0.3)
        assert server.batcher.stats["rows"] == rows  # nothing more is submitted
        assert server.batcher.stats["rows"] < 8192 // 64  # far from the whole budget
        # The single search slot is free: a small search is answered at once.
        status, out = _post(
            f"{base}/v1/completions",
            {"prompt": "x", "max_tokens": 4, "seed": 1, "search": {"budget": 16, "scorer": "logprob"}},
            timeout=10,
        )
        assert status == 200 and out["search"]["strategy"] == "best_of_n"


def test_search_wall_time_is_bounded_by_the_server(tiny_engine):
    app = create_app(
        "tiny-random", Limits(max_tokens=1500, max_search_budget=8192, max_search_seconds=0.2), engine=tiny_engine
    )
    with serving(app) as base:
        t = time.monotonic()
        body = {
            "prompt": "x",
            "max_tokens": 1500,
            "seed": 1,
            "ignore_eos": True,
            "search": {"strategy": "best_of_n", "budget": 8192, "scorer": "logprob", "options": {"n": 4}},
        }
        status, out = _post(f"{base}/v1/completions", body)
        assert time.monotonic() - t < 10
        assert status == 504 and out["error"]["code"] == "search_timeout", out
        assert "max_search_seconds" in out["error"]["message"] and out["error"]["param"] == "search"


def test_search_budget_wall_s_is_capped_by_the_server():
    from sazanami.server.schemas import CompletionRequest

    limits = Limits(max_search_seconds=5)
    for budget, wall_s in (({"tokens": 64, "wall_s": 100}, 5), ({"tokens": 64, "wall_s": 1}, 1), (64, 5)):
        req = CompletionRequest(prompt="x", search={"budget": budget})
        assert req.search_budget(req.sampling_params(limits), limits).wall_s == wall_s


def test_limits_validate_new_fields():
    with pytest.raises(ParameterError) as e:
        Limits(max_search_seconds=0)
    assert e.value.param == "max_search_seconds"
    with pytest.raises(ParameterError) as e:
        Limits(batch_invariant="yes")  # type: ignore[arg-type]
    assert e.value.param == "batch_invariant"


# -- 3. every integer field has a range ------------------------------------------------------------
def test_every_integer_sampling_field_has_a_range():
    hints = typing.get_type_hints(SamplingParams)
    ints = {
        f.name for f in dataclasses.fields(SamplingParams) if int in typing.get_args(hints[f.name]) + (hints[f.name],)
    }
    assert ints == set(INT_RANGES), "add the new integer field's range to params.INT_RANGES"
    for name, (low, high) in INT_RANGES.items():
        for bad in (low - 1, high + 1, 2**70):
            with pytest.raises(ParameterError) as e:
                SamplingParams(**{name: bad})
            assert e.value.param == name and f"[{low}, {high}]" in str(e.value)


def test_huge_top_k_is_400(url):
    status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "top_k": 2**70})
    assert status == 400 and err["param"] == "top_k" and "[0, 2147483647]" in err["message"], err


# -- 4. schema depth and size ----------------------------------------------------------------------
def test_deep_or_huge_json_schemas_are_refused(url):
    deep = '{"type": "object", "properties": {"a": ' * 3000 + "{}" + "}}" * 3000  # too deep for json.dumps
    body = '{"prompt": "x", "max_tokens": 2, "json_schema": ' + deep + "}"
    status, err = _error(url, "/v1/completions", body.encode())
    assert status == 400 and err["code"] == "invalid_json" and "deep" in err["message"], err
    medium = {"type": "string"}
    for _ in range(40):  # 80 levels: under the JSON parser's limit, over the schema's
        medium = {"type": "object", "properties": {"a": medium}}
    status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "json_schema": medium})
    assert status == 400 and err["param"] == "json_schema" and "deeper than 32" in err["message"], err
    as_text = json.dumps(json.dumps(medium))[1:-1]  # the schema as a JSON string field
    status, err = _error(url, "/v1/completions", ('{"prompt": "x", "json_schema": "' + as_text + '"}').encode())
    assert status == 400 and err["param"] == "json_schema" and "deeper than 32" in err["message"], err
    deep_text = '{"a": ' * 3000 + "1" + "}" * 3000
    status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "json_schema": deep_text})
    assert status == 400 and err["param"] == "json_schema", err
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": wide}}
    status, err = _error(url, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, "response_format": fmt})
    assert status == 413 and err["param"] == "response_format.json_schema.schema", err
    assert err["code"] == "schema_too_large"


# -- 5. no file is read over HTTP ------------------------------------------------------------------
def test_fluctuation_is_never_a_path_over_http(url, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"SECRET_KEY_XYZ": "hunter2"}))
    plain = tmp_path / "plain.json"
    plain.write_text("not json")
    for spec in (str(secret), str(plain), f"{tmp_path}/../{tmp_path.name}/secret.json", '{"draw": {"beta": 1}}'):
        status, err = _error(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "fluctuation": spec})
        assert status == 400 and err["param"] == "fluctuation", err
        assert "SECRET_KEY_XYZ" not in err["message"] and "preset" in err["message"]
    # presets and inline objects still work; the library and CLI still take a path
    for spec in ("pink-temperature", {"draw": {"beta": 1.0}}):
        status, out = _post(f"{url}/v1/completions", {"prompt": "x", "max_tokens": 2, "seed": 1, "fluctuation": spec})
        assert status == 200, out
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"draw": {"beta": 1.0}}))
    assert SamplingParams(fluctuation=str(good)).fluctuation.draw is not None


# -- 6. batch-invariant requests --------------------------------------------------------------------
def test_batch_invariant_job_runs_in_a_cohort_of_its_own(tiny_engine):
    batcher = Batcher(tiny_engine, max_batch_rows=64, cohorts=4)
    params = SamplingParams(max_tokens=3, seed=1, temperature=0.8)
    jobs = []
    done = threading.Semaphore(0)

    def sink(event: Any) -> None:
        if event[0] != "deltas":
            done.release()

    for alone in (False, True, False, False):
        jobs.append(batcher.submit(tiny_engine.rows_for(["x"], params.replace(n=2), True), sink, alone=alone))
    batcher.start()
    try:
        for _ in jobs:
            assert done.acquire(timeout=30)
    finally:
        batcher.stop()
    # [job0] | [job1 alone] | [job2, job3]: three cohorts, not one
    assert batcher.stats["batches"] == 3 and batcher.stats["rows"] == 8


def test_batch_invariant_tokens_do_not_depend_on_other_requests(tiny_engine):
    app = create_app("tiny-random", Limits(max_tokens=32, max_concurrent=16, cohorts=1), engine=tiny_engine)
    body = {"messages": MSG, "n": 2, "seed": 5, "temperature": 0.8, "max_tokens": 24, "batch_invariant": True}
    with serving(app) as base:
        path = f"{base}/v1/chat/completions"

        def tokens() -> list[str]:
            status, out = _post(path, body)
            assert status == 200, out
            return [c["message"]["content"] for c in out["choices"]]

        alone = tokens()
        results: list[Any] = []
        others = [
            threading.Thread(
                target=lambda i=i: results.append(
                    _post(path, {"messages": MSG, "n": 3, "seed": 100 + i, "max_tokens": 24, "ignore_eos": True})
                )
            )
            for i in range(4)
        ]
        for t in others:
            t.start()
        busy = [tokens() for _ in range(2)]
        for t in others:
            t.join(60)
        assert all(status == 200 for status, _ in results)
        assert busy == [alone, alone]
        # the server-wide switch does the same for requests that do not say
        assert app.state.server.limits.batch_invariant is False


# -- 7. OpenAPI request bodies, invalid JSON -------------------------------------------------------
def test_openapi_publishes_the_request_bodies(url):
    doc = _get(f"{url}/openapi.json")
    schemas = doc["components"]["schemas"]
    for path, name in (("/v1/completions", "CompletionRequest"), ("/v1/chat/completions", "ChatCompletionRequest")):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        props = schemas[name]["properties"]
        assert {"top_k", "fluctuation", "search", "batch_invariant"} <= set(props)
        assert set(SamplingParams.field_names()) <= set(props)
    assert "SearchSpec" in schemas and "Message" in schemas
    refs = {m for m in json.dumps(doc).split('"') if m.startswith("#/components/schemas/")}
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(schemas)  # every $ref resolves


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"prompt": "\\ud800"}', "surrogate"),
        (b'{"prompt": ', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_invalid_json_is_named(url, body, words):
    status, err = _error(url, "/v1/completions", body)
    assert status == 400 and err["param"] == "body" and words in err["message"], err
    assert err["code"] in ("invalid_json", "invalid_type") and "None" not in err["message"]
    if body.strip() != b"[1, 2]":
        assert err["code"] == "invalid_json"
