"""Reading a GGUF file beside llama.cpp: its tokenizer (:class:`GGUFTokenizer`, through
llama.cpp's vocabulary) and its token embeddings (:class:`TokenEmbeddings`, read from the
file for embedding noise, since llama.cpp's graph takes perturbed embeddings but exposes none)."""

from __future__ import annotations

import ctypes
import mmap
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.backends.tokenizer import Tokenizer
from sazanami.errors import ModelNotFoundError


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
