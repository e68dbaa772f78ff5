"""The KV sequences of the llama.cpp backend: a pool of sequence ids in one ``llama_context``
(:class:`SequencePool`), the rows' caches over them (:class:`SeqCache`) and the prefix cache's held
blocks (:class:`HeldBlock`); see :mod:`sazanami.backends.llamacpp` for why each row has a stream
of its own."""

from __future__ import annotations

import ctypes
import os
import struct
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from sazanami.errors import ParameterError

BATCH = 512
"""Tokens per ``llama_decode``; longer forwards (prompts) go in pieces of this size."""

MAX_SEQUENCES = 256
"""llama.cpp's ``LLAMA_MAX_SEQ``: sequences (rows alive at once) one context can hold."""


class _Holder:
    """A spare sequence id whose stream holds a copy of one row (prefix-cache blocks point
    into it); freed when its last block leaves the cache."""

    __slots__ = ("seq", "blocks", "key")

    def __init__(self, seq: int, key: tuple[int, int]) -> None:
        self.seq = seq
        self.blocks = 0
        self.key = key
        """(source sequence, its version) at the copy: later blocks of that state share it."""


@dataclass(frozen=True, eq=False)
class HeldBlock:
    """A prefix-cache block on llama.cpp (the payload :meth:`SeqCache.read_block` returns):
    positions ``[p0, p1)`` (llama.cpp's) of the row copied into ``holder``. The holder holds
    the whole prefix up to ``p1``, so the last block of a lookup alone restores a row. The first
    block (``start`` 0) includes the BOS cell where the model has one."""

    pool: SequencePool
    holder: _Holder
    start: int
    end: int
    p0: int
    p1: int


class SequencePool:
    """The ``llama_context`` (one KV stream of ``n_cells`` cells per sequence id), its free
    sequence ids, and the holder sequences of the prefix caches attached to it."""

    def __init__(
        self,
        lib: Any,
        model: Any,
        threads: int,
        context: int,
        sequences: int,
        bos_offset: int,
        kv_bytes: int = 0,
    ) -> None:
        self.lib = lib
        self.model = model
        self.threads = threads
        self.bos_offset = bos_offset
        self.kv_bytes = kv_bytes
        """Bytes of keys and values per token (a prefix-cache block's ``nbytes`` is this × its tokens)."""
        self.ctx: Any = None
        self.n_cells = 0
        self.n_seq = 0
        self.free: set[int] = set()
        self.version: dict[int, int] = {}
        """Bumped whenever a sequence's cells change: holders copied from one state are shared."""
        self.holders: dict[tuple[int, int], _Holder] = {}
        self.caches: weakref.WeakSet[Any] = weakref.WeakSet()
        """Prefix caches whose blocks live in this context (:meth:`attach`)."""
        self.max_kv_bytes = _half_memory()
        """The largest context (all streams' keys/values) a rebuild may make."""
        self._build(context, sequences)

    def _build(self, n_cells: int, n_seq: int) -> None:
        lib = self.lib
        p = lib.llama_context_default_params()
        p.n_ctx = n_cells * n_seq
        p.n_batch = p.n_ubatch = BATCH
        p.n_seq_max = n_seq
        p.n_threads = p.n_threads_batch = self.threads
        p.kv_unified = False  # a stream per sequence: a row's cells sit in position order (see the module)
        p.no_perf = True
        ctx = lib.llama_init_from_model(self.model, p)
        if not ctx:
            raise RuntimeError(
                f"llama.cpp could not create a context of {n_seq} sequences × {n_cells} cells "
                f"({n_seq * n_cells * self.kv_bytes / 2**30:.1f} GiB of keys/values)"
            )
        used = set(range(self.n_seq)) - self.free
        self.ctx, self.n_cells, self.n_seq = ctx, n_cells, n_seq
        self.mem = lib.llama_get_memory(ctx)
        self.free = set(range(n_seq)) - used

    def _run(self, count: int, n_seq: int | None = None) -> int | None:
        """The lowest id starting ``count`` consecutive free ids (ids a context of ``n_seq``
        would add count as free), or None."""
        run = 0
        for s in range(n_seq or self.n_seq):
            run = run + 1 if s in self.free or s >= self.n_seq else 0
            if run == count:
                return s - count + 1
        return None

    def take(self, count: int, cells: int) -> list[int]:
        """``count`` consecutive free sequence ids whose streams hold ``cells`` cells each.

        Consecutive, because llama.cpp decodes a batch's streams in one pass only when their
        ids are (gaps split the step into passes). Prefix-cache blocks give way first (least
        recently used first); the context grows (a rebuild) when rows still do not fit.
        """
        while self._run(count) is None and self._evict_one():
            pass
        want_seq = self.n_seq
        while self._run(count, want_seq) is None and want_seq < MAX_SEQUENCES:
            want_seq = min(MAX_SEQUENCES, 2 * want_seq)
        if self._run(count, want_seq) is None:
            raise ParameterError(
                "n", f"the llama.cpp backend holds at most {MAX_SEQUENCES} rows at once; {count} more were asked for"
            )
        want_cells = self.n_cells
        while want_cells < cells:
            want_cells *= 2
        if want_seq != self.n_seq or want_cells != self.n_cells:
            need = want_seq * want_cells * self.kv_bytes
            if need > self.max_kv_bytes:
                raise ParameterError(
                    "max_tokens",
                    f"the llama.cpp context would need {want_seq} sequences × {want_cells} cells of keys/values "
                    f"({need / 2**30:.1f} GiB; every sequence is sized for the longest row), over its budget of "
                    f"{self.max_kv_bytes / 2**30:.1f} GiB (half this machine's memory): ask for fewer rows "
                    f"({count} asked) or shorter ones ({cells} positions asked)",
                )
            self._rebuild(want_cells, want_seq)
        start = self._run(count)
        assert start is not None
        ids = list(range(start, start + count))
        self.free.difference_update(ids)
        return ids

    def _rebuild(self, n_cells: int, n_seq: int) -> None:
        """A larger context; live sequences move over through their saved state.

        The prefix caches are cleared first (their holders are spare sequences a rebuild
        would only have to carry).
        """
        for cache in list(self.caches):
            cache.clear()
        lib, old, n_old = self.lib, self.ctx, self.n_seq
        states = {s: self._save(s, old) for s in set(range(self.n_seq)) - self.free}
        self._build(n_cells, n_seq)
        lib.llama_free(old)
        for s, buf in states.items():
            data = _restream(bytes(buf), s, n_old, n_seq)
            self._load(s, (ctypes.c_uint8 * len(data)).from_buffer_copy(data))

    def _save(self, s: int, ctx: Any = None) -> Any:
        """Sequence ``s``'s cells (positions, keys, values) as llama.cpp serialises them (a ctypes array)."""
        lib, ctx = self.lib, ctx or self.ctx
        size = lib.llama_state_seq_get_size(ctx, s)
        buf = (ctypes.c_uint8 * size)()
        lib.llama_state_seq_get_data(ctx, buf, size, s)
        return buf

    def _load(self, s: int, buf: Any) -> None:
        """Sequence ``s`` (empty) becomes the saved ``buf``, its cells from the start of its stream."""
        if self.lib.llama_state_seq_set_data(self.ctx, buf, len(buf), s) == 0:
            raise RuntimeError(f"llama.cpp could not restore a saved sequence into sequence {s}")

    def touch(self, seqs: Any) -> None:
        """Sequences whose cells just changed (a forward wrote to them)."""
        for s in seqs:
            self.version[int(s)] = self.version.get(int(s), 0) + 1

    def copy(self, src: int, dsts: list[int], end: int = -1) -> None:
        """Each of ``dsts`` becomes positions ``[0, end)`` of ``src`` (all of it for -1).

        The cells are copied (a stream per sequence shares none), read once, written in
        position order from the start of each destination's stream.
        """
        if not dsts:
            return
        lib, data = self.lib, self._save(src)
        for d in dsts:
            lib.llama_memory_seq_rm(self.mem, d, -1, -1)
            self._load(d, data)
            if end >= 0:
                lib.llama_memory_seq_rm(self.mem, d, end, -1)
        self.touch(dsts)

    def release(self, seqs: list[int]) -> None:
        """Give sequences back (their cells are freed)."""
        if self.ctx is None:
            return
        for s in seqs:
            self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
        self.touch(seqs)
        self.free.update(seqs)

    # -- prefix-cache holders --------------------------------------------------------------
    def attach(self, cache: Any) -> None:
        """Keep ``cache``'s blocks in this context: they are freed when evicted, cleared, or
        when the cache is garbage-collected."""
        if cache in self.caches:
            return
        self.caches.add(cache)
        cache.on_evict = _drop_held
        weakref.finalize(cache, _drop_all, cache.payloads())

    def _evict_one(self) -> bool:
        """Evict one least-recently-used block of an attached prefix cache; False if none holds any."""
        return any(cache.evict_lru() for cache in list(self.caches))

    def hold(self, seq: int, start: int, end: int) -> HeldBlock | None:
        """Block ``[start, end)`` (sazanami positions) of ``seq`` for the prefix cache: ``seq`` is
        copied to a spare sequence once per state of it; None when no spare id is free
        (holders never grow the context)."""
        p0 = 0 if start == 0 else start + self.bos_offset  # the first block keeps BOS
        p1 = end + self.bos_offset
        if self.ctx is None:
            return None
        key = (seq, self.version.get(seq, 0))
        holder = self.holders.get(key)
        if holder is None:
            if not self.free:
                return None
            h = max(self.free)  # from the top: rows take runs from the bottom
            self.free.discard(h)
            self.copy(seq, [h])
            holder = self.holders[key] = _Holder(h, key)
        holder.blocks += 1
        return HeldBlock(self, holder, start, end, p0, p1)

    def drop(self, block: HeldBlock) -> None:
        """A block left the cache; a holder without blocks gives its sequence back."""
        holder = block.holder
        if self.ctx is None or self.holders.get(holder.key) is not holder:
            return
        holder.blocks -= 1
        if holder.blocks == 0:
            del self.holders[holder.key]
            self.release([holder.seq])

    def close(self) -> None:
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.ctx = None


class SeqCache:
    """Rows of a llama.cpp context: row ``b`` is sequence ``seqs[b]``.

    A cache's sequences are consecutive ids (in any order), so its rows decode in one pass.
    It owns them and frees them when dropped; ``select`` hands them to the new cache (this
    one is empty afterwards, as the engine and beam search replace a cache by its
    selection); ``narrow`` is a view that owns nothing.
    """

    def __init__(self, pool: SequencePool, seqs: list[int], capacity: int, row_cells: int, owner: bool = True) -> None:
        self.pool = pool
        self.seqs = seqs
        self.capacity = capacity
        self.row_cells = row_cells
        """KV cells per row: ``capacity`` plus BOS where the model has one."""
        if owner:
            weakref.finalize(self, _release, pool, seqs)

    @property
    def batch(self) -> int:
        return len(self.seqs)

    def select(self, rows: torch.Tensor) -> SeqCache:
        """A cache holding ``rows`` in that order; a row picked twice is copied.

        Rows keep their sequence where it stays inside the new cache's run of ids; the
        others are copied into the run's free ids (at most one copy per dropped or repeated row).
        """
        pool, order = self.pool, [int(r) for r in rows]
        if any(not 0 <= r < len(self.seqs) for r in order):
            raise IndexError(f"rows {order} outside a cache of {len(self.seqs)} rows")
        old, n = self.seqs, len(order)
        base = min(old, default=0)
        grow = list(range(base + len(old), base + n))
        if n <= len(old):
            run = list(range(base, base + n))
        elif all(s in pool.free for s in grow):
            pool.free.difference_update(grow)
            run = list(range(base, base + n))
        else:
            run = pool.take(n, self.row_cells)
        out, moves, spare = [-1] * n, [], set(run)
        for i, r in enumerate(order):
            s = old[r]
            if s in spare:
                spare.discard(s)
                out[i] = s  # stays where it is
            else:
                moves.append((i, s))
        # ids of the run nobody keeps: new ones, or rows that were dropped (nothing to read there)
        spare = sorted(spare)
        for (i, s), d in zip(moves, spare):
            pool.copy(s, [d])
            out[i] = d
        pool.release([s for s in old if s not in set(out)])
        self.seqs.clear()  # handed over: this cache's finalizer now frees nothing
        return SeqCache(pool, out, self.capacity, self.row_cells)

    def narrow(self, row: int, count: int = 1) -> SeqCache:
        """A view of ``count`` rows from ``row``: writes go to this cache's sequences."""
        return SeqCache(self.pool, self.seqs[row : row + count], self.capacity, self.row_cells, owner=False)

    def copy_rows(self, src: SeqCache, src_row: int, dst_rows: torch.Tensor, length: int) -> None:
        """Rows ``dst_rows`` become the first ``length`` positions of ``src`` row ``src_row``."""
        dsts = [self.seqs[r] for r in dst_rows.tolist()]
        self.pool.copy(src.seqs[src_row], dsts, length + self.pool.bos_offset)

    def trim(self, row: int, length: int) -> None:
        """``row`` keeps its first ``length`` positions (a rejected draft's cells are removed)."""
        seq = self.seqs[row]
        self.pool.lib.llama_memory_seq_rm(self.pool.mem, seq, length + self.pool.bos_offset, -1)
        self.pool.touch([seq])

    def read_block(self, row: int, start: int, end: int) -> tuple[HeldBlock | None, int]:
        """Positions ``[start, end)`` of ``row`` for the prefix cache (a :class:`HeldBlock`), and
        the block's bytes of keys/values; ``(None, 0)`` when the context has no spare sequence id."""
        block = self.pool.hold(self.seqs[row], start, end)
        return (block, (end - start) * self.pool.kv_bytes) if block is not None else (None, 0)

    def write_blocks(self, row: int, blocks: list[HeldBlock]) -> int:
        """``row`` becomes the consecutive cached ``blocks`` from position 0 (one copy, from the
        last block's holder, which holds the whole prefix); returns the positions written."""
        pool, at = self.pool, 0
        for b in blocks:
            if b.start != at or b.pool is not pool:
                raise ValueError(f"block [{b.start}, {b.end}) does not continue a prefix of {at} positions here")
            at = b.end
        if blocks:
            pool.copy(blocks[-1].holder.seq, [self.seqs[row]], blocks[-1].p1)
        else:
            pool.lib.llama_memory_seq_rm(pool.mem, self.seqs[row], -1, -1)
            pool.touch([self.seqs[row]])
        return at


def _half_memory() -> int:
    """Half this machine's physical memory in bytes (1 TiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _restream(blob: bytes, seq: int, n_old: int, n_new: int) -> bytes:
    """A sequence's saved state re-addressed from a context of ``n_old`` streams to ``n_new``.

    llama.cpp's per-sequence state is an 8-byte header, the stream count, then a cell count
    per stream (only the sequence's own stream has cells, and its cells and data follow its
    count); it refuses a state whose stream count differs from the context's, so the empty
    streams' counts are rewritten for the larger context.
    """
    head, tail = 12 + 4 * seq, 4 * (n_old - 1 - seq)
    n_stream, *before = struct.unpack_from(f"<{1 + seq}I", blob, 8)
    if n_stream != n_old or any(before) or any(blob[len(blob) - tail :]):
        raise RuntimeError("llama.cpp's sequence state has an unexpected layout: the context cannot grow")
    body = blob[head : len(blob) - tail]  # the sequence's cell count, cells and data
    return blob[:8] + struct.pack("<I", n_new) + bytes(4 * seq) + body + bytes(4 * (n_new - 1 - seq))


def _release(pool: SequencePool, seqs: list[int]) -> None:
    pool.release(list(seqs))


def _drop_held(block: Any) -> None:
    """A prefix cache's ``on_evict`` for llama.cpp blocks (other payloads hold nothing to free)."""
    if isinstance(block, HeldBlock):
        block.pool.drop(block)


def _drop_all(blocks: Any) -> None:
    """Free the blocks a garbage-collected prefix cache still held."""
    for b in list(blocks):
        _drop_held(b)
