"""A search's tree as it grows (issue 30): the ``on_node`` hook of ``search()`` and the
``search_node`` chunks of a streamed search request (tiny random model)."""

from __future__ import annotations

import json
import logging
import urllib.request

import openai
import pytest

from sazanami.sampling.params import SamplingParams
from sazanami.search import search
from sazanami.search.context import NodeEvent
from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

PARAMS = SamplingParams(max_tokens=4, temperature=0.8)


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("best_of_n", {"n": 3}),
        ("anneal", {"rounds": 2, "n": 2}),
        ("tree", {"chunk": 2, "width": 2}),
        ("beam", {"rounds": 1}),
    ],
)
def test_on_node_sees_every_node_of_the_tree_in_order(tiny_engine, strategy, options):
    events: list[NodeEvent] = []
    tree = search(
        tiny_engine,
        "hi",
        strategy,
        scorer="logprob",
        budget=48,
        params=PARAMS,
        seed=3,
        on_node=events.append,
        **options,
    )
    added = [e for e in events if e.stage == "added"]
    assert [e.node.id for e in added] == [n.id for n in tree.nodes]
    assert all(e.node is n for e, n in zip(added, tree.nodes, strict=True))
    scored = [e.node.id for e in events if e.stage == "scored"]
    assert scored and set(scored) == {n.id for n in tree.nodes if n.score is not None or n.scores}
    for e in events:  # each node is scored after it is added; spend only grows
        assert e.budget_tokens == 48
    assert [e.generated_tokens for e in events] == sorted(e.generated_tokens for e in events)
    assert all(
        events.index(e) > next(i for i, a in enumerate(events) if a.node is e.node)
        for e in events
        if e.stage == "scored"
    )
    # the hook changes nothing: the same seed without it gives the same tree
    again = search(tiny_engine, "hi", strategy, scorer="logprob", budget=48, params=PARAMS, seed=3, **options)
    assert [n.text for n in again.nodes] == [n.text for n in tree.nodes]


def test_a_failing_hook_does_not_stop_the_search(tiny_engine, caplog):
    calls = []

    def broken(event: NodeEvent) -> None:
        calls.append(event)
        raise RuntimeError("watcher broke")

    with caplog.at_level(logging.WARNING, logger="sazanami.search.context"):
        tree = search(
            tiny_engine, "hi", "best_of_n", scorer="logprob", budget=24, params=PARAMS, seed=1, on_node=broken, n=2
        )
    plain = search(tiny_engine, "hi", "best_of_n", scorer="logprob", budget=24, params=PARAMS, seed=1, n=2)
    assert tree.text == plain.text and len(tree) == len(plain)
    assert len(calls) > len(tree)  # called for every node (added and scored), not only until it failed
    assert sum("on_node hook raised" in r.message for r in caplog.records) == 1  # logged once


def test_on_node_must_be_callable(tiny_engine):
    with pytest.raises(Exception, match="on_node must be callable"):
        search(tiny_engine, "hi", "best_of_n", scorer="logprob", budget=24, params=PARAMS, seed=1, on_node=3)


# -- over HTTP ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def url(tiny_engine):
    with serving(create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine)) as base:
        yield base


def _stream(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read().decode()
    return [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: ") and e != "data: [DONE]"]


SEARCH = {
    "model": "tiny-random",
    "messages": [{"role": "user", "content": "Say something."}],
    "max_tokens": 5,
    "seed": 7,
    "search": {"strategy": "anneal", "budget": 80, "scorer": "logprob", "return_tree": True},
}


def test_a_streamed_search_sends_its_nodes_before_its_result(url):
    chunks = _stream(url, SEARCH | {"stream": True})
    node_at = [i for i, c in enumerate(chunks) if "search_node" in c]
    end_at = next(i for i, c in enumerate(chunks) if "search" in c)
    assert node_at and max(node_at) < end_at
    tree = chunks[end_at]["search"]["tree"]
    added = [chunks[i]["search_node"] for i in node_at if chunks[i]["search_node"]["event"] == "added"]
    assert [e["node"]["id"] for e in added] == [n["id"] for n in tree["nodes"]]
    for e in added:  # each node as it was added: its place in the tree, seed and text
        n = tree["nodes"][e["node"]["id"]]
        assert {k: n[k] for k in ("parent", "kind", "round", "seed", "text")} == {
            k: e["node"][k] for k in ("parent", "kind", "round", "seed", "text")
        }
    scored = {c["search_node"]["node"]["id"]: c["search_node"]["node"] for c in chunks if "search_node" in c}
    for i, n in scored.items():
        if "score" in n and not n["pruned"] and tree["nodes"][i]["score"] is not None:
            assert n["score"] == pytest.approx(tree["nodes"][i]["score"])
    progress = [chunks[i]["search_node"]["generated_tokens"] for i in node_at]
    assert progress == sorted(progress) and all(chunks[i]["search_node"]["budget_tokens"] == 80 for i in node_at)
    for i in node_at:  # an ordinary chunk to an OpenAI client: choice 0 with empty content
        assert chunks[i]["choices"] == [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}]
    # the same search, not streamed, answers the same tree
    whole = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/v1/chat/completions", json.dumps(SEARCH).encode(), {"Content-Type": "application/json"}
            ),
            timeout=60,
        ).read()
    )
    assert [n["text"] for n in whole["search"]["tree"]["nodes"]] == [n["text"] for n in tree["nodes"]]
    assert "search_node" not in whole


def test_openai_clients_read_a_streamed_search_as_usual(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    body = {k: v for k, v in SEARCH.items() if k not in ("model", "messages", "max_tokens", "seed")}
    chunks = list(
        client.chat.completions.create(
            model="tiny-random", messages=SEARCH["messages"], max_tokens=5, seed=7, stream=True, extra_body=body
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = next(c for c in chunks if c.choices[0].finish_reason)
    tree = last.search["tree"]
    assert text == tree["nodes"][tree["best"]]["text"]
    assert sum(1 for c in chunks if getattr(c, "search_node", None)) >= len(tree["nodes"])
