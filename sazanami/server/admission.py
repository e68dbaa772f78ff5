"""Admission: how many requests the server takes in at once, and how many of them run.

A request is counted in by :meth:`Admission.admit` (503 when ``max_concurrent + max_queue``
are in) and runs holding one of ``max_concurrent`` slots (:meth:`Admission.slot`; an admitted
request waits for one, counted in ``waiting``). Rows are held to the memory budget later, by
the batcher (:mod:`sazanami.server.memory`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sazanami.server.errors import ApiError
from sazanami.server.limits import Limits

__all__ = ["Admission"]


class Admission:
    """The admission counter and the running slots of one server."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admitted = 0
        """Requests counted in (running or waiting)."""
        self.waiting = 0
        """Admitted requests waiting for a running slot."""
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        """``max_concurrent`` running slots (made on first use, on the app's event loop)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrent)
        return self._slots

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A running slot (counted in ``waiting`` until it is free)."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.slots.release()

    def admit(self) -> Callable[[], None]:
        """Count a request in (503 when full); returns its idempotent release."""
        room = self.limits.max_concurrent + self.limits.max_queue
        if self.admitted >= room:
            raise ApiError(
                503,
                f"the server is overloaded ({self.admitted} requests running or waiting); retry later",
                "server_error",
                code="server_overloaded",
            )
        self.admitted += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.admitted -= 1

        return release
