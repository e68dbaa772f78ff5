"""Exact speculative decoding: drafts from text the output copies, verified by the row's own sampler.

A row *drafts* up to k tokens it is likely to write next — the continuation of the longest
match of its recent tokens in its prompt and own output (:mod:`~sazanami.speculative.ngrams`),
in a corpus index (:mod:`~sazanami.speculative.corpus`) or in a sibling row of the same request
— and the engine feeds them with its next token in one forward pass. The row step
(:mod:`sazanami.engine.decode_step`) then draws position after position with the row's own sampler
and keeps a draft token only when the draw equals it, so the output is token for token that of
plain decoding; only the number of forward passes changes. How many tokens a row drafts
follows its acceptance history (:mod:`~sazanami.speculative.adaptive`).

Modules: :mod:`~sazanami.speculative.spec` (the ``speculative`` parameter),
:mod:`~sazanami.speculative.ngrams` (prompt lookup and siblings), :mod:`~sazanami.speculative.corpus`
(the suffix-array index ``sazanami index`` builds), :mod:`~sazanami.speculative.adaptive` (draft
length), :mod:`~sazanami.speculative.drafter` (the drafts of an engine batch).
"""

from sazanami.speculative.spec import MAX_DRAFT, SOURCES, Speculative

__all__ = ["MAX_DRAFT", "SOURCES", "Speculative"]
