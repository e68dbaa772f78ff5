"""A bounded schemathesis run against the live app (tiny model): requests generated from the
OpenAPI document's request bodies; no 5xx, and every 4xx names its ``param``.

Deterministic (hypothesis ``derandomize=True``) and small (a few hundred requests, seconds);
the server's limits keep each generation tiny.
"""

from __future__ import annotations

import json

import pytest
import schemathesis  # the dev extra pins it
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

EXAMPLES = 200


@pytest.fixture(scope="module")
def live(tiny_engine):
    limits = Limits(
        max_tokens=4,
        max_n=2,
        max_prompts=2,
        max_search_budget=32,
        max_concurrent=4,
        max_queue=64,
        max_search_seconds=10,
    )
    app = create_app("tiny-random", limits, engine=tiny_engine)
    with serving(app) as base:
        yield app, base


def test_generated_requests_get_no_5xx_and_4xx_name_their_param(live):
    app, base = live
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    posts = [op for op in operations if op.method.upper() == "POST"]
    assert {op.path for op in posts} == {
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/flows/run",
        "/v1/flows/validate",
    }
    for op in posts:  # the request bodies are published (else schemathesis sends none)
        assert op.body, op.path
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of([op.as_strategy() for op in operations]))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=30)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        where = f"{case.method} {case.path} {case.body!r:.300}"
        assert status < 500, f"{status} for {where}: {response.text[:500]}"
        if 400 <= status < 500 and status != 404:
            err = response.json()["error"]
            assert err.get("param"), f"{status} without param for {where}: {err}"
        if status == 200 and response.text.startswith("data: "):  # a stream: errors come as events
            for line in response.text.splitlines():
                if line.startswith("data: {"):
                    assert "server_error" not in json.loads(line[6:]).get("error", {}).get("type", ""), line

    check()
    assert sum(seen.values()) >= EXAMPLES // 2 and 200 in seen and 400 in seen, seen
