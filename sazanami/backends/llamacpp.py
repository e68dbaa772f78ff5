"""llama.cpp backend: any GGUF model through llama.cpp's own library (``llama-cpp-python``).

One ``llama_context`` holds every row, with a KV *stream per sequence* (``kv_unified``
off): a row's cells are its own, filled from the start of its stream in position order.
That order is what makes a row's tokens its own: llama.cpp's CPU flash attention visits a
row's cells in buffer order, so in one shared buffer a row whose new cells landed in holes
left by other rows summed its attention in another order (and flipped near-ties) — results
depended on what else had run. A :class:`~sazanami.backends.llamacpp_cache.SeqCache` is the list of sequence ids its rows own,
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
(:class:`~sazanami.backends.llamacpp_cache.HeldBlock`); one copy serves every block stored from that state of the row, and the
last block of a lookup alone restores the whole prefix. Holders take the highest free ids
(rows take runs from the lowest); rows that need ids evict blocks first (least recently
used), and a rebuild clears the cache.

Hidden-state noise needs a hook inside the forward pass, which llama.cpp's graph does
not offer: it raises :class:`ParameterError` naming this backend (see :data:`CAPABILITIES`).
Embedding noise enters through the batch's ``embd`` input: the rows' token embeddings are
read from the GGUF (:class:`~sazanami.backends.gguf.TokenEmbeddings`), perturbed by the engine's hook and decoded
in place of the tokens — for the architectures whose input scaling is known here.

Modules: this one (the backend: loading, decoding, draft limits), :mod:`~sazanami.backends.llamacpp_cache`
(the sequence pool, the rows' caches, held prefix blocks), :mod:`~sazanami.backends.gguf`
(the GGUF's tokenizer and token embeddings).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sazanami.backends import Capabilities, HiddenHook
from sazanami.backends.gguf import GGUFTokenizer, TokenEmbeddings
from sazanami.backends.llamacpp_cache import BATCH, SeqCache, SequencePool
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

ROW_PIECE = 63
"""Tokens of one row per ``llama_decode``. From 64 tokens of one sequence in a decode,
llama.cpp's CPU attention takes another kernel whose round-off differs (measured on
0.3.36: keys from 64-token pieces differ from one-token steps, pieces of 2…63 are
bit-identical), so a position's keys/values would depend on how its prompt was split.
In pieces of at most this many, every position's keys/values are the same however they
were computed — one token at a time, in a prefill, or taken from the prefix cache (with one
thread; with more, a one-row decode step past 256 cells splits its attention over threads and
rounds differently — measured, see docs/guide/engine.md, *Prefix cache*)."""


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
        self.pool = SequencePool(lib, model, self.threads, context, sequences, self.bos_offset, self._kv_bytes())
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
        """The engine's prefix cache keeps its blocks in this backend's context (:class:`~sazanami.backends.llamacpp_cache.HeldBlock`)."""
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

    def draft_limits(self, rows: int, exact: bool = True) -> tuple[int, int]:
        """Drafted tokens one forward of ``rows`` rows may carry beside each row's own token —
        (in all, per row) — such that every row's logits stay bit-identical to a plain step's
        (``exact``; else only the batch and a row's piece bound them).

        llama.cpp picks its matmul kernels by the tokens in a pass: below some count (measured
        once, :meth:`call_regimes`) a pass computes each token as a one-token pass does, from it
        on another kernel rounds differently. A call with drafts must stay on the side of that
        count where the plain step (``rows`` tokens) is; per row, one piece (:data:`ROW_PIECE`).
        At ``rows`` ≥ the threshold that cannot be kept: llama.cpp splits a call whose rows
        carry different numbers of tokens into passes of equal-length pieces (one token of every
        row, then the drafts), and a pass of the drafts of a few rows is small enough for the
        other kernel — found by the bench (Qwen2.5-Coder, n = 16: drafted rows diverged). So
        exact drafts stop there (with no threshold, every pass agrees and drafts go on).
        """
        per_row = ROW_PIECE - 1
        if rows >= BATCH:
            return 0, 0
        if not exact:
            return BATCH - rows, per_row
        threshold, _ = self.call_regimes()
        if threshold is None:
            return BATCH - rows, per_row
        return (threshold - 1 - rows, per_row) if rows < threshold else (0, 0)

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


def _close(pool: SequencePool, lib: Any, model: Any) -> None:
    pool.close()
    lib.llama_model_free(model)
