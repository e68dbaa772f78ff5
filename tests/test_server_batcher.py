"""The batcher: concurrent requests share engine batches; cancelled rows are dropped."""

from __future__ import annotations

import threading
import time

import pytest

from sazanami.sampling.params import SamplingParams
from sazanami.server.batcher import BatchedEngine, Batcher, Cancelled


class Recorder:
    """A job's sink that keeps its events and the worker step each arrived at."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.events: list[tuple[str, object, int]] = []
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.events.append((event[0], event[1], self.batcher.stats["steps"]))
        if event[0] != "deltas":
            self.done.set()

    def first_step(self) -> int:
        return next(step for kind, _, step in self.events if kind == "deltas")

    def text(self, row: int) -> str:
        return "".join(d.text for kind, ds, _ in self.events if kind == "deltas" for d in ds if d.row == row)


def rows(engine, n: int, max_tokens: int, seed: int = 1, prompt: str = "hello"):
    params = SamplingParams(n=n, max_tokens=max_tokens, seed=seed, ignore_eos=True)
    return engine.rows_for([prompt], params)


@pytest.fixture
def batcher(tiny_engine, request):
    b = Batcher(tiny_engine, max_batch_rows=64, cohorts=getattr(request, "param", 2))
    yield b
    b.stop()


def test_jobs_waiting_together_share_one_batch(tiny_engine, batcher):
    recs = [Recorder(batcher) for _ in range(4)]
    for i, r in enumerate(recs):
        batcher.submit(rows(tiny_engine, 2, 8, seed=i), r)
    batcher.start()
    for r in recs:
        assert r.done.wait(30)
    assert batcher.stats["batches"] == 1 and batcher.stats["peak_rows"] == 8
    for i, r in enumerate(recs):
        kind, completions, _ = r.events[-1]
        assert kind == "done" and len(completions) == 2
        solo = tiny_engine.run(rows(tiny_engine, 2, 8, seed=i))
        assert [c.text for c in completions] == [c.text for c in solo]  # batching changes nothing
        assert r.text(0) == completions[0].text  # deltas add up to the text


@pytest.mark.parametrize(("batcher", "joins_next_step"), [(1, False), (2, True)], indirect=["batcher"])
def test_late_job_joins_next_batch_or_next_step(tiny_engine, batcher, joins_next_step):
    batcher.start()
    a, b = Recorder(batcher), Recorder(batcher)
    batcher.submit(rows(tiny_engine, 1, 400), a)
    while not a.events:
        time.sleep(0.001)
    batcher.submit(rows(tiny_engine, 1, 4, seed=2), b)
    assert a.done.wait(60) and b.done.wait(60)
    a_last = max(step for kind, _, step in a.events if kind == "deltas")
    # cohorts=1: b waits for a's batch to end; cohorts=2: b starts at once, beside a
    assert (b.first_step() < a_last) is joins_next_step
    assert batcher.stats["batches"] == 2


def test_cancel_drops_rows_and_keeps_others(tiny_engine, batcher):
    batcher.start()
    a, b = Recorder(batcher), Recorder(batcher)
    job_a = batcher.submit(rows(tiny_engine, 2, 1500), a)
    batcher.submit(rows(tiny_engine, 1, 1500, seed=3), b)
    while len(a.events) < 3:
        time.sleep(0.001)
    job_a.cancel()
    assert a.done.wait(10)
    assert a.events[-1][0] == "error" and isinstance(a.events[-1][1], Cancelled)
    time.sleep(0.2)
    assert batcher.running_rows == 1  # b goes on alone
    assert not b.done.is_set()


def test_cancel_of_every_job_closes_the_batch(tiny_engine, batcher):
    batcher.start()
    a = Recorder(batcher)
    job = batcher.submit(rows(tiny_engine, 1, 1500), a)
    while not a.events:
        time.sleep(0.001)
    job.cancel()
    assert a.done.wait(10)
    time.sleep(0.1)
    steps = batcher.stats["steps"]
    time.sleep(0.1)
    assert batcher.running_rows == 0 and batcher.stats["steps"] == steps < 1500  # the worker is idle


def test_batched_engine_runs_rows_through_the_batcher(tiny_engine, batcher):
    batcher.start()
    cancelled = threading.Event()
    proxy = BatchedEngine(tiny_engine, batcher, cancelled)
    out = proxy.run(rows(tiny_engine, 3, 6))
    assert [c.text for c in out] == [c.text for c in tiny_engine.run(rows(tiny_engine, 3, 6))]
    assert proxy.tokenizer is tiny_engine.tokenizer and batcher.stats["batches"] == 1
    cancelled.set()
    with pytest.raises(Cancelled):
        proxy.run(rows(tiny_engine, 1, 4))


def test_beams_run_through_the_batcher_in_a_batch_of_their_own(tiny_engine, batcher):
    """A beam job is one cohort stepped by the worker (no search thread), with all its completions."""
    p = SamplingParams(beams={"width": 3, "beta": 0}, seed=3, max_tokens=6, ignore_eos=True)
    beam_rows = tiny_engine.rows_for(["hello", "bye"], p)
    sample, beams = Recorder(batcher), Recorder(batcher)
    batcher.submit(rows(tiny_engine, 2, 8), sample)
    batcher.submit(beam_rows, beams)
    batcher.start()
    assert sample.done.wait(30) and beams.done.wait(30)
    assert batcher.stats["batches"] == 2  # the beams did not join the sampled rows
    kind, completions, _ = beams.events[-1]
    solo = tiny_engine.generate(["hello", "bye"], p)
    assert kind == "done" and len(completions) == 6
    assert [c.token_ids for c in completions] == [c.token_ids for c in solo]
    assert [c.prompt_index for c in completions] == [0, 0, 0, 1, 1, 1]
    assert batcher.stats["steps"] >= 6  # one worker turn per beam step


def test_a_search_with_beams_runs_its_engine_calls_through_the_batcher(tiny_engine, batcher):
    from sazanami.search import search

    batcher.start()
    p = SamplingParams(max_tokens=6, seed=2, ignore_eos=True)
    engine = BatchedEngine(tiny_engine, batcher, threading.Event())
    tree = search(engine, "hi", "beam", scorer="logprob", budget=60, params=p, width=3, rounds=1)
    direct = search(tiny_engine, "hi", "beam", scorer="logprob", budget=60, params=p, width=3, rounds=1)
    assert batcher.stats["batches"] == 1 and batcher.stats["steps"] >= 6
    assert [n.token_ids for n in tree.nodes] == [n.token_ids for n in direct.nodes]
    # the second search may take its prompt from the prefix cache: same positions, split differently
    skip = {"wall_s", "prompt_tokens", "prompt_tokens_reused"}
    assert {k: v for k, v in tree.spend.items() if k not in skip} == {
        k: v for k, v in direct.spend.items() if k not in skip
    }
    positions = [s["prompt_tokens"] + s["prompt_tokens_reused"] for s in (tree.spend, direct.spend)]
    assert positions[0] == positions[1]
