"""The drafts of an engine batch: each row's sources, n-gram index and draft length.

For the rows of one sampling loop, :class:`Drafter` keeps, per row, an :class:`NgramIndex`
of its prompt and output (prompt lookup; its siblings read it too), its opened corpus index
and its :class:`DraftLength`. Each step, :meth:`Drafter.propose` gives each row the draft of
its longest match among its sources (ties: prompt, then corpus, then siblings), cut to its
adaptive length and to the ``room`` the engine allows (draws left, context);
:meth:`Drafter.observe` feeds back what the row step accepted.
"""

from __future__ import annotations

from typing import Any

from sazanami.sampling.rows import RowRequest
from sazanami.speculative.adaptive import DraftLength
from sazanami.speculative.corpus import WINDOW, CorpusIndex, open_index
from sazanami.speculative.ngrams import MAX_NGRAM, NgramIndex


class Drafter:
    """Per-row draft state for the rows of one engine batch (``rows[i]`` is batch row i)."""

    def __init__(self, requests: list[RowRequest], tokenizer: Any) -> None:
        self.specs = [r.params.speculative for r in requests]
        self.prompt_ids = [r.prompt_ids for r in requests]
        self.prompts = [len(r.prompt_ids) for r in requests]
        need_index = [s is not None and ("prompt" in s.sources or "siblings" in s.sources) for s in self.specs]
        # a row's siblings read its index: every row of a request that drafts from siblings has one
        self.index: list[NgramIndex | None] = [
            NgramIndex(r.prompt_ids) if want else None for r, want in zip(requests, need_index)
        ]
        self.corpus: list[CorpusIndex | None] = [
            open_index(s.corpus, tokenizer) if s is not None and s.corpus is not None else None for s in self.specs
        ]
        self.length = [DraftLength(s.max_draft) if s is not None else None for s in self.specs]
        families: dict[tuple[int, ...], list[int]] = {}
        for b, r in enumerate(requests):
            families.setdefault(tuple(r.prompt_ids), []).append(b)
        self.family = [families[tuple(r.prompt_ids)] for r in requests]
        """Batch rows with the same prompt (siblings), in this batch's numbering."""
        self.alive = list(range(len(requests)))
        """Current batch row → original row (rows leave the batch when they finish)."""

    def select(self, keep: list[int]) -> None:
        """Keep batch rows ``keep`` (the others finished)."""
        self.alive = [self.alive[i] for i in keep]

    def _sync(self, b: int, tokens: list[int]) -> NgramIndex | None:
        """Original row ``b``'s index brought up to its output ``tokens``."""
        index = self.index[b]
        if index is None:
            return None
        have = len(index) - self.prompts[b]
        if have > len(tokens) or (have and index.seq[-1] != tokens[have - 1]):
            index.truncate(self.prompts[b] + min(have, len(tokens)) - 1)  # a token was replaced
            have = len(index) - self.prompts[b]
        index.extend(tokens[have:])
        return index

    def propose(self, outputs: list[list[int]], room: list[int]) -> list[list[int]]:
        """Each batch row's draft: ``outputs[i]`` its tokens so far (the last is the token it
        feeds next), at most ``room[i]`` tokens (0: none)."""
        for i, b in enumerate(self.alive):
            self._sync(b, outputs[i])
        drafts: list[list[int]] = []
        for i, b in enumerate(self.alive):
            spec, length = self.specs[b], self.length[b]
            if spec is None or length is None or room[i] <= 0:
                drafts.append([])
                continue
            k = min(length.want(), room[i])
            if k <= 0:
                drafts.append([])
                continue
            query = self._query(b, outputs[i])
            best: tuple[int, list[int]] = (0, [])
            if "prompt" in spec.sources:
                best = self.index[b].lookup(query, k)  # type: ignore[union-attr]
            corpus = self.corpus[b]
            if corpus is not None:
                found = corpus.lookup(query, k)
                if found[0] > best[0] and found[1]:
                    best = found
            if "siblings" in spec.sources:
                for s in self.family[b]:
                    index = self.index[s]
                    if s == b or index is None:  # a finished sibling's whole output stays readable
                        continue
                    found = index.lookup(query, k)
                    if found[0] > best[0] and found[1]:
                        best = found
            drafts.append(best[1])
        return drafts

    def _query(self, b: int, tokens: list[int]) -> list[int]:
        """The row's last tokens (prompt included), as many as a match may use."""
        n = max(MAX_NGRAM, WINDOW)
        if len(tokens) >= n:
            return tokens[-n:]
        return list(self.prompt_ids[b][len(tokens) - n :]) + tokens

    def alphas(self) -> list[float]:
        """Each batch row's chance that its next drafted token is accepted (0 for a row that does not draft)."""
        return [0.0 if (n := self.length[b]) is None else n.alpha() for b in self.alive]

    def observe(self, drafts: list[list[int]], accepted: list[int]) -> None:
        """The row step kept ``accepted[i]`` of batch row i's ``drafts[i]``."""
        for i, b in enumerate(self.alive):
            length = self.length[b]
            if length is not None:
                length.observe(len(drafts[i]), accepted[i])
