"""English inflections: whether a text uses a keyword, "jumped" and "ran" counting as "jump" and "run".

Moved out of :mod:`sazanami.search.scorers`; :class:`~sazanami.search.scorers.ContainsScorer`
and the search-quality benchmark use :func:`concept_coverage`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["concept_coverage", "inflections", "uses_word"]


# Irregular inflections (base → forms) for common words; regular ones follow rules below.
_IRREGULAR: dict[str, tuple[str, ...]] = {
    "be": ("am", "is", "are", "was", "were", "been", "being"),
    "begin": ("began", "begun"),
    "bite": ("bit", "bitten"),
    "blow": ("blew", "blown"),
    "break": ("broke", "broken"),
    "bring": ("brought",),
    "build": ("built",),
    "buy": ("bought",),
    "catch": ("caught",),
    "child": ("children",),
    "come": ("came",),
    "dig": ("dug",),
    "do": ("did", "done", "does"),
    "draw": ("drew", "drawn"),
    "drink": ("drank", "drunk"),
    "drive": ("drove", "driven"),
    "eat": ("ate", "eaten"),
    "fall": ("fell", "fallen"),
    "feed": ("fed",),
    "feel": ("felt",),
    "fight": ("fought",),
    "find": ("found",),
    "fly": ("flew", "flown"),
    "foot": ("feet",),
    "freeze": ("froze", "frozen"),
    "get": ("got", "gotten"),
    "give": ("gave", "given"),
    "go": ("went", "gone", "goes"),
    "goose": ("geese",),
    "grow": ("grew", "grown"),
    "hang": ("hung",),
    "have": ("has", "had"),
    "hide": ("hid", "hidden"),
    "hold": ("held",),
    "keep": ("kept",),
    "kneel": ("knelt",),
    "know": ("knew", "known"),
    "lead": ("led",),
    "leave": ("left",),
    "lose": ("lost",),
    "make": ("made",),
    "man": ("men",),
    "meet": ("met",),
    "mouse": ("mice",),
    "person": ("people",),
    "ride": ("rode", "ridden"),
    "ring": ("rang", "rung"),
    "rise": ("rose", "risen"),
    "run": ("ran",),
    "say": ("said",),
    "see": ("saw", "seen"),
    "sell": ("sold",),
    "send": ("sent",),
    "shine": ("shone",),
    "shoot": ("shot",),
    "sing": ("sang", "sung"),
    "sink": ("sank", "sunk"),
    "sit": ("sat",),
    "sleep": ("slept",),
    "speak": ("spoke", "spoken"),
    "spend": ("spent",),
    "stand": ("stood",),
    "steal": ("stole", "stolen"),
    "swim": ("swam", "swum"),
    "take": ("took", "taken"),
    "teach": ("taught",),
    "tell": ("told",),
    "think": ("thought",),
    "throw": ("threw", "thrown"),
    "tooth": ("teeth",),
    "wake": ("woke", "woken"),
    "wear": ("wore", "worn"),
    "win": ("won",),
    "woman": ("women",),
    "write": ("wrote", "written"),
}
_VOWELS = set("aeiou")


def inflections(word: str) -> set[str]:
    """Forms that count as using ``word``: plural, 3rd person, past, -ing, -er, irregulars.

    >>> sorted(inflections("jump"))[:4]
    ['jump', 'jumped', 'jumper', 'jumpers']
    """
    w = word.lower()
    forms = {w, w + "s", w + "es", w + "ed", w + "ing", w + "er", w + "ers"}
    if w.endswith("e"):
        forms |= {w + "d", w[:-1] + "ing", w + "r", w + "rs"}
    if w.endswith("ie"):
        forms.add(w[:-2] + "ying")
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        forms |= {w[:-1] + "ies", w[:-1] + "ied", w[:-1] + "ier"}
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    elif w.endswith("f"):
        forms.add(w[:-1] + "ves")
    # Consonant doubling: sip → sipped, run → running (short words ending consonant-vowel-consonant).
    if len(w) >= 3 and w[-1] not in _VOWELS | set("wxy") and w[-2] in _VOWELS and w[-3] not in _VOWELS:
        forms |= {w + w[-1] + s for s in ("ed", "ing", "er", "ers")}
    forms.update(_IRREGULAR.get(w, ()))
    return forms


_WORD = re.compile(r"\w+")


def uses_word(keyword: str, text: str) -> bool:
    """Whether ``text`` uses ``keyword`` or an inflection of it (case-insensitive, whole words).

    A multi-word keyword must appear as consecutive words, each possibly inflected.
    """
    words = _WORD.findall(text.lower())
    parts = _WORD.findall(keyword.lower())
    if not parts:
        return False
    forms = [inflections(p) for p in parts]
    n = len(parts)
    return any(all(words[i + j] in forms[j] for j in range(n)) for i in range(len(words) - n + 1))


def concept_coverage(text: str, keywords: Sequence[str]) -> tuple[float, list[str]]:
    """(fraction of ``keywords`` used, the missing ones)."""
    missing = [k for k in keywords if not uses_word(k, text)]
    return 1 - len(missing) / len(keywords), missing
