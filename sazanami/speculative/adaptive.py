"""The adaptive draft length: how many tokens a row drafts next, from its acceptance history.

A draft costs a forward pass more positions (and, on llama.cpp, the output layer over the whole
vocabulary for each: 8.6 ms for one SmolLM2 step, 13 ms with one drafted token), so a row drafts
long only while its drafts are accepted: all accepted doubles the length (up to ``max_draft``);
a partial acceptance of a tokens sets it to a + 1; nothing accepted halves it and makes the row
wait before drafting again, the wait doubling with each failure in a row (up to
:data:`MAX_WAIT` steps). Text that does not copy thus drafts rarely and briefly.

The row's acceptance rate (:meth:`DraftLength.alpha`: each drafted position a trial, ended by
the first rejection, older drafts fading) tells :mod:`~sazanami.speculative.budget` how likely
each of its drafted tokens is to be kept.
"""

from __future__ import annotations

START = 4
"""The first draft's length (at most ``max_draft``)."""
MAX_WAIT = 32
"""Most steps a row waits after a rejected draft."""
FADE = 0.8
"""Weight left to a draft's trials after each newer draft."""


class DraftLength:
    """One row's draft length and wait (keeps state; see the module docstring)."""

    __slots__ = ("max_draft", "length", "wait", "backoff", "kept", "missed")

    def __init__(self, max_draft: int) -> None:
        self.max_draft = max_draft
        self.length = min(START, max_draft)
        self.wait = 0
        """Steps left before the row drafts again."""
        self.backoff = 0
        """The wait after the next rejected draft (doubles while drafts keep failing)."""
        self.kept = 0.0
        """Drafted tokens accepted (faded)."""
        self.missed = 0.0
        """Drafts cut short by a rejection (faded)."""

    def want(self) -> int:
        """Tokens to draft this step (0 while waiting); counts the step."""
        if self.wait > 0:
            self.wait -= 1
            return 0
        return self.length

    def observe(self, drafted: int, accepted: int) -> None:
        """The row's last draft of ``drafted`` tokens kept ``accepted`` of them."""
        if drafted <= 0:
            return
        self.kept = FADE * self.kept + accepted
        self.missed = FADE * self.missed + (accepted < drafted)
        if accepted >= drafted:
            self.length = min(self.max_draft, 2 * self.length)
            self.backoff = 0
        elif accepted > 0:
            self.length = min(self.max_draft, accepted + 1)
            self.backoff = 0
        else:
            self.length = max(1, self.length // 2)
            self.backoff = min(MAX_WAIT, max(1, 2 * self.backoff))
            self.wait = self.backoff

    def alpha(self) -> float:
        """The chance that the row's next drafted token is accepted, given the ones before it
        were: its faded trials under a Beta(1.5, 0.5) prior — ¾ before any draft, an optimistic
        start so that rows try drafting at all; a few drafts of its own outweigh it."""
        return (self.kept + 1.5) / (self.kept + self.missed + 2.0)
