"""One engine worker thread that batches the rows of concurrent requests.

A request becomes a :class:`Job` (its rows, and a ``sink`` that receives what they produce).
The worker groups waiting jobs into **cohorts** — one :meth:`Engine.steps` batch each — and
advances every live cohort by one step per turn:

1. jobs that arrived during the last turn start a new cohort, if fewer than ``cohorts``
   are running (else they wait for one to end); a cohort takes waiting jobs in arrival
   order up to ``max_batch_rows`` rows;
2. each cohort runs one step; its deltas go to their jobs' sinks, renumbered to the
   job's own rows;
3. a cohort that ends sends each job its completions (in the job's row order).

``cohorts=1`` is "join the next batch"; ``cohorts≥2`` lets a request start at the next
step instead of waiting for the running batch to end, at the cost of one more (smaller)
forward pass per step. A true join into the running batch (one forward per step) needs the
engine loop to take new rows mid-loop: grow its cache, sampler and island state.

A job of stochastic beam searches (rows whose ``params.beams`` is set) is a cohort of its
own: the engine runs them one step (one forward of their live beams) per turn like any
cohort, and the job gets all of their completions (``width`` per row).

A job submitted ``alone`` (a ``batch_invariant`` request) gets a cohort of its own: no other
job's rows share its engine batches, so its tensors' shapes — and with them the float
round-off of every matmul — depend only on the request, and a seeded request gives the same
tokens whatever else runs.

With a ``memory_budget`` (bytes; :mod:`sazanami.server.memory`), a job whose rows alone need
more is refused at :meth:`Batcher.submit` (:class:`~sazanami.server.memory.MemoryTooLarge`),
and a cohort starts only when its rows' footprint fits beside the live cohorts' — the job at
the head of the queue waits for one to end (later jobs wait behind it: arrival order holds).

A cancelled job (its client went away) has its rows cut: their ``max_tokens`` is set to 1,
so the engine finishes them at its next step and drops them from the batch; a cohort whose
jobs are all cancelled is closed at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sazanami.engine.loop import Delta, Engine
from sazanami.errors import SazanamiError
from sazanami.sampling.rows import Completion, RowRequest
from sazanami.server.memory import Footprint, check_fits, footprint

Event = tuple[str, Any]
"""What a sink receives: ``("deltas", [Delta])`` per step (``Delta.row`` is the job's own
row index), ``("done", [Completion])`` once, or ``("error", exception)`` once."""


class Cancelled(SazanamiError):
    """The client of a request went away; its generation was dropped."""


class SearchTimeout(SazanamiError):
    """A search ran past the server's ``max_search_seconds``; its running engine call was cut."""


class Job:
    """The rows of one request and where their output goes."""

    def __init__(
        self,
        rows: list[RowRequest],
        sink: Callable[[Event], None],
        batcher: Batcher,
        alone: bool = False,
        footprint: Footprint | None = None,
    ) -> None:
        self.rows = rows
        self.sink = sink
        self.alone = alone
        """Run in a cohort of its own (batch-invariant)."""
        self.cancelled = threading.Event()
        self._batcher = batcher
        self.beams = any(r.params.beams is not None for r in rows)
        """Beam searches: a cohort of their own (see the module docstring)."""
        self.footprint = footprint
        """Its rows' memory (None: the batcher has no memory budget)."""
        self.held = False
        """It waited at the head of the queue for memory at least once."""

    def cancel(self) -> None:
        """Drop this job's rows (thread-safe; takes effect at the engine's next step)."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._batcher.wake()


class _Cohort:
    """One engine batch: a running :meth:`Engine.steps` generator over the rows of some jobs."""

    def __init__(self, engine: Engine, jobs: list[Job], nbytes: int = 0) -> None:
        self.jobs = jobs
        self.nbytes = nbytes
        """Its rows' memory footprint (0 without a budget)."""
        self.owner: list[tuple[Job, int]] = [(j, i) for j in jobs for i in range(len(j.rows))]
        self.out: list[Completion] = []
        self.gen = engine.steps([r for j in jobs for r in j.rows], self.out)
        self.cut: set[int] = set()  # ids of jobs whose rows were cut already
        self.live = set(range(len(self.owner)))  # rows still generating

    @property
    def rows(self) -> int:
        return len(self.owner)

    def step(self) -> bool:
        """Run one engine step and hand out its deltas; False when the cohort has ended."""
        try:
            deltas = next(self.gen)
        except StopIteration:
            self._finish()
            return False
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the worker
            for j in self.jobs:
                if id(j) not in self.cut:
                    j.sink(("error", exc))
            return False
        by_job: dict[int, list[Delta]] = {}
        for d in deltas:
            if d.finished:
                self.live.discard(d.row)
            job, local = self.owner[d.row]
            if id(job) not in self.cut:
                by_job.setdefault(id(job), []).append(dataclasses.replace(d, row=local))
        for job in self.jobs:
            if id(job) in by_job:
                job.sink(("deltas", by_job[id(job)]))
        return True

    def cancel_rows(self) -> bool:
        """Cut the rows of newly cancelled jobs (and tell them); True when no job is left (closed)."""
        for job in self.jobs:
            if job.cancelled.is_set() and id(job) not in self.cut:
                self.cut.add(id(job))
                self.live -= {b for b, (j, _) in enumerate(self.owner) if j is job}
                for r in job.rows:
                    # The engine checks req.params.max_tokens after every push: 1 ends the row there.
                    r.params = r.params.replace(max_tokens=1)
                job.sink(("error", Cancelled("the client went away")))
        if len(self.cut) == len(self.jobs):
            self.gen.close()
            return True
        return False

    def _finish(self) -> None:
        if len(self.jobs) == 1:  # all of it (a beam job has more completions than rows)
            if id(self.jobs[0]) not in self.cut:
                self.jobs[0].sink(("done", self.out))
            return
        start = 0
        for job in self.jobs:
            n = len(job.rows)
            if id(job) not in self.cut:
                job.sink(("done", self.out[start : start + n]))
            start += n


class Batcher:
    """Owns the engine: one worker thread runs every generation step (see the module docstring)."""

    def __init__(
        self, engine: Engine, max_batch_rows: int = 64, cohorts: int = 2, memory_budget: int | None = None
    ) -> None:
        self.engine = engine
        self.max_batch_rows = max_batch_rows
        self.cohorts = cohorts
        self.memory_budget = memory_budget
        """Bytes the live cohorts' rows may hold together (None: unbounded)."""
        self._pending: deque[Job] = deque()
        self._live: list[_Cohort] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stats = {"steps": 0, "batches": 0, "rows": 0, "peak_rows": 0, "busy_s": 0.0, "memory_waits": 0}
        """Counters for benchmarks: engine steps, cohorts started, rows run, most rows at once,
        jobs that waited for memory."""

    # -- client side (any thread) ------------------------------------------------------------
    def submit(
        self, rows: list[RowRequest], sink: Callable[[Event], None], alone: bool = False, param: str = "n"
    ) -> Job:
        """Queue ``rows``; ``sink`` is called from the worker thread with each :data:`Event`.

        ``alone``: no other job's rows share its engine batches (see the module docstring).
        Rows over the whole memory budget raise :class:`~sazanami.server.memory.MemoryTooLarge`
        naming ``param``.
        """
        if alone:  # its keys/values computed in its own shapes only, not taken from earlier requests
            rows = [dataclasses.replace(r, reuse=False) for r in rows]
        fp = None
        if self.memory_budget is not None:
            fp = footprint(rows, self.engine.backend)
            check_fits(fp, self.memory_budget, param, "an engine call")
        job = Job(rows, sink, self, alone, fp)
        with self._cond:
            if self._stop:
                raise SazanamiError("the server is shutting down")
            self._pending.append(job)
            self._cond.notify()
        return job

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    @property
    def running_rows(self) -> int:
        """Rows generating now (approximate when read from another thread)."""
        return sum(len(c.live) for c in list(self._live))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def memory_bytes(self) -> int:
        """The live cohorts' memory footprint (0 without a budget; approximate from another thread)."""
        return sum(c.nbytes for c in list(self._live))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="sazanami-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail waiting jobs, cancel running ones and join the worker."""
        with self._cond:
            self._stop = True
            pending, self._pending = list(self._pending), deque()
            for c in self._live:
                for j in c.jobs:
                    j.cancelled.set()
            self._cond.notify()
        for job in pending:
            job.sink(("error", SazanamiError("the server is shutting down")))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the worker ----------------------------------------------------------------------------
    def _take(self) -> tuple[list[Job], int]:
        """Waiting jobs for a new cohort, in arrival order, up to ``max_batch_rows`` rows, and their
        footprint; a job that runs alone is a cohort by itself. No jobs (the first waits for
        memory) only while other cohorts run: alone, a job always fits (:meth:`submit` checked it)."""
        jobs: list[Job] = []
        rows, together = 0, None
        room = None if self.memory_budget is None else self.memory_budget - self.memory_bytes
        while self._pending:
            job = self._pending[0]
            if job.cancelled.is_set():
                self._pending.popleft()
                job.sink(("error", Cancelled("the client went away")))
                continue
            if jobs and (job.alone or job.beams or jobs[0].beams or rows + len(job.rows) > self.max_batch_rows):
                break
            if room is not None and job.footprint is not None:
                # the engine sizes every row for the longest one: the footprint of the rows together
                grown = job.footprint if together is None else together + job.footprint
                if grown.nbytes > room and (jobs or self._live):
                    if not jobs and not job.held:
                        self.stats["memory_waits"] += 1
                        job.held = True
                    break
                together = grown
            jobs.append(self._pending.popleft())
            rows += len(job.rows)
            if job.alone:
                break
        return jobs, together.nbytes if together is not None else 0

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._live and not self._pending:
                    self._cond.wait()
                if self._stop and not self._live:
                    return
                new, nbytes = self._take() if len(self._live) < self.cohorts and not self._stop else ([], 0)
            if new:
                self._live.append(_Cohort(self.engine, new, nbytes))
                self.stats["batches"] += 1
                self.stats["rows"] += self._live[-1].rows
            self.stats["peak_rows"] = max(self.stats["peak_rows"], self.running_rows)
            t = time.perf_counter()
            for cohort in list(self._live):
                if cohort.cancel_rows() or not cohort.step():
                    self._live.remove(cohort)
            self.stats["steps"] += 1
            self.stats["busy_s"] += time.perf_counter() - t


class BatchedEngine:
    """The engine as a search sees it: :meth:`run` goes through the batcher, so a search's rows
    share engine batches with other requests. Everything else is the engine's own.

    ``cancelled`` set (the client went away) makes the running and every later :meth:`run`
    raise :class:`Cancelled`; past ``deadline`` (a ``time.monotonic()`` value) they raise
    :class:`SearchTimeout` instead. ``alone``: every call runs in engine batches of its own
    (batch-invariant). Rows whose ``tag`` has a ``meta`` dict (search row specs) get
    their completion's per-step trace there as ``meta["trace"]`` when tracing is on.
    """

    def __init__(
        self,
        engine: Engine,
        batcher: Batcher,
        cancelled: threading.Event,
        alone: bool = False,
        deadline: float | None = None,
    ) -> None:
        self._engine = engine
        self._batcher = batcher
        self._cancelled = cancelled
        self._alone = alone
        self._deadline = deadline

    def _stop(self) -> SazanamiError | None:
        """Why this search must stop now (the client went away or its time is up), or None."""
        if self._cancelled.is_set():
            return Cancelled("the client went away")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return SearchTimeout("the search ran past this server's time limit (max_search_seconds)")
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run(self, rows: list[RowRequest]) -> list[Completion]:
        stop = self._stop()
        if stop is not None:
            raise stop
        done = threading.Event()
        box: list[Event] = []

        def sink(event: Event) -> None:
            if event[0] != "deltas":
                box.append(event)
                done.set()

        job = self._batcher.submit(rows, sink, self._alone, param="search")
        while not done.wait(0.05):
            stop = stop or self._stop()
            if stop is not None:
                job.cancel()
        kind, value = box[0]
        if kind == "error":
            raise stop if stop is not None and isinstance(value, Cancelled) else value
        for r, c in zip(rows, value, strict=False):  # (beam rows have no trace)
            meta = getattr(r.tag, "meta", None)
            if c.trace and isinstance(meta, dict):
                meta["trace"] = c.trace
        return value
