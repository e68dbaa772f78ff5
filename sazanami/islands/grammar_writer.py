"""Two-phase generation: the model writes the grammar, then generates inside it.

Phase 1 asks the model for a grammar of the answer to a task — a regular expression or a
Lark grammar — with several variants drawn at once (one seed each). The first one
llguidance accepts becomes the constraint of phase 2. When none is valid, phase 2 falls
back (to ``fallback``, by default free text) and says why in ``WrittenGrammar.message``.

For regexes, phase 1 itself runs under a meta-grammar of a plain regex subset (literals,
classes, groups, alternation, quantifiers), so what the model writes parses; llguidance
still validates it (e.g. ``a{3,1}`` passes the meta-grammar but not the validator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sazanami.errors import ParameterError
from sazanami.islands.constraints import Constraint
from sazanami.islands.runtime import Islands

PROMPTS = {
    "regex": (
        "Write one regular expression that matches a good answer to the task below, and nothing else. "
        "Reply with the regular expression only, on one line, without slashes or quotes.\n\nTask: {task}"
    ),
    "lark": (
        "Write a Lark grammar whose start rule `start` describes a good answer to the task below. "
        "Use double-quoted strings and /regex/ terminals. Reply with the grammar only.\n\nTask: {task}"
    ),
}

REGEX_META_GRAMMAR = r"""
start: alt
alt: seq ("|" seq)*
seq: item+
item: atom QUANT?
atom: CHAR | ESC | CLASS | "(" alt ")" | DOT
DOT: "."
QUANT: /[*+?]|\{[0-9]{1,2}(,[0-9]{0,2})?\}/
CHAR: /[A-Za-z0-9 ,:;!'"=_@#%&<>~-]/
ESC: /\\[dwsDWS.()\[\]{}*+?|\\^$\/-]/
CLASS: /\[\^?([A-Za-z0-9 _,.:;!'"=@#%&~]|\\[dws\]\\-]|[A-Za-z0-9]-[A-Za-z0-9])+\]/
"""
"""Phase 1's constraint for regexes (llguidance Lark): a plain regex subset."""


@dataclass
class WrittenGrammar:
    """The outcome of phase 1."""

    kind: str
    constraint: Constraint | None
    """What phase 2 runs under: the model's grammar, or the fallback."""
    source: str | None
    """The grammar the model wrote that was accepted (None when it fell back)."""
    candidates: list[str] = field(default_factory=list)
    """Every grammar the model wrote, in variant order."""
    errors: list[str] = field(default_factory=list)
    """Why each rejected candidate was rejected."""
    message: str = ""
    """One line for the user: which grammar is used, or why it fell back."""

    @property
    def fell_back(self) -> bool:
        return self.source is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "constraint": self.constraint.to_dict() if self.constraint else None,
            "candidates": self.candidates,
            "errors": self.errors,
            "message": self.message,
        }


def extract_grammar(text: str, kind: str) -> str:
    """The grammar in a model's reply: code fences, ``/…/`` delimiters and quotes removed."""
    text = text.strip()
    fence = re.search(r"```[a-zA-Z]*\n?(.*?)(```|$)", text, re.S)
    if fence:
        text = fence.group(1).strip()
    if kind == "regex":
        text = text.splitlines()[0].strip() if text else ""
        for a, b in (("/", "/"), ("`", "`"), ('"', '"'), ("'", "'")):
            if len(text) >= 2 and text.startswith(a) and text.endswith(b):
                text = text[1:-1]
    return text


def write_grammar(
    engine: Any,
    task: str,
    kind: str = "regex",
    params: Any = None,
    attempts: int = 4,
    fallback: Constraint | None = None,
    constrain: bool = True,
) -> WrittenGrammar:
    """Phase 1: ``attempts`` variants of a grammar for ``task``; the first valid one wins.

    ``params`` are the writer's sampling parameters (``n`` is set to ``attempts``);
    ``constrain`` runs regex writing under :data:`REGEX_META_GRAMMAR`.
    """
    from sazanami.sampling.params import SamplingParams

    if kind not in PROMPTS:
        raise ParameterError("kind", f"kind must be one of {', '.join(PROMPTS)}, got {kind!r}")
    if not 1 <= attempts <= 64:
        raise ParameterError("attempts", f"attempts must be in [1, 64], got {attempts!r}")
    params = (params or SamplingParams(temperature=0.7, max_tokens=48 if kind == "regex" else 160)).replace(n=attempts)
    meta = Islands(constraint=Constraint.lark(REGEX_META_GRAMMAR)) if constrain and kind == "regex" else None
    outs = engine.generate(PROMPTS[kind].format(task=task), params, islands=meta)
    written = WrittenGrammar(kind, fallback, None)
    for c in outs:
        source = extract_grammar(c.text, kind)
        written.candidates.append(source)
        error = _construct_error(kind, source) if source else "empty reply"
        if not error:
            error = Constraint(kind, source).error(engine.tokenizer)
        if error:
            written.errors.append(error.strip().splitlines()[0])
            continue
        written.constraint = Constraint(kind, source)
        written.source = source
        written.message = f"generating under the model's {kind}: {source if len(source) < 80 else source[:77] + '...'}"
        return written
    reason = written.errors[0] if written.errors else "no reply"
    target = f"the fallback {fallback.kind}" if fallback is not None else "free text (no grammar)"
    written.message = f"none of the model's {attempts} {kind} grammar(s) was valid ({reason}); falling back to {target}"
    return written


def _construct_error(kind: str, source: str) -> str:
    try:
        Constraint(kind, source)
    except ParameterError as exc:
        return str(exc)
    return ""


def generate_in_own_grammar(
    engine: Any,
    task: str,
    params: Any = None,
    kind: str = "regex",
    writer_params: Any = None,
    attempts: int = 4,
    fallback: Constraint | None = None,
    islands: Islands | None = None,
) -> tuple[WrittenGrammar, list[Any]]:
    """Both phases: the model writes a grammar for ``task``, then answers ``task`` under it.

    ``islands`` (tools, limits) are kept for phase 2 with the written constraint added.
    Returns the phase-1 outcome and phase 2's completions.
    """
    written = write_grammar(engine, task, kind, writer_params, attempts, fallback)
    base = islands or Islands()
    phase2 = Islands(
        tools=base.tools,
        constraint=written.constraint,
        syntax=base.syntax,
        max_calls=base.max_calls,
        timeout=base.timeout,
        max_result_chars=base.max_result_chars,
        max_result_tokens=base.max_result_tokens,
        describe_tools=base.describe_tools,
        cache=base.cache,
    )
    return written, engine.generate(task, params, islands=phase2)
