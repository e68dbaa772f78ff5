"""Prompt lookup: the continuation of the longest suffix match in a row's prompt and output.

An :class:`NgramIndex` holds one token sequence (a row's prompt, then its output as it grows)
and, for every n-gram of :data:`MIN_NGRAM`…:data:`MAX_NGRAM` tokens whose next token is known,
where it last occurred. A lookup tries the query's last :data:`MAX_NGRAM` tokens, then fewer,
and drafts what followed the most recent occurrence (anchors: llama.cpp's lookup decoding,
vLLM's n-gram speculator, mlx-lm's prompt lookup). The same index answers a sibling row's
query (the rows of one request propose each other's continuations).
"""

from __future__ import annotations

MIN_NGRAM = 2
"""Shortest suffix matched: single tokens match almost anywhere and draft noise."""
MAX_NGRAM = 6
"""Longest suffix matched (a longer one rarely picks a better occurrence)."""
MAX_INDEXED = 1 << 17
"""Positions indexed per row at most (its first ones): the table holds at most
``(MAX_NGRAM − MIN_NGRAM + 1) × MAX_INDEXED`` entries, whatever the context."""


class NgramIndex:
    """The n-grams of one growing token sequence → the end of their latest occurrence."""

    def __init__(self, tokens: list[int] | tuple[int, ...] = ()) -> None:
        self.seq: list[int] = []
        self.table: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.seq)

    def extend(self, tokens: list[int] | tuple[int, ...]) -> None:
        """Append ``tokens``; each n-gram that now has a next token is indexed."""
        seq, table = self.seq, self.table
        for t in tokens:
            end = len(seq) - 1  # the n-grams ending here get their continuation: t
            seq.append(t)
            if end < 0 or end >= MAX_INDEXED:
                continue
            for n in range(MIN_NGRAM, min(MAX_NGRAM, end + 1) + 1):
                table[tuple(seq[end - n + 1 : end + 1])] = end

    def truncate(self, length: int) -> None:
        """Forget everything from position ``length`` on (a token was replaced): rebuilt."""
        if length < len(self.seq):
            kept = self.seq[:length]
            self.seq, self.table = [], {}
            self.extend(kept)

    def lookup(self, query: list[int], limit: int) -> tuple[int, list[int]]:
        """(match length, draft of at most ``limit`` tokens) for the longest suffix of ``query``
        found here with a continuation; ``(0, [])`` when none is."""
        if limit <= 0:
            return 0, []
        for n in range(min(MAX_NGRAM, len(query)), MIN_NGRAM - 1, -1):
            end = self.table.get(tuple(query[-n:]))
            if end is not None:
                return n, self.seq[end + 1 : end + 1 + limit]
        return 0, []
