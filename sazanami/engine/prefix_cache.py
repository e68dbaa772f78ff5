"""Prefix cache: keys/values of token prefixes kept across engine calls.

A search runs the same prefixes again and again — the prompt for every fresh sample,
prompt + kept prefix for every continuation, the judge's instruction for every judge call.
The cache stores the keys/values of prefixes already computed, in blocks of ``block``
tokens, so a new row prefills only the tokens no earlier row had.

A block is identified by its tokens *and* everything before it (its parent block), so two
prompts share exactly their common leading blocks (the idea of vLLM's automatic prefix
caching; SGLang's radix tree shares at token granularity instead). Lookups walk the chain
of blocks from the first; blocks are evicted least-recently-used first once the cache
holds more than ``max_bytes``, with their descendants (unreachable without them).

The payload of a block is the backend's business (:meth:`Cache.read_block` /
:meth:`Cache.write_blocks`); this module only keys, counts and evicts. A backend whose
payloads hold resources (llama.cpp: cells tagged with a spare sequence id) frees them in
``on_evict(payload)``, called for every block that leaves the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sazanami.errors import ParameterError

DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_BLOCK = 16


@dataclass
class _Block:
    key: tuple[int, tuple[int, ...]]
    """(parent block id, this block's tokens): unique for a prefix."""
    id: int
    payload: Any
    nbytes: int
    children: set[int] = field(default_factory=set)


@dataclass
class CacheStats:
    """What the cache saved: prompt tokens reused vs computed, since it was made."""

    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    computed_tokens: int = 0
    stored_blocks: int = 0
    evicted_blocks: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of prompt tokens that came from the cache."""
        total = self.reused_tokens + self.computed_tokens
        return self.reused_tokens / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "reused_tokens": self.reused_tokens,
            "computed_tokens": self.computed_tokens,
            "hit_rate": round(self.hit_rate, 4),
            "stored_blocks": self.stored_blocks,
            "evicted_blocks": self.evicted_blocks,
        }


class _Payloads:
    """The payloads of a cache's blocks, read when iterated."""

    def __init__(self, blocks: OrderedDict[Any, _Block]) -> None:
        self._blocks = blocks

    def __iter__(self) -> Any:
        return iter([b.payload for b in self._blocks.values()])


class PrefixCache:
    """Blocks of keys/values keyed by their token prefix, with an LRU byte cap."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        block: int = DEFAULT_BLOCK,
        on_evict: Callable[[Any], None] | None = None,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ParameterError("max_bytes", f"max_bytes must be an integer ≥ 0, got {max_bytes!r}")
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 1024:
            raise ParameterError("block", f"block must be an integer in [1, 1024], got {block!r}")
        self.max_bytes = max_bytes
        self.block = block
        self.on_evict = on_evict
        """Called with the payload of every block that leaves the cache (evicted or cleared)."""
        self.nbytes = 0
        self.stats = CacheStats()
        self._blocks: OrderedDict[tuple[int, tuple[int, ...]], _Block] = OrderedDict()
        self._by_id: dict[int, _Block] = {}
        self._next_id = 1  # 0 is the root (the empty prefix)

    def __len__(self) -> int:
        return len(self._blocks)

    def _chain(self, ids: Sequence[int]) -> list[_Block]:
        """The stored blocks that cover the longest cached prefix of ``ids`` (marked as used)."""
        out: list[_Block] = []
        parent, B = 0, self.block
        for start in range(0, len(ids) - B + 1, B):
            blk = self._blocks.get((parent, tuple(ids[start : start + B])))
            if blk is None:
                break
            self._blocks.move_to_end(blk.key)
            out.append(blk)
            parent = blk.id
        return out

    def lookup(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, list[Any]]:
        """``(n, payloads)``: the first ``n`` tokens of ``ids`` are cached, in these blocks.

        ``limit`` caps ``n`` (a row must still compute its last prompt token to get logits).
        """
        self.stats.lookups += 1
        chain = self._chain(ids if limit is None else ids[:limit])
        n = len(chain) * self.block
        if n:
            self.stats.hits += 1
        return n, [b.payload for b in chain]

    def count(self, reused: int, computed: int) -> None:
        """Record prompt tokens a row took from the cache and those it ran through the model."""
        self.stats.reused_tokens += reused
        self.stats.computed_tokens += computed

    def store(self, ids: Sequence[int], read: Callable[[int, int], tuple[Any, int]]) -> int:
        """Store the full blocks of ``ids`` not cached yet; ``read(start, end)`` gives one's
        ``(payload, nbytes)``, or ``(None, 0)`` when the backend has no room (storing stops
        there). Returns the number of new blocks."""
        if self.max_bytes == 0:
            return 0
        chain = self._chain(ids)
        parent = chain[-1].id if chain else 0
        new, B = 0, self.block
        for start in range(len(chain) * B, len(ids) - B + 1, B):
            payload, nbytes = read(start, start + B)
            if payload is None:
                break
            blk = _Block((parent, tuple(ids[start : start + B])), self._next_id, payload, nbytes)
            self._next_id += 1
            self._blocks[blk.key] = blk
            self._by_id[blk.id] = blk
            if parent:
                self._by_id[parent].children.add(blk.id)
            self.nbytes += nbytes
            parent = blk.id
            new += 1
        self.stats.stored_blocks += new
        self._evict(keep=parent)
        return new

    def _evict(self, keep: int) -> None:
        """Drop least-recently-used blocks (and their descendants) until under the cap."""
        while self.nbytes > self.max_bytes and self._blocks:
            key = next(iter(self._blocks))
            if self._blocks[key].id == keep and len(self._blocks) == 1:
                break
            self._drop(self._blocks[key])

    def payloads(self) -> Any:
        """A live view of the stored payloads (it does not keep the cache alive)."""
        return _Payloads(self._blocks)

    def evict_lru(self) -> bool:
        """Drop the least-recently-used block (and its descendants); False if the cache is empty.

        For a backend that needs room the cache holds (llama.cpp's sequence ids and cells).
        """
        if not self._blocks:
            return False
        self._drop(next(iter(self._blocks.values())))
        return True

    def _drop(self, blk: _Block) -> None:
        parent = self._by_id.get(blk.key[0])
        if parent is not None:
            parent.children.discard(blk.id)
        todo = [blk]
        while todo:  # the block and every descendant (unreachable without it)
            b = todo.pop()
            todo.extend(self._by_id[c] for c in b.children if c in self._by_id)
            del self._blocks[b.key]
            del self._by_id[b.id]
            self.nbytes -= b.nbytes
            self.stats.evicted_blocks += 1
            if self.on_evict is not None:
                self.on_evict(b.payload)

    def clear(self) -> None:
        """Forget every block (the stats stay)."""
        if self.on_evict is not None:
            for b in self._blocks.values():
                self.on_evict(b.payload)
        self._blocks.clear()
        self._by_id.clear()
        self.nbytes = 0
