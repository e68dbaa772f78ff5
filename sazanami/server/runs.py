"""Running a plan: :func:`start` hands its rows to the batcher (sampling, beams) or its search
to the server's search pool, and returns a :class:`Run` on which its events arrive — one
step's deltas, a search's nodes (streamed searches), then ``done`` or ``error``. A client that
goes away cancels the run: its queued rows are dropped, a search stops at its next engine call.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import Request

from sazanami.server.batcher import BatchedEngine, Cancelled, Event
from sazanami.server.planning import Plan
from sazanami.server.state import Server

__all__ = ["Run", "start"]


class Run:
    """The events of one running request, delivered on the event loop; ``cancel`` drops it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.ended = False
        self.cancel: Callable[[], None] = lambda: None

    def sink(self, event: Event) -> None:
        """Called from any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def events(self, request: Request) -> AsyncIterator[Event]:
        """Events until done/error (deltas and a search's nodes come before); a client
        disconnect cancels the run and ends them."""
        watcher = asyncio.create_task(_disconnected(request))
        try:
            while True:
                getter = asyncio.create_task(self.queue.get())
                await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    raise Cancelled("the client went away")
                event = getter.result()
                if event[0] not in ("deltas", "node"):
                    self.ended = True
                yield event
                if self.ended:
                    return
        finally:
            watcher.cancel()
            if not self.ended:
                self.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def start(server: Server, plan: Plan) -> Run:
    """Start the plan's generation; its events arrive on the returned run."""
    run = Run()
    if plan.kind != "search":  # sampling and beams: the batcher runs their rows
        job = server.batcher.submit(plan.rows, run.sink, plan.alone)
        run.cancel = job.cancel
        return run
    cancelled = threading.Event()
    run.cancel = cancelled.set
    deadline = time.monotonic() + server.limits.max_search_seconds
    engine = BatchedEngine(server.engine, server.batcher, cancelled, plan.alone, deadline)
    fn = partial(_search, server, plan, engine, run.sink if plan.req.stream else None)

    def work() -> None:
        with server._lock:
            server.searching += 1
        try:
            run.sink(("done", fn()))
        except BaseException as exc:  # noqa: BLE001 - reported to the client
            run.sink(("error", exc))
        finally:
            with server._lock:
                server.searching -= 1

    server.pool.submit(work)
    return run


def _search(server: Server, plan: Plan, engine: BatchedEngine, sink: Callable[[Event], None] | None = None) -> Any:
    """Run the plan's search; with ``sink`` (a streamed request), each node as it is added
    or scored goes to it as a ``("node", payload)`` event (:func:`_search_node`)."""
    from sazanami.search import search

    spec = plan.req.search
    assert spec is not None
    kw: dict[str, Any] = {"scorer": spec.scorer} if spec.scorer is not None else {}
    if sink is not None:
        kw["on_node"] = lambda event: sink(("node", _search_node(event)))
    return search(
        engine,
        plan.prompts[0],
        spec.strategy,
        budget=plan.req.search_budget(plan.params, server.limits),
        params=plan.params,
        seed=plan.params.seed,
        raw=plan.raw,
        islands=plan.islands,
        **kw,
        **spec.options,
    )


_NODE_ADDED = ("id", "parent", "kind", "round", "seed", "temperature", "tokens", "text", "finish_reason")


def _search_node(event: Any) -> dict[str, Any]:
    """A streamed search's ``search_node`` object (docs/guide/server.md): a node just added
    (its place in the tree, seed and text) or just scored (its score and the scorer's reason),
    with the tokens generated so far and the budget. Built on the search's thread, so it is a
    snapshot: the node may change later."""
    n = event.node
    if event.stage == "added":
        node = {k: getattr(n, k) for k in _NODE_ADDED} | {"sources": list(n.sources), "spans": list(n.spans)}
    else:  # JSON has no NaN or infinity: such a score is sent as null, as the tree writes it
        finite = {k: v if v is None or math.isfinite(v) else None for k, v in n.scores.items()}
        score = n.score if n.score is None or math.isfinite(n.score) else None
        node = {"id": n.id, "score": score, "scores": finite, "reason": n.reason, "pruned": n.pruned}
    return {
        "event": event.stage,
        "node": node,
        "generated_tokens": event.generated_tokens,
        "budget_tokens": event.budget_tokens,
    }
