"""llama.cpp backend: any GGUF model through llama.cpp's own library (``llama-cpp-python``).

One ``llama_context`` holds every row, with a KV *stream per sequence* (``kv_unified``
off): a row's cells are its own, filled from the start of its stream in position order.
That order is what makes a row's tokens its own: llama.cpp's CPU flash attention visits a
row's cells in buffer order, so in one shared buffer a row whose new cells landed in holes
left by other rows summed its attention in another order (and flipped near-ties) — results
depended on what else had run. A :class:`SeqCache` is the list of sequence ids its rows own,
a run of consecutive ids (llama.cpp decodes the streams of a batch in one pass only when
their ids are consecutive and in ascending order; :meth:`LlamaCppBackend.forward` sorts the
batch); every row of a step advances in **one** ``llama_decode`` and the logits of all rows
are read as one array. Sampling stays sazanami's: the engine's sampler runs on the logits
returned here, exactly as on the torch backend.

Copies are physical: a prompt copied to n rows, a repeated beam, a prefix-cache block put
back are a row's saved state (``llama_state_seq_get_data``, read once) written into each
destination's stream and trimmed to the length wanted — proportional to the cells copied.

Sizes: every stream holds ``context`` cells (default 512) and there are ``sequences``
sequence ids (default 32); a cache that needs longer rows or more consecutive ids rebuilds the
context larger (doubling; at most :data:`MAX_SEQUENCES` ids) and the live sequences move over.

Prefix cache: a block is a position range of a row copied into a spare *holder* sequence
(:class:`HeldBlock`); one copy serves every block stored from that state of the row, and the
last block of a lookup alone restores the whole prefix. Holders take the highest free ids
(rows take runs from the lowest); rows that need ids evict blocks first (least recently
used), and a rebuild clears the cache.

Hidden-state noise needs a hook inside the forward pass, which llama.cpp's graph does
not offer: it raises :class:`ParameterError` naming this backend (see :data:`CAPABILITIES`).
Embedding noise enters through the batch's ``embd`` input: the rows' token embeddings are
read from the GGUF (:class:`TokenEmbeddings`), perturbed by the engine's hook and decoded
in place of the tokens — for the architectures whose input scaling is known here.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import struct
import sys
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sazanami.backends import Capabilities, HiddenHook
from sazanami.backends.tokenizer import Tokenizer
from sazanami.errors import ModelNotFoundError, ParameterError

CAPABILITIES = Capabilities(
    backend="llamacpp",
    fluctuation_points=("temperature", "logits", "draw", "embedding", "beams"),
    islands=True,
    beams=True,
)
"""What this backend runs: noise on temperature, logits, the draw and the input embeddings
(architectures in :data:`EMBEDDING_SCALE`), stochastic beams, islands."""

EMBEDDING_SCALE = {"llama": lambda n_embd: 1.0, "gemma3": lambda n_embd: math.sqrt(n_embd)}
"""Architectures whose token input is ``embedding × scale`` and nothing else (checked in
llama.cpp's graph code): the ``embd`` input then reproduces the token input exactly."""

GEMMA_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format, for Gemma GGUFs that carry no chat template (base models)."""

BATCH = 512
"""Tokens per ``llama_decode``; longer forwards (prompts) go in pieces of this size."""

ROW_PIECE = 63
"""Tokens of one row per ``llama_decode``. From 64 tokens of one sequence in a decode,
llama.cpp's CPU attention takes another kernel whose round-off differs (measured on
0.3.36: keys from 64-token pieces differ from one-token steps, pieces of 2…63 are
bit-identical), so a position's keys/values would depend on how its prompt was split.
In pieces of at most this many, every position's keys/values are the same however they
were computed — one token at a time, in a prefill, or taken from the prefix cache (with one
thread; with more, a one-row decode step past 256 cells splits its attention over threads and
rounds differently — measured, see docs/guide/engine.md, *Prefix cache*)."""

MAX_SEQUENCES = 256
"""llama.cpp's ``LLAMA_MAX_SEQ``: sequences (rows alive at once) one context can hold."""


_LOG_CALLBACK: Any = None


def _lib() -> Any:
    """The ``llama_cpp`` bindings, with llama.cpp's logging kept to errors."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelNotFoundError(
            "the llama.cpp backend needs llama-cpp-python: run `make fast` (builds it without AMX)"
        ) from exc
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:  # llama.cpp logs every load to stderr: keep its errors only

        @llama_cpp.llama_log_callback
        def errors_only(level: int, text: bytes, user_data: Any) -> None:
            if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml.h)
                sys.stderr.write(text.decode("utf-8", errors="replace"))

        _LOG_CALLBACK = errors_only
        llama_cpp.llama_log_set(errors_only, ctypes.c_void_p(0))
    return llama_cpp


def available() -> bool:
    """Whether the llama.cpp bindings are installed (without importing them)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def physical_cores() -> int:
    """Physical CPU cores (distinct (package, core) pairs in /proc/cpuinfo), else ``os.cpu_count()``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return len(cores) or os.cpu_count() or 1


class GGUFTokenizer(Tokenizer):
    """llama.cpp's own tokenizer of a GGUF model, with its chat template (from the GGUF metadata).

    ``encode`` never adds BOS: the backend puts BOS at position 0 of every sequence of a
    model that wants one (so the chat template renders ``bos_token`` as empty).
    """

    def __init__(self, lib: Any, vocab: Any, chat_template: str | None) -> None:
        self._lib = lib
        self._vocab = vocab
        n = lib.llama_vocab_n_tokens(vocab)
        self._n = n
        eos = {t for t in range(n) if lib.llama_vocab_is_eog(vocab, t)}
        super().__init__(None, chat_template, eos, None)  # type: ignore[arg-type]
        self._ll: dict[int, Any] = {}

    @property
    def vocab_size(self) -> int:
        return self._n

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings in it are recognised; no BOS added."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (self._lib.llama_token * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        if n < 0:  # buffer too small: -n tokens needed
            size = -n
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        return list(buf[:n])

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        if not ids:
            return ""
        arr = (self._lib.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, not skip_special)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n + 1
        raise RuntimeError("llama_detokenize failed")

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id], skip_special=False)

    def lltokenizer(self, n_vocab: int) -> Any:
        """llguidance's tokenizer over llama.cpp's vocabulary (for grammar islands; built once)."""
        if n_vocab not in self._ll:
            from llguidance.llamacpp import lltokenizer_from_vocab

            with warnings.catch_warnings():  # it calls a deprecated alias once per token
                warnings.simplefilter("ignore", DeprecationWarning)
                self._ll[n_vocab] = lltokenizer_from_vocab(self._vocab, n_vocab, sorted(self.eos_token_ids))
        return self._ll[n_vocab]


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class TokenEmbeddings:
    """Rows of a GGUF's ``token_embd.weight``, dequantised on demand (memory-mapped file).

    Parses only the GGUF header (the ``gguf`` package's reader takes seconds on a large
    vocabulary); rows are dequantised with ``gguf.quants``.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, _version, n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
        if magic != 0x46554747:  # b"GGUF"
            raise ModelNotFoundError(f"{path} is not a GGUF file")
        pos, align = 24, 32
        for _ in range(n_kv):
            key, pos = _string(buf, pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            if key == "general.alignment":
                (align,) = struct.unpack_from("<I", buf, pos + 4)
            pos = _skip(buf, pos + 4, vtype)
        found = None
        for _ in range(n_tensors):
            name, pos = _string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            qtype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            if name == "token_embd.weight":
                found = (dims, qtype, offset)
        if found is None:
            raise ModelNotFoundError(f"{path} has no token_embd.weight")
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        (n_embd, n_vocab), qtype, offset = found
        self.qtype = GGMLQuantizationType(qtype)
        block, size = GGML_QUANT_SIZES[self.qtype]
        start = -(-pos // align) * align + offset
        self.rows = np.frombuffer(buf, np.uint8, n_vocab * n_embd // block * size, start).reshape(n_vocab, -1)
        self.n_embd = n_embd

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings of ``ids`` (N,) → (N, C) float32."""
        from gguf.quants import dequantize

        return dequantize(self.rows[ids], self.qtype).reshape(len(ids), self.n_embd).astype(np.float32)


def _string(buf: Any, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8", errors="replace"), pos + 8 + n


def _skip(buf: Any, pos: int, vtype: int) -> int:
    """The offset after a GGUF metadata value of type ``vtype`` at ``pos``."""
    if vtype == 8:  # string
        return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
    if vtype == 9:  # array: element type, count, elements
        etype, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in _SCALARS:
            return pos + n * struct.calcsize(_SCALARS[etype])
        for _ in range(n):
            pos = _skip(buf, pos, etype)
        return pos
    return pos + struct.calcsize(_SCALARS[vtype])


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

    pool: _Pool
    holder: _Holder
    start: int
    end: int
    p0: int
    p1: int


class _Pool:
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

    def __init__(self, pool: _Pool, seqs: list[int], capacity: int, row_cells: int, owner: bool = True) -> None:
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


def _release(pool: _Pool, seqs: list[int]) -> None:
    pool.release(list(seqs))


def _drop_held(block: Any) -> None:
    """A prefix cache's ``on_evict`` for llama.cpp blocks (other payloads hold nothing to free)."""
    if isinstance(block, HeldBlock):
        block.pool.drop(block)


def _drop_all(blocks: Any) -> None:
    """Free the blocks a garbage-collected prefix cache still held."""
    for b in list(blocks):
        _drop_held(b)


class LlamaCppBackend:
    """A GGUF model run by llama.cpp, behind sazanami's :class:`~sazanami.backends.Backend` protocol."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = None,
        context: int = 512,
        sequences: int = 32,
    ) -> None:
        if threads is not None and threads < 1:
            raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"no GGUF file at {path}")
        lib = _lib()
        lib.llama_backend_init()
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        # no weight repacking: a repacked matmul runs a batch's tokens in groups of four through
        # another kernel than the rest, so a token's logits would depend on its place in the call
        # (measured on Qwen2.5-Coder's Q4_K weights: drafts verified in one call ≠ one-token steps)
        mp.use_extra_bufts = False
        model = lib.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            raise ModelNotFoundError(f"llama.cpp could not load {path}")
        self.lib, self.model, self.path = lib, model, path
        self.name = name or path.stem
        self.threads = threads or physical_cores()
        self.vocab = lib.llama_model_get_vocab(model)
        self.vocab_size = lib.llama_vocab_n_tokens(self.vocab)
        self.hidden_size = lib.llama_model_n_embd(model)
        self.num_layers = lib.llama_model_n_layer(model)
        self.bos = lib.llama_vocab_bos(self.vocab) if lib.llama_vocab_get_add_bos(self.vocab) else None
        self.bos_offset = 1 if self.bos is not None else 0
        """Positions in llama.cpp = sazanami's positions + this (BOS sits at position 0)."""
        self.max_positions = lib.llama_model_n_ctx_train(model) - self.bos_offset
        self.metadata = self._metadata()
        self.arch = self.metadata.get("general.architecture", "")
        template = lib.llama_model_chat_template(model, None)
        if template:
            chat = template.decode("utf-8")
        elif self.arch.startswith("gemma"):
            chat = GEMMA_TEMPLATE
        else:
            chat = None  # ChatML
        self.tokenizer = GGUFTokenizer(lib, self.vocab, chat)
        points = CAPABILITIES.fluctuation_points
        if self.arch not in EMBEDDING_SCALE:
            points = tuple(p for p in points if p != "embedding")
        self.capabilities = Capabilities("llamacpp", points, CAPABILITIES.islands, CAPABILITIES.beams)
        self._embeddings: TokenEmbeddings | None = None
        self.prefix_block = 1
        """Prefix-cache block, in tokens. Blocks cost nothing apart here (a holder is one copy of
        a row, whatever its blocks), so a row reuses every cached token but its last."""
        self.verifies_drafts = True
        """Speculative decoding: :meth:`forward` returns logits of every drafted position
        (``counts``) and :meth:`SeqCache.trim` removes a rejected draft's cells. Bit-identical to
        one-token steps within :meth:`draft_limits`, with one thread; with more, a one-row step
        past 512 cells splits its attention over the threads and near-ties can flip
        (docs/SPECULATIVE.md)."""
        self._regimes: tuple[int | None, bool] | None = None
        self.supports_prefix_cache = lib.llama_model_n_swa(model) == 0
        """Prefix blocks live in spare sequence ids (:meth:`SeqCache.read_block`); not for
        sliding-window models, whose window cache would keep the held cells."""
        self.pool = _Pool(lib, model, self.threads, context, sequences, self.bos_offset, self._kv_bytes())
        weakref.finalize(self, _close, self.pool, lib, model)
        self._alloc_batch(BATCH)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one position takes in llama.cpp's cache (see :meth:`_kv_bytes`)."""
        return self.pool.kv_bytes

    def _kv_bytes(self) -> int:
        """Keys and values of one token in llama.cpp's cache: every layer's KV heads, f16 (its default)."""
        lib, model = self.lib, self.model
        head = self.hidden_size // max(1, lib.llama_model_n_head(model))
        k = int(self.metadata.get(f"{self.arch}.attention.key_length") or head)
        v = int(self.metadata.get(f"{self.arch}.attention.value_length") or head)
        return self.num_layers * lib.llama_model_n_head_kv(model) * (k + v) * 2

    def attach_prefix_cache(self, cache: Any) -> None:
        """The engine's prefix cache keeps its blocks in this backend's context (:class:`HeldBlock`)."""
        self.pool.attach(cache)

    @property
    def label(self) -> str:
        """Which engine runs, for logs and the demo: ``llama.cpp (2 threads)``."""
        return f"llama.cpp ({self.threads} threads)"

    def _metadata(self) -> dict[str, str]:
        lib, model = self.lib, self.model
        out = {}
        buf = ctypes.create_string_buffer(1024)
        for i in range(lib.llama_model_meta_count(model)):
            lib.llama_model_meta_key_by_index(model, i, buf, 1024)
            key = buf.value.decode("utf-8", errors="replace")
            if key.startswith("tokenizer.ggml."):
                continue  # vocabulary arrays: long and not needed
            lib.llama_model_meta_val_str_by_index(model, i, buf, 1024)
            out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _alloc_batch(self, size: int) -> None:
        """One batch, reused: numpy arrays the ``llama_batch`` points into (filled without Python loops)."""
        lib = self.lib
        self._tok = np.zeros(size, dtype=np.int32)
        self._pos = np.zeros(size, dtype=np.int32)
        self._nseq = np.ones(size, dtype=np.int32)
        self._seq = np.zeros(size, dtype=np.int32)
        self._out = np.zeros(size, dtype=np.int8)
        seq_p = ctypes.POINTER(lib.llama_seq_id)
        base = self._seq.ctypes.data
        self._seq_ptrs = (seq_p * size)(*[ctypes.cast(base + 4 * i, seq_p) for i in range(size)])

    def _decode(
        self, tok: np.ndarray, pos: np.ndarray, seq: np.ndarray, out: np.ndarray, embd: np.ndarray | None = None
    ) -> np.ndarray:
        """One ``llama_decode`` of ≤ BATCH tokens (or their embeddings ``embd`` (n, C));
        returns the logits of the flagged ones (n_out, V)."""
        lib, n = self.lib, len(tok)
        self._tok[:n], self._pos[:n], self._seq[:n], self._out[:n] = tok, pos, seq, out
        batch = lib.llama_batch(
            n_tokens=n,
            token=None if embd is not None else self._tok.ctypes.data_as(ctypes.POINTER(lib.llama_token)),
            embd=None if embd is None else embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            pos=self._pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos)),
            n_seq_id=self._nseq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ptrs,
            logits=self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        rc = lib.llama_decode(self.pool.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc}; 1 = the KV cache is full)")
        n_out = int(out.sum())
        if not n_out:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        ptr = lib.llama_get_logits(self.pool.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.vocab_size)).copy()  # the buffer is reused

    def _embed(self, tok: np.ndarray, hook: HiddenHook, B: int, T: int) -> np.ndarray:
        """The model's input embeddings of ``tok`` (N,) with the hook's embedding noise: (N, C).

        The last B·T entries are the rows' tokens (any before them are BOS). Hidden-state
        noise cannot enter llama.cpp's graph: a hook that changes any layer's output is refused.
        """
        C = self.hidden_size
        probe = torch.zeros(B, T, C)
        if any(hook(layer, probe) is not probe for layer in range(self.num_layers)):
            raise ParameterError("fluctuation.hidden", self.capabilities.refusal("hidden"))
        if "embedding" not in self.capabilities.fluctuation_points:
            raise ParameterError(
                "fluctuation.embedding",
                f"embedding noise is not available on the llamacpp backend for architecture {self.arch!r} "
                f"(its input scaling is known for: {', '.join(EMBEDDING_SCALE)})",
            )
        if self._embeddings is None:
            self._embeddings = TokenEmbeddings(self.path)
        x = self._embeddings(tok) * EMBEDDING_SCALE[self.arch](C)  # (N, C)
        rows = torch.from_numpy(x[len(tok) - B * T :]).view(B, T, C)
        noisy = hook(-1, rows).reshape(B * T, C).float().numpy()
        return np.ascontiguousarray(np.concatenate([x[: len(tok) - B * T], noisy]), dtype=np.float32)

    def draft_limits(self, rows: int) -> tuple[int, int]:
        """Drafted tokens one forward of ``rows`` rows may carry beside each row's own token —
        (in all, per row) — such that every row's logits stay bit-identical to a plain step's.

        llama.cpp picks its matmul kernels by the tokens in a call: below some count (measured
        once, :meth:`call_regimes`) a call computes each token as a one-token call does, from it
        on another kernel rounds differently. A call with drafts must stay on the side of that
        count where the plain step (``rows`` tokens) is; per row, one piece (:data:`ROW_PIECE`).
        """
        threshold, uniform = self.call_regimes()
        per_row = ROW_PIECE - 1
        if rows >= BATCH:
            return 0, 0
        if threshold is None:
            return BATCH - rows, per_row
        if rows < threshold:
            return threshold - 1 - rows, per_row
        return (BATCH - rows, per_row) if uniform else (0, 0)

    def call_regimes(self) -> tuple[int | None, bool]:
        """(The fewest tokens in one call whose logits differ from one-token calls — None when
        calls of every size probed agree; whether all calls from that count on agree with each
        other.) Probed once per backend (a few dozen small decodes), by a text's first 16
        tokens run one at a time and in calls of every size up to 16, then 24, 32, 48 and 63."""
        if self._regimes is not None:
            return self._regimes
        text = "def kernel_probe(values):\n    return [v * 2 + 1 for v in values if v % 3]  # calls of every size\n"
        ids = np.array((self.tokenizer.encode(text) * 8)[:ROW_PIECE], dtype=np.int32)
        cache = self.new_cache(1, ROW_PIECE + 1)
        seq, off = cache.seqs[0], self.bos_offset

        def decode(start: int, n: int) -> np.ndarray:  # one call of ids[start:start + n]; logits of ≤ 16
            if start == 0:  # a fresh row (its BOS in a call of its own)
                self.lib.llama_memory_seq_rm(self.pool.mem, seq, -1, -1)
                if self.bos is not None:
                    self._decode(
                        np.array([self.bos], np.int32),
                        np.zeros(1, np.int32),
                        np.array([seq], np.int32),
                        np.zeros(1, np.int8),
                    )
            pos = np.arange(start, start + n, dtype=np.int32) + off
            out = (np.arange(start, start + n) < 16).astype(np.int8)
            return self._decode(ids[start : start + n], pos, np.full(n, seq, np.int32), out)

        one = np.concatenate([decode(t, 1) for t in range(16)])  # (16, V): one token per call
        sizes = [*range(2, 17), 24, 32, 48, ROW_PIECE]
        calls = {n: decode(0, n) for n in sizes}
        threshold = next((n for n in sizes if not np.array_equal(calls[n], one[: min(n, 16)])), None)
        ref = calls[max(threshold, 16)] if threshold is not None else None
        uniform = ref is None or all(np.array_equal(calls[n], ref[: len(calls[n])]) for n in sizes if n >= threshold)
        del cache  # its sequence goes back to the pool
        self._regimes = (threshold, uniform)
        return self._regimes

    def new_cache(self, batch: int, capacity: int) -> SeqCache:
        capacity = min(capacity, self.max_positions)
        per = capacity + self.bos_offset
        return SeqCache(self.pool, self.pool.take(batch, per), capacity, per)

    def forward(
        self,
        tokens: torch.Tensor,
        cache: SeqCache,
        starts: torch.Tensor,
        hidden_hook: HiddenHook | None = None,
        last_only: bool = True,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run ``tokens`` (B, T) at positions ``starts[b] + t`` of ``cache`` row b; float32 logits.

        Row ``b`` must hold exactly ``starts[b]`` positions before the call. All rows go
        in one ``llama_decode`` (split in :data:`BATCH`-token pieces only when longer).
        ``counts`` (B,): row b's first ``counts[b]`` tokens alone run (drafts of different
        lengths); its logits past them are zeros.
        """
        B, T = tokens.shape
        if B != cache.batch:
            raise ValueError(f"tokens has {B} rows, the cache {cache.batch}")
        if counts is not None and hidden_hook is not None:
            raise ValueError("ragged rows (counts) take no hidden hook")
        seqs = np.asarray(cache.seqs, dtype=np.int32)  # (B,)
        st = starts.numpy().astype(np.int32)  # (B,)
        tok = tokens.numpy().astype(np.int32)  # (B, T)
        pos = st[:, None] + np.arange(T, dtype=np.int32) + self.bos_offset  # (B, T)
        seq = np.repeat(seqs[:, None], T, axis=1)  # (B, T)
        n = np.full(B, T) if counts is None else counts.numpy().astype(np.int64)  # tokens each row runs
        fed = np.arange(T)[None, :] < n[:, None]  # (B, T)
        out = np.full((B, T), not last_only, dtype=np.int8) & fed
        out[np.arange(B), n - 1] = 1
        keep = fed.ravel()
        tok, pos, seq, out = tok.ravel()[keep], pos.ravel()[keep], seq.ravel()[keep], out.ravel()[keep]
        row_rank = np.tile(np.arange(T), B)[keep]  # each token's place in its row's part
        row_id = np.repeat(np.arange(B), T)[keep]
        fresh = np.flatnonzero(st == 0)
        for b in fresh:  # a sequence starting over: drop what it held
            self.lib.llama_memory_seq_rm(self.pool.mem, int(seqs[b]), -1, -1)
        lead = np.zeros(B, np.int64)  # tokens before the row's own in this call (its BOS)
        if self.bos is not None and len(fresh):
            # BOS at position 0 of each fresh row, before the row's tokens
            k = len(fresh)
            lead[fresh] = 1
            tok = np.concatenate([np.full(k, self.bos, np.int32), tok])
            pos = np.concatenate([np.zeros(k, np.int32), pos])
            seq = np.concatenate([seqs[fresh], seq])
            out = np.concatenate([np.zeros(k, np.int8), out])
            rank = np.concatenate([np.zeros(k, np.int64), row_rank + lead[row_id]])
        else:
            rank = row_rank  # each token's place in its row's part of this call
        embd = self._embed(tok, hidden_hook, B, T) if hidden_hook is not None else None  # (N, C)
        # decode order: rows' pieces of ROW_PIECE tokens, piece by piece; in a piece, streams in
        # ascending order (llama.cpp decodes consecutive streams in one pass only in that order)
        piece = rank // ROW_PIECE
        order = np.lexsort((rank, seq, piece))
        tok, pos, seq, out, piece = tok[order], pos[order], seq[order], out[order], piece[order]
        embd = None if embd is None else embd[order]
        bounds = [0]
        for edge in np.flatnonzero(np.diff(piece)) + 1:  # a call never holds two pieces of a row
            bounds.extend(range(bounds[-1] + BATCH, int(edge), BATCH))
            bounds.append(int(edge))
        bounds.extend(range(bounds[-1] + BATCH, len(tok), BATCH))
        bounds.append(len(tok))
        pieces = [
            self._decode(tok[a:b], pos[a:b], seq[a:b], out[a:b], None if embd is None else embd[a:b])
            for a, b in zip(bounds, bounds[1:])
        ]
        self.pool.touch(seqs)
        logits = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)  # (n_out, V), in decode order
        row_of = np.cumsum(out) - 1  # decode position → row of `logits`
        where = np.empty_like(order)
        where[order] = np.arange(len(order))  # caller's position → decode position
        logits = logits[row_of[where[np.flatnonzero(out[where])]]]  # back to the caller's order
        result = torch.from_numpy(logits)
        if last_only:
            return result
        if counts is None:
            return result.view(B, T, -1)
        full = torch.zeros(B, T, self.vocab_size)
        full[torch.from_numpy(fed)] = result
        return full


def _close(pool: _Pool, lib: Any, model: Any) -> None:
    pool.close()
    lib.llama_model_free(model)
