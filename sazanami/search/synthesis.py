"""Rewriting prompts: the synthesizer (merge the winners) and the improver (make one better).

Both are plain templates over the task and candidate texts; the search context runs them
through the engine, charges their tokens to the budget and records the results as nodes.
The improver's ``{feedback}`` slot carries what the scorer said about the draft (a
verifier's "missing: ball, park", a judge's reply), so the optimizer loop of seed 002
("program = llm(improve + best_program)") can use the score's reason, not only its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_int

__all__ = ["DEFAULT_IMPROVE_TEMPLATE", "DEFAULT_SYNTHESIS_TEMPLATE", "Improver", "Synthesizer"]

DEFAULT_SYNTHESIS_TEMPLATE = (
    "{task}\n\nHere are several candidate answers:\n\n{candidates}\n\n"
    "Combine the best parts of these candidates into one answer that is better than each of them. "
    "Reply with the combined answer only."
)

DEFAULT_IMPROVE_TEMPLATE = (
    "{task}\n\nHere is a draft answer:\n{draft}\n{feedback}\n"
    "Write an improved answer to the task. Reply with the answer only."
)


def _check_template(template: Any, needed: tuple[str, ...], param: str) -> str:
    if not isinstance(template, str):
        raise ParameterError(param, f"{param} must be a string, got {type(template).__name__}")
    for slot in needed:
        if slot not in template:
            raise ParameterError(param, f"{param} must contain {slot}")
    return template


def _check_optional_int(name: str, value: Any, low: int, high: int) -> None:
    if value is not None:
        check_int(name, value, low, high)


@dataclass(frozen=True)
class Synthesizer:
    """Prompts the model with the winners to merge their best parts into one answer."""

    template: str = DEFAULT_SYNTHESIS_TEMPLATE
    """With ``{task}`` and ``{candidates}`` (numbered "Candidate i: text" blocks)."""
    n: int = 1
    """Syntheses to sample (each scored; the best is kept); in [1, 64]."""
    max_tokens: int | None = None
    """Tokens per synthesis; None = the search's ``max_tokens``."""
    temperature: float | None = None
    """None = the search's temperature."""

    def __post_init__(self) -> None:
        _check_template(self.template, ("{candidates}",), "synthesis template")
        _check_optional_int("n", self.n, 1, 64)
        _check_optional_int("max_tokens", self.max_tokens, 1, 32768)

    def prompt(self, task: str, texts: list[str]) -> str:
        blocks = "\n\n".join(f"Candidate {i + 1}: {t.strip()}" for i, t in enumerate(texts))
        return self.template.replace("{task}", task).replace("{candidates}", blocks)


@dataclass(frozen=True)
class Improver:
    """Prompts the model to improve one draft, given the scorer's feedback on it."""

    template: str = DEFAULT_IMPROVE_TEMPLATE
    """With ``{task}``, ``{draft}`` and optionally ``{feedback}``."""
    feedback: bool = True
    """Pass the scorer's reason ("missing: ball") into ``{feedback}``."""

    def __post_init__(self) -> None:
        _check_template(self.template, ("{draft}",), "improve template")

    def prompt(self, task: str, draft: str, reason: str = "") -> str:
        note = f"Feedback on the draft: {reason}\n" if self.feedback and reason else ""
        return self.template.replace("{task}", task).replace("{draft}", draft.strip()).replace("{feedback}", note)
