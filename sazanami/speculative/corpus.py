"""A corpus index: a token-level suffix array over documents, memory-mapped (REST's datastore).

``sazanami index FILES|DIR -o NAME`` tokenizes the documents with the model's tokenizer and
writes a folder ``NAME``:

- ``header.json`` — :data:`FORMAT`, the tokenizer's hash (:func:`tokenizer_hash`), the token
  count, the window, the documents (name, first and end token);
- ``tokens.u32`` — the documents' tokens one after another, each followed by :data:`SENTINEL`,
  then :data:`WINDOW` more sentinels (a window read at the end stays inside the file);
- ``suffixes.u32`` — every token position, sorted by the :data:`WINDOW` tokens that start there
  (a window ends at its document's sentinel, the largest value): a suffix array truncated at
  the window, all a lookup compares.

The build is streamed: documents are tokenized in pieces of :data:`TEXT_CHUNK` characters cut
at line ends and appended to ``tokens.u32``; positions are sorted in groups of at most
:data:`SHARD` that share no first two tokens (buckets of consecutive bigrams, found by one
counting pass), each group gathered by a scan of the memory-mapped tokens, sorted in memory and
appended — so memory stays in O(:data:`SHARD` × :data:`WINDOW`) (a single bigram more frequent
than :data:`SHARD` makes a larger group) while the corpus is on disk.

A lookup (:meth:`CorpusIndex.lookup`) finds the longest suffix of a row's recent tokens that
occurs in the corpus (a binary search over the match length, each length a binary search of the
suffix array) and drafts what follows that occurrence, up to its document's end.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.errors import ParameterError

FORMAT = 1
"""The index layout this code reads and writes (bumped when the files change)."""
SENTINEL = 0xFFFFFFFF
"""After each document: never a token, larger than every token (windows end there)."""
WINDOW = 32
"""Tokens a suffix is sorted by and a lookup matches at most."""
SHARD = 1 << 20
"""Positions sorted in memory at once (a group of bigram buckets)."""
TEXT_CHUNK = 1 << 20
"""Characters tokenized at once (cut at a line end, so tokens rarely straddle a cut)."""
SCAN = 1 << 24
"""Tokens read per step of a scan over ``tokens.u32``."""
MIN_MATCH = 2
"""Shortest match that drafts."""

_HASHES: dict[int, tuple[Any, str]] = {}


def tokenizer_hash(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's vocabulary (size and every token's text): an index is usable
    with exactly the tokenizers that agree on it (cached per tokenizer object)."""
    hit = _HASHES.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    h = hashlib.sha256(str(tokenizer.vocab_size).encode())
    for t in range(tokenizer.vocab_size):
        h.update(tokenizer.token_text(t).encode("utf-8", errors="surrogatepass") + b"\x00")
    _HASHES[id(tokenizer)] = (tokenizer, h.hexdigest())
    return h.hexdigest()


@dataclass(frozen=True)
class Header:
    """What ``header.json`` holds."""

    format: int
    tokenizer: str
    tokens: int
    """Entries of ``tokens.u32`` before the trailing window of sentinels (documents + sentinels)."""
    window: int
    documents: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "tokenizer": self.tokenizer,
            "tokens": self.tokens,
            "window": self.window,
            "documents": self.documents,
        }


def corpus_files(paths: list[str | Path]) -> list[Path]:
    """The files of ``paths`` (a folder: its files, recursively, hidden ones skipped), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise ParameterError("files", f"no file or folder at {p}")
    if not out:
        raise ParameterError("files", f"no files to index in {', '.join(map(str, paths))}")
    return out


def _text_chunks(path: Path) -> Iterator[str]:
    """The file's text in pieces of about :data:`TEXT_CHUNK` characters, cut after a newline."""
    rest = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            block = f.read(TEXT_CHUNK)
            if not block:
                break
            text = rest + block
            cut = text.rfind("\n")
            if cut < 0 or cut == len(text) - 1:
                rest, text = "", text
            else:
                rest, text = text[cut + 1 :], text[: cut + 1]
            if text:
                yield text
    if rest:
        yield rest


def build_index(paths: list[str | Path], out: str | Path, tokenizer: Any, shard: int = SHARD) -> Header:
    """Tokenize ``paths`` and write the index folder ``out`` (see the module docstring)."""
    if shard < 1:
        raise ParameterError("shard", f"shard must be in [1, inf), got {shard}")
    files = corpus_files(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("header.json", "tokens.u32", "suffixes.u32"):
        (out / name).unlink(missing_ok=True)  # a half-written index has no header
    documents, n = [], 0
    with open(out / "tokens.u32", "wb") as f:
        for path in files:
            start = n
            for text in _text_chunks(path):
                ids = np.asarray(tokenizer.encode(text), dtype=np.uint32)
                f.write(ids.tobytes())
                n += len(ids)
            f.write(np.uint32(SENTINEL).tobytes())
            n += 1
            documents.append({"name": str(path), "start": start, "end": n - 1})
            if n >= SENTINEL - WINDOW:
                raise ParameterError("files", f"the corpus has over {SENTINEL - WINDOW} tokens: index it in parts")
        f.write(np.full(WINDOW, SENTINEL, dtype=np.uint32).tobytes())
    tokens = np.memmap(out / "tokens.u32", dtype=np.uint32, mode="r")
    with open(out / "suffixes.u32", "wb") as f:
        for lo, hi in _groups(tokens, n, shard):
            f.write(_sorted_group(tokens, n, lo, hi).tobytes())
    del tokens
    header = Header(FORMAT, tokenizer_hash(tokenizer), n, WINDOW, documents)
    tmp = out / "header.json.tmp"
    tmp.write_text(json.dumps(header.to_dict(), indent=1))
    os.replace(tmp, out / "header.json")  # the header last: its presence means the index is whole
    return header


def _bigrams(tokens: np.ndarray, a: int, b: int) -> np.ndarray:
    """Keys (first token · 2³² + second) of positions [a, b) (uint64)."""
    return (tokens[a:b].astype(np.uint64) << np.uint64(32)) | tokens[a + 1 : b + 1].astype(np.uint64)


def _groups(tokens: np.ndarray, n: int, shard: int) -> Iterator[tuple[int, int]]:
    """Inclusive ranges of bigram keys, in order, each covering at most ``shard`` positions
    (or one key); positions at a sentinel are left out."""
    keys = np.zeros(0, np.uint64)
    counts = np.zeros(0, np.int64)
    for a in range(0, n, SCAN):
        k = _bigrams(tokens, a, min(n, a + SCAN))
        k = k[(k >> np.uint64(32)) != SENTINEL]
        u, c = np.unique(k, return_counts=True)
        keys, inv = np.unique(np.concatenate([keys, u]), return_inverse=True)
        merged = np.zeros(len(keys), np.int64)
        np.add.at(merged, inv, np.concatenate([counts, c]))
        counts = merged
    total, lo = 0, 0
    for i, c in enumerate(counts.tolist()):
        if total and total + c > shard:
            yield int(keys[lo]), int(keys[i - 1])
            total, lo = 0, i
        total += c
    if total:
        yield int(keys[lo]), int(keys[-1])


def _sorted_group(tokens: np.ndarray, n: int, lo: int, hi: int) -> np.ndarray:
    """Positions whose bigram key is in [lo, hi], sorted by their windows (uint32)."""
    found = []
    for a in range(0, n, SCAN):
        k = _bigrams(tokens, a, min(n, a + SCAN))
        found.append(np.flatnonzero((k >= np.uint64(lo)) & (k <= np.uint64(hi))).astype(np.int64) + a)
    pos = np.concatenate(found)
    win = tokens[pos[:, None] + np.arange(WINDOW)]  # (m, WINDOW)
    win[np.cumsum(win == SENTINEL, axis=1) > 0] = SENTINEL  # a window ends at its document's end
    pairs = (win[:, 0::2].astype(np.uint64) << np.uint64(32)) | win[:, 1::2].astype(np.uint64)  # (m, WINDOW / 2)
    order = np.lexsort(pairs.T[::-1])  # lexsort's last key is the primary one
    return pos[order].astype(np.uint32)


class CorpusIndex:
    """An index folder opened for lookups (memory-mapped; nothing is read until a lookup)."""

    def __init__(self, path: str | Path, tokenizer: Any) -> None:
        """Open ``path``; a missing, partial, stale or foreign index raises :class:`ParameterError`
        naming ``speculative.corpus``."""
        self.path = path = Path(path)
        param = "speculative.corpus"
        head = path / "header.json"
        if not head.is_file():
            raise ParameterError(
                param, f"no corpus index at {path} (no header.json): build one with `sazanami index FILES -o {path}`"
            )
        try:
            data = json.loads(head.read_text())
            self.header = Header(**data)
        except (ValueError, TypeError) as exc:
            raise ParameterError(
                param, f"the corpus index at {path} has an unreadable header ({exc}): rebuild it"
            ) from None
        h = self.header
        if h.format != FORMAT:
            raise ParameterError(
                param,
                f"the corpus index at {path} has format {h.format}; this sazanami reads format {FORMAT}: rebuild it",
            )
        if h.window != WINDOW:
            raise ParameterError(param, f"the corpus index at {path} has window {h.window}, not {WINDOW}: rebuild it")
        mine = tokenizer_hash(tokenizer)
        if h.tokenizer != mine:
            raise ParameterError(
                param,
                f"the corpus index at {path} was built for another tokenizer ({h.tokenizer[:12]}…; "
                f"this model's is {mine[:12]}…): rebuild it with this model",
            )
        sizes = {
            name: (path / name).stat().st_size if (path / name).is_file() else -1
            for name in ("tokens.u32", "suffixes.u32")
        }
        want = {"tokens.u32": 4 * (h.tokens + WINDOW), "suffixes.u32": 4 * (h.tokens - len(h.documents))}
        for name, size in sizes.items():
            if size != want[name]:
                raise ParameterError(
                    param, f"the corpus index at {path} is stale or incomplete: {name} has {size} bytes, "
                    f"its header wants {want[name]}: rebuild it",
                )  # fmt: skip
        self.tokens = np.memmap(path / "tokens.u32", dtype=np.uint32, mode="r")
        self.suffixes = np.memmap(path / "suffixes.u32", dtype=np.uint32, mode="r") if want["suffixes.u32"] else None

    def _first(self, pattern: list[int]) -> int | None:
        """A position where ``pattern`` occurs (its first suffix in order), or None."""
        sa, tokens, m = self.suffixes, self.tokens, len(pattern)
        if sa is None:
            return None
        lo, hi = 0, len(sa)
        while lo < hi:  # the first suffix whose window is ≥ the pattern
            mid = (lo + hi) // 2
            p = int(sa[mid])
            if tokens[p : p + m].tolist() < pattern:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(sa):
            return None
        p = int(sa[lo])
        return p if tokens[p : p + m].tolist() == pattern else None

    def lookup(self, query: list[int], limit: int) -> tuple[int, list[int]]:
        """(match length, draft of at most ``limit`` tokens): the continuation of the longest
        suffix of ``query`` in the corpus (at least :data:`MIN_MATCH` tokens), up to its
        document's end; ``(0, [])`` when none is found."""
        if limit <= 0 or len(query) < MIN_MATCH:
            return 0, []
        best, where = 0, None
        lo, hi = MIN_MATCH, min(WINDOW, len(query))
        while lo <= hi:  # an occurring suffix's own suffixes occur: the longest by bisection
            m = (lo + hi) // 2
            p = self._first(list(query[-m:]))
            if p is None:
                hi = m - 1
            else:
                best, where, lo = m, p, m + 1
        if where is None:
            return 0, []
        draft = self.tokens[where + best : where + best + limit].tolist()
        if SENTINEL in draft:
            draft = draft[: draft.index(SENTINEL)]
        return best, draft


_OPEN: dict[tuple[str, int], tuple[Any, CorpusIndex]] = {}


def open_index(path: str, tokenizer: Any) -> CorpusIndex:
    """The index at ``path`` for ``tokenizer``, opened once per process (reopened when its
    header changes, e.g. after a rebuild)."""
    key = (str(Path(path).resolve()), id(tokenizer))
    head = Path(path) / "header.json"
    stamp = head.stat().st_mtime_ns if head.is_file() else None
    hit = _OPEN.get(key)
    if hit is not None and hit[0] is tokenizer and getattr(hit[1], "_stamp", None) == stamp:
        return hit[1]
    index = CorpusIndex(path, tokenizer)
    index._stamp = stamp  # type: ignore[attr-defined]
    _OPEN[key] = (tokenizer, index)
    return index
