"""``GET /metrics``: the server's counters in Prometheus' text format (``prometheus_client``).

Each app has its own :class:`~prometheus_client.CollectorRegistry` (not the process-wide one),
so several apps in one process (tests, notebooks) keep apart. Exported:

- ``sazanami_requests_total{route, method, status}`` — HTTP requests answered (a stream counts
  when it ends), ``route`` being the route's path template (``unmatched``: no route took it —
  static files, unknown paths, the API key gate's 401s, CORS preflights);
- ``sazanami_prompt_tokens_total``, ``sazanami_generation_tokens_total`` — of the completions
  answered (each distinct prompt once, as ``usage`` counts them; a search's generated tokens
  are its spend);
- ``sazanami_drafted_tokens_total``, ``sazanami_accepted_tokens_total`` — speculative decoding's
  draft tokens over the completions answered, and those of them the sampler drew (as ``usage``
  reports them: accepted and rejected prediction tokens; :mod:`sazanami.speculative`);
- ``sazanami_time_to_first_token_seconds`` — from the request's arrival to its first step's
  output (sampling) or its samples (beams); searches are not timed;
- ``sazanami_inter_token_latency_seconds`` — between a sampling request's successive steps
  (each gives every live row one token);
- gauges read at scrape time: ``sazanami_requests_admitted``, ``sazanami_requests_waiting``
  (for a request slot), ``sazanami_engine_jobs_waiting`` (for an engine batch: the queue
  depth), ``sazanami_running_rows``, ``sazanami_searches_running``,
  ``sazanami_memory_bytes`` (the running batches' footprint) and ``sazanami_memory_budget_bytes``;
- the prefix cache's ``sazanami_prefix_cache_bytes`` and ``…_max_bytes``, and counters
  ``sazanami_prefix_cache_lookups_total``, ``…_hits_total``, ``…_reused_tokens_total``
  (prompt tokens served from it) and ``…_computed_tokens_total``;
- ``sazanami_engine_steps_total`` — steps of the engine's worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds; CPU decode steps run from milliseconds (tiny models) to seconds (large batches)."""

UNMATCHED = "unmatched"
"""The route label of requests no route took: static files, unknown paths, the API key gate's
401s (it answers before routing), CORS preflights."""


class Monitor:
    """The app's registry and the metrics the routes update (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sazanami_requests",
            "HTTP requests answered, by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter("sazanami_prompt_tokens", "Prompt tokens of the completions answered", registry=r)
        self.generation_tokens = Counter(
            "sazanami_generation_tokens", "Generated tokens of the completions answered", registry=r
        )
        self.drafted_tokens = Counter(
            "sazanami_drafted_tokens", "Draft tokens of speculative decoding in the completions answered", registry=r
        )
        self.accepted_tokens = Counter(
            "sazanami_accepted_tokens", "Draft tokens the sampler drew (accepted), of those drafted", registry=r
        )
        self.ttft = Histogram(
            "sazanami_time_to_first_token_seconds",
            "From a request's arrival to its first output",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "sazanami_inter_token_latency_seconds",
            "Between a sampling request's successive steps (one token per live row)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(server))

    def exposition(self) -> tuple[bytes, str]:
        """The text to serve, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def output(self, clock: Clock) -> None:
        """A request produced output now: its first (time to first token) or its next step."""
        now = time.perf_counter()
        if clock.last is None:
            self.ttft.observe(now - clock.start)
        else:
            self.itl.observe(now - clock.last)
        clock.last = now

    def tokens(self, prompt: int, generated: int, predictions: tuple[int, int] | None = None) -> None:
        """A completion answered: its prompt and generated tokens, and ``predictions`` — the
        (drafted, accepted) tokens of speculative decoding, None without it."""
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)
        if predictions is not None:
            drafted, accepted = predictions
            self.drafted_tokens.inc(drafted)
            self.accepted_tokens.inc(accepted)


class Clock:
    """When a request arrived and when it last produced output."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: float | None = None


class _StateCollector(Collector):
    """Gauges and counters read from the server's state at scrape time."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s, b = self.server, self.server.batcher

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("sazanami_requests_admitted", "Requests admitted (running or waiting)", s.admission.admitted)
        yield gauge("sazanami_requests_waiting", "Admitted requests waiting for a request slot", s.admission.waiting)
        yield gauge("sazanami_engine_jobs_waiting", "Engine jobs waiting for a batch (queue depth)", b.waiting)
        yield gauge("sazanami_running_rows", "Rows generating now", b.running_rows)
        yield gauge("sazanami_searches_running", "Searches and flows running now", s.searching)
        yield gauge("sazanami_memory_bytes", "Memory footprint of the running engine batches", b.memory_bytes)
        yield gauge("sazanami_memory_budget_bytes", "Memory the running batches may hold", s.memory_budget)
        yield CounterMetricFamily("sazanami_engine_steps", "Engine worker steps", value=b.stats["steps"])
        pc = getattr(s.engine, "prefix_cache", None)
        if pc is None:
            return
        yield gauge("sazanami_prefix_cache_bytes", "Bytes the prefix cache holds", pc.nbytes)
        yield gauge("sazanami_prefix_cache_max_bytes", "The prefix cache's limit", pc.max_bytes)
        st = pc.stats
        for name, doc, value in (
            ("lookups", "Prefix-cache lookups", st.lookups),
            ("hits", "Prefix-cache lookups that reused a block", st.hits),
            ("reused_tokens", "Prompt tokens served from the prefix cache", st.reused_tokens),
            ("computed_tokens", "Prompt tokens computed (not in the prefix cache)", st.computed_tokens),
        ):
            yield CounterMetricFamily(f"sazanami_prefix_cache_{name}", doc, value=value)


class RequestMetrics:
    """ASGI middleware counting each HTTP response by route template, method and status."""

    def __init__(self, app: Any, monitor: Monitor) -> None:
        self.app, self.monitor = app, monitor

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception escaping the app is answered with 500 outside this middleware

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # the router leaves the route it chose in the scope; its path template is the label
            # (raw paths would make a label per URL a client invents)
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.monitor.requests.labels(route, scope["method"], str(status)).inc()
