"""The flow endpoints against a live server (tiny model): examples, validate, run by SSE, limits."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sazanami.search import Flow
from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
FLOW = {
    "name": "two-branches",
    "prompt": "hello",
    "seed": 3,
    "budget": 120,
    "params": {"max_tokens": 6},
    "scorer": "contains:a,e",
    "steps": [
        {"generate": {"id": "hot", "out": "hot", "n": 2, "temperature": 1.2}},
        {"generate": {"id": "cold", "out": "cold", "n": 2, "temperature": 0.5}},
        {"merge": {"id": "both", "in": ["hot", "cold"]}},
        {"score": {"id": "rate"}},
        {"select": {"id": "top", "k": 2}},
        {"synthesize": {"id": "mix", "n": 1}},
        {"score": {"id": "final"}},
    ],
}


@pytest.fixture(scope="module")
def url(tiny_engine):
    limits = Limits(max_tokens=64, max_search_budget=512, max_concurrent=4, max_queue=4)
    with serving(create_app("tiny-random", limits, engine=tiny_engine)) as base:
        yield base


def _call(url: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _events(text: str) -> list[dict]:
    datas = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


def test_examples_and_kinds(url):
    status, text = _call(f"{url}/v1/flows/examples")
    data = json.loads(text)["data"]
    assert status == 200 and {d["file"] for d in data} == {p.name for p in EXAMPLES.iterdir()}
    concepts = next(d for d in data if d["file"] == "concepts.yaml")
    assert concepts["flow"] == Flow.load(EXAMPLES / "concepts.yaml").to_dict() and concepts["text"].startswith("#")
    kinds = json.loads(_call(f"{url}/v1/flows/kinds")[1])
    assert "merge" in kinds["kinds"] and kinds["kinds"]["select"] == ["diversity", "k", "method"]
    assert "temperature" in kinds["sampling_fields"] and kinds["sampling"]["generate"]
    status, page = _call(f"{url}/flows")
    assert status == 200 and "flows.js" in page


def test_validate_gives_graph_plan_or_the_node(url):
    status, text = _call(f"{url}/v1/flows/validate", {"flow": FLOW})
    doc = json.loads(text)
    assert status == 200 and doc["valid"] and doc["graph"]["nodes"][2]["sources"] == ["hot", "cold"]
    assert [p["id"] for p in doc["plan"]][:2] == ["hot", "cold"] and "hot" in doc["yaml"]
    yaml_text = (EXAMPLES / "grounded_arithmetic.yaml").read_text()
    doc = json.loads(_call(f"{url}/v1/flows/validate", {"text": yaml_text, "format": "yaml"})[1])
    assert doc["valid"] and doc["flow"]["name"] == "grounded-arithmetic"
    doc = json.loads(_call(f"{url}/v1/flows/validate", {"text": (EXAMPLES / "hot_and_cold.yaml").read_text()})[1])
    assert not doc["valid"] and doc["error"]["param"] == "budget"  # 900 tokens; this server allows 512
    bad = dict(FLOW, steps=[*FLOW["steps"], {"select": {"id": "loop", "in": "nowhere", "k": 1}}])
    doc = json.loads(_call(f"{url}/v1/flows/validate", {"flow": bad})[1])
    assert not doc["valid"] and doc["error"]["node"] == "loop" and doc["error"]["param"] == "steps[7].select.in"
    doc = json.loads(_call(f"{url}/v1/flows/validate", {"flow": dict(FLOW, budget=5000)})[1])
    assert not doc["valid"] and doc["error"]["param"] == "budget" and "512" in doc["error"]["message"]
    doc = json.loads(_call(f"{url}/v1/flows/validate", {"flow": dict(FLOW, scorer="py:os:getcwd")})[1])
    assert not doc["valid"] and doc["error"]["param"] == "scorer"


def test_run_streams_node_events_then_the_same_tree_as_python(url, tiny_engine):
    status, text = _call(f"{url}/v1/flows/run", {"flow": FLOW, "batch_invariant": True})
    assert status == 200
    events = _events(text)
    steps = [e for e in events if e["object"] == "flow.event"]
    assert [(e["node"], e["event"]) for e in steps[:4]] == [
        ("hot", "started"), ("hot", "finished"), ("cold", "started"), ("cold", "finished"),
    ]  # fmt: skip
    assert steps[1]["candidates"] == 2 and steps[1]["tokens"] > 0 and steps[1]["pool"][0]["text"] is not None
    result = events[-1]
    assert result["object"] == "flow.result" and result["spend"]["generated_tokens"] <= 120
    local = Flow.from_dict(FLOW).run(tiny_engine)
    assert result["best"] == local.best and result["text"] == local.text
    assert [n["text"] for n in result["tree"]["nodes"]] == [n.text for n in local.nodes]
    # overrides
    other = _events(_call(f"{url}/v1/flows/run", {"flow": FLOW, "seed": 9, "prompt": "hey"})[1])[-1]
    assert other["seed"] == 9 and other["tree"]["prompt"] == "hey"


def test_run_errors_are_openai_errors_with_the_node(url):
    bad = dict(FLOW, steps=[{"generate": {"id": "g", "n": 2}}, {"select": {"id": "s", "k": 0}}])
    status, text = _call(f"{url}/v1/flows/run", {"flow": bad})
    err = json.loads(text)["error"]
    assert status == 400 and err["param"] == "steps[1].select.k" and err["node"] == "s"
    assert err["type"] == "invalid_request_error"
    status, text = _call(f"{url}/v1/flows/run", {"flow": FLOW, "text": "x"})
    assert status == 400 and json.loads(text)["error"]["param"] == "flow"
    status, text = _call(f"{url}/v1/flows/run", {"flow": dict(FLOW, params={"max_tokens": 100})})
    assert status == 400 and json.loads(text)["error"]["param"] == "params.max_tokens"
    status, text = _call(f"{url}/v1/flows/run", {"flow": FLOW, "colour": 1})
    assert status == 400 and json.loads(text)["error"]["code"] == "unknown_field"


@pytest.mark.parametrize(
    "patch, param",
    [
        ({"params": {"fluctuation": "/etc/passwd.json"}}, "params.fluctuation"),
        ({"steps": [{"generate": {"n": 1, "fluctuation": "x.json"}}]}, "steps[0].generate.fluctuation"),
        ({"islands": {"tools": ["search"], "corpus": "/etc"}}, "islands.corpus"),
        ({"params": {"speculative": "prompt,corpus=/etc"}}, "params.speculative.corpus"),
        (
            {"steps": [{"generate": {"n": 1, "speculative": {"sources": ["corpus"], "corpus": "/x"}}}]},
            "steps[0].generate.speculative.corpus",
        ),
        ({"scorers": {"mine": "py:os:getcwd"}}, "scorers.mine"),
        (
            {
                "steps": [
                    {"generate": {"n": 1}},
                    {"repeat": {"times": 1, "steps": [{"score": {"scorer": "py:os:getcwd"}}]}},
                ]
            },
            "steps[1].repeat.steps[0].score.scorer",
        ),
    ],
)
def test_a_flow_over_http_opens_no_file_and_imports_no_code(url, patch, param):
    status, text = _call(f"{url}/v1/flows/run", {"flow": FLOW | patch})
    assert status == 400 and json.loads(text)["error"]["param"] == param
    assert json.loads(_call(f"{url}/v1/flows/validate", {"flow": FLOW | patch})[1])["error"]["param"] == param


def test_a_client_that_leaves_releases_its_slot(url):
    import http.client
    import time

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    loop = {"repeat": {"times": 30, "steps": [{"improve": {"n": 1, "keep": False}}]}}
    long = dict(FLOW, budget=512, steps=[{"generate": {"n": 8}}, loop])
    conn.request("POST", "/v1/flows/run", json.dumps({"flow": long}), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.readline().startswith(b"data: ")  # the first event
    conn.close()
    deadline = time.monotonic() + 20
    while json.loads(_call(f"{url}/health")[1])["admitted"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(_call(f"{url}/health")[1])["admitted"] == 0
