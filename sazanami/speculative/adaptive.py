"""The adaptive draft length: how many tokens a row drafts next, from its acceptance history.

A draft costs a forward pass more positions (and, on llama.cpp, the output layer over the whole
vocabulary for each: 8.6 ms for one SmolLM2 step, 13 ms with one drafted token), so a row drafts
long only while its drafts are accepted: all accepted doubles the length (up to ``max_draft``);
a partial acceptance of a tokens sets it to a + 1; nothing accepted halves it and makes the row
wait before drafting again, the wait doubling with each failure in a row (up to
:data:`MAX_WAIT` steps). Text that does not copy thus drafts rarely and briefly.
"""

from __future__ import annotations

START = 4
"""The first draft's length (at most ``max_draft``)."""
MAX_WAIT = 32
"""Most steps a row waits after a rejected draft."""


class DraftLength:
    """One row's draft length and wait (keeps state; see the module docstring)."""

    __slots__ = ("max_draft", "length", "wait", "backoff")

    def __init__(self, max_draft: int) -> None:
        self.max_draft = max_draft
        self.length = min(START, max_draft)
        self.wait = 0
        """Steps left before the row drafts again."""
        self.backoff = 0
        """The wait after the next rejected draft (doubles while drafts keep failing)."""

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
