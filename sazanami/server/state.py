"""What the routes share: :class:`Server` — the engine, its batcher, the search pool, the
limits and memory budget, admission and the metrics; built once per app by
:func:`~sazanami.server.app.create_app` and kept in ``app.state.server``."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.server.admission import Admission
from sazanami.server.batcher import Batcher
from sazanami.server.errors import ApiError
from sazanami.server.limits import Limits
from sazanami.server.memory import default_memory_budget
from sazanami.server.monitoring import Monitor

__all__ = ["Server"]


class Server:
    """What the routes share: the engine, its batcher, the limits and admission."""

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        limits: Limits,
        tools: Any = None,
        aliases: tuple[str, ...] = (),
        indexes: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        """The id the model is served under (:func:`~sazanami.server.app.model_id`): /v1/models,
        every response's ``model``."""
        self.aliases = aliases
        """Other names a request may give the model by (the path it was loaded from); never shown."""
        self.limits = limits
        self.tools = tools
        self.indexes = dict(indexes or {})
        """The corpus indexes requests may draft from, by name (``serve --speculative-index NAME=PATH``)."""
        pc = getattr(engine, "prefix_cache", None)
        self.memory_budget: int = limits.memory_budget or default_memory_budget(  # type: ignore[assignment]
            prefix_cache_bytes=pc.max_bytes if pc is not None else 0
        )
        """Bytes the running rows' keys/values and logits may take (:mod:`sazanami.server.memory`)."""
        self.batcher = Batcher(engine, limits.max_batch_rows, limits.cohorts, self.memory_budget)
        self.pool = ThreadPoolExecutor(limits.max_searches, thread_name_prefix="sazanami-search")
        self.admission = Admission(limits)
        self.searching = 0
        """Searches (and beam searches) running on the pool's threads now."""
        self._lock = threading.Lock()
        self.created = int(time.time())
        self.eos = set(engine.tokenizer.eos_token_ids)
        self.max_positions: int = engine.backend.max_positions
        """The model's context (every backend says it): a prompt + max_tokens past it is 413."""
        self.monitor = Monitor(self)

    def speculative_params(self, params: SamplingParams) -> SamplingParams:
        """``params`` with ``speculative.corpus`` — over HTTP the name of one of :attr:`indexes`,
        never a path (the server opens no file a request names) — replaced by that index's folder."""
        spec = params.speculative
        if spec is None or spec.corpus is None:
            return params
        if spec.corpus not in self.indexes:
            known = ", ".join(sorted(self.indexes)) or "none (serve --speculative-index NAME=PATH adds one)"
            raise ParameterError(
                "speculative.corpus",
                f"speculative.corpus must name one of this server's corpus indexes ({known}), got {spec.corpus[:80]!r}",
            )
        return params.replace(speculative=dataclasses.replace(spec, corpus=self.indexes[spec.corpus]))

    def check_model(self, model: str | None) -> None:
        """404 unless ``model`` (a request's) is None or a name this server serves its model by."""
        if model is not None and model not in (self.model_name, self.engine.backend.name, *self.aliases):
            raise ApiError(
                404,
                f"The model {model!r} does not exist; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
