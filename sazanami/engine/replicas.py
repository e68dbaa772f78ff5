"""Replicas: several engines as Ray actors behind one :class:`~sazanami.engine.loop.Engine`.

:class:`RayEngines` is an engine whose rows run on N Ray actors, each holding an engine
built from one :class:`~sazanami.engine.engine_spec.EngineSpec` (torch or vLLM). Everything above the
engine stays in the driver: a search's tree, its budget, scoring and selection; only
``run(rows)`` fans out. A row's tokens depend only on the row (its prompt, parameters, seed
and noise mixture: the noise is keyed by (seed, stream, step)), so a search on N replicas
builds the same tree as on one engine with the same seeds, up to the float round-off of
batched matmuls, which differs with the batch a row shares.

Rows go to replicas by prompt: rows with the same prompt ids stay together where that keeps
the replicas balanced (they share one prefill there, and vLLM's prefix cache keeps it for the
next call), and a group larger than a replica's share is split. A prompt goes to the replica
that computed the longest prefix of it when that replica has room (prefix affinity,
:class:`PrefixOwners`): a search's continuation (prompt + kept part of its parent) goes where
the parent ran, whose prefix cache holds the parent's keys and values.

    >>> engines = RayEngines(EngineSpec("tiny-random", threads=1), replicas=2)  # doctest: +SKIP
    >>> tree = search(engines, "Say hi.", "best_of_n", scorer="contains:hi", seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from sazanami.engine.engine_spec import EngineSpec
from sazanami.engine.loop import Delta, Engine
from sazanami.engine.prefix_cache import DEFAULT_BLOCK
from sazanami.errors import ParameterError, check_int
from sazanami.sampling.rows import Completion, RowRequest

__all__ = ["PrefixOwners", "RayEngines", "assign_rows"]


class PrefixOwners:
    """Which replica last computed each token prefix: the driver's map for prefix affinity.

    Prefixes are recorded per block of ``block`` tokens (the engines' prefix-cache block) and
    keyed by a hash of the block chained to the blocks before it, as the caches key them; a
    whole sequence is also recorded exactly (prompts shorter than a block). The newest owner
    wins; past ``capacity`` keys the least recently used are forgotten. A hash collision only
    misroutes a row (a cache miss), never changes its tokens.
    """

    def __init__(self, block: int = DEFAULT_BLOCK, capacity: int = 1 << 16) -> None:
        check_int("block", block, 1, 1 << 16)
        check_int("capacity", capacity, 1, 1 << 24)
        self.block, self.capacity = block, capacity
        self._owner: OrderedDict[int, int] = OrderedDict()

    def _keys(self, ids: Sequence[int]) -> Iterator[int]:
        key = 0
        for start in range(0, len(ids) - self.block + 1, self.block):
            key = hash((key, tuple(ids[start : start + self.block])))
            yield key

    def record(self, ids: Sequence[int], replica: int) -> None:
        """``replica`` has computed ``ids`` (a prompt, or a prompt and its output)."""
        for key in [*self._keys(ids), hash(("exact", tuple(ids)))]:
            self._owner[key] = replica
            self._owner.move_to_end(key)
        while len(self._owner) > self.capacity:
            self._owner.popitem(last=False)

    def clear(self) -> None:
        """Forget every owner."""
        self._owner.clear()

    def lookup(self, ids: Sequence[int]) -> int | None:
        """The replica holding the longest recorded prefix of ``ids`` (None: no block known)."""
        exact = self._owner.get(hash(("exact", tuple(ids))))
        if exact is not None:
            return exact
        found = None
        for key in self._keys(ids):
            owner = self._owner.get(key)
            if owner is None:
                break
            found = owner
        return found


class _Replica:
    """A Ray actor holding one engine (built in the actor's own process)."""

    def __init__(self, spec: EngineSpec) -> None:
        self.engine = spec.open()

    def info(self) -> dict[str, Any]:
        b = self.engine.backend
        return {
            "name": b.name,
            "vocab_size": b.vocab_size,
            "hidden_size": getattr(b, "hidden_size", 0),
            "num_layers": getattr(b, "num_layers", 0),
            "max_positions": self.engine.max_positions,
            "kv_bytes_per_token": b.kv_bytes_per_token,
            "capabilities": getattr(b, "capabilities", None),
        }

    def run(self, rows: list[RowRequest]) -> list[list[Completion]]:
        """Each row's completions (one per row; a beam row's ``width`` samples)."""
        if any(r.params.beams is not None for r in rows):
            return [self.engine.run([r]) for r in rows]
        return [[c] for c in self.engine.run(rows)]

    def clear_prefix_cache(self) -> None:
        self.engine.clear_prefix_cache()


class _RemoteBackend:
    """The driver's view of the replicas' model: its tokenizer and sizes; no forward pass here."""

    def __init__(self, info: dict[str, Any], tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.name = info["name"]
        self.vocab_size = info["vocab_size"]
        self.hidden_size = info["hidden_size"]
        self.num_layers = info["num_layers"]
        self.max_positions = info["max_positions"]
        self.kv_bytes_per_token = info["kv_bytes_per_token"]
        self.capabilities = info["capabilities"]
        """The replicas' backend's (each replica checks its rows itself)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ParameterError(
            "engines", "a raw forward pass (re-scoring with LogprobScorer(engine)) does not run on Ray replicas"
        )

    new_cache = forward = _refuse


def assign_rows(requests: list[RowRequest], replicas: int, owners: PrefixOwners | None = None) -> list[list[int]]:
    """Row indices per replica: same-prompt rows together, balanced, preferring the replica
    that holds the longest prefix of the prompt (``owners``; None: balance only).

    Every replica gets at most ⌈rows / replicas⌉ rows; groups are placed largest first.
    """
    share = -(-len(requests) // replicas)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(tuple(r.prompt_ids), []).append(i)
    parts: list[list[int]] = [[] for _ in range(replicas)]
    for key, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0])):
        preferred = owners.lookup(key) if owners is not None else None
        while members:
            if preferred is not None and len(parts[preferred]) < share:
                target = preferred
            else:
                target = min(range(replicas), key=lambda k: (len(parts[k]), k))
            room = share - len(parts[target])
            parts[target].extend(members[:room])
            members = members[room:]
            preferred = None
    return parts


class RayEngines(Engine):
    """An :class:`~sazanami.engine.loop.Engine` whose rows run on ``replicas`` Ray actors.

    Args:
        spec: the engine every replica builds (an :class:`EngineSpec` or a model name).
        replicas: actors to start; each asks Ray for ``spec.threads or 1`` CPUs (and one GPU
            when the backend is vLLM and ``gpus_per_replica`` is set).
        address: a Ray cluster to join (``ray.init(address=...)``); None starts Ray locally.
        gpus_per_replica: GPUs each actor reserves (0 on CPU machines).
        affinity: send a prompt to the replica that computed its longest prefix when it has
            room (False: balance only; tokens are the same either way).
    """

    def __init__(
        self,
        spec: EngineSpec | str = "smollm2-135m",
        replicas: int = 2,
        address: str | None = None,
        gpus_per_replica: float = 0,
        affinity: bool = True,
    ) -> None:
        import ray

        check_int("replicas", replicas, 1, 1024)
        spec = EngineSpec(spec) if isinstance(spec, str) else spec
        cpus = spec.threads or 1
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=cpus * replicas, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus_per_replica)(_Replica)
        self.spec = spec
        self.actors = [actor.remote(spec) for _ in range(replicas)]
        info = ray.get(self.actors[0].info.remote())
        self.owners = PrefixOwners() if affinity else None
        super().__init__(_RemoteBackend(info, spec.tokenizer()), prefix_cache=False)  # each replica has its own

    @property
    def replicas(self) -> int:
        return len(self.actors)

    def steps(self, requests: list[RowRequest], out: list[Completion], deltas: bool = True) -> Iterator[list[Delta]]:
        """Fan the rows out, gather completions in row order; yields one list of deltas."""
        import ray

        parts = assign_rows(requests, self.replicas, self.owners)
        # Tags stay in the driver (a search keeps its node bookkeeping there); rows travel without.
        futures = [
            self.actors[k].run.remote([dataclasses.replace(requests[i], tag=None) for i in idx])
            for k, idx in enumerate(parts)
            if idx
        ]
        results = ray.get(futures)
        done: list[list[Completion]] = [[] for _ in requests]
        for idx, per_row in zip([p for p in parts if p], results):
            for i, completions in zip(idx, per_row):
                for c in completions:  # a beam's samples carry their own statistics as tag
                    c.tag = c.tag if c.tag is not None else requests[i].tag
                done[i] = completions
        if self.owners is not None:
            for k, idx in enumerate(parts):
                for i in idx:
                    self.owners.record(requests[i].prompt_ids, k)
                    for c in done[i]:
                        self.owners.record([*requests[i].prompt_ids, *c.token_ids], k)
        flat = [c for completions in done for c in completions]
        if deltas:
            yield [Delta(b, c.text, None, True, c.finish_reason) for b, c in enumerate(flat)]
        out.extend(flat)

    def clear_prefix_cache(self) -> None:
        """Empty every replica's prefix cache and forget who computed what."""
        import ray

        ray.get([a.clear_prefix_cache.remote() for a in self.actors])
        if self.owners is not None:
            self.owners.clear()

    def shutdown(self) -> None:
        """Stop the actors (Ray itself keeps running for the process)."""
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
