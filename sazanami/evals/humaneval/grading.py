"""Grading completions in the sandbox: the hidden ``check`` tests and the prompt's own examples.

``grade`` runs HumanEval's hidden tests (the benchmark's verdict) on the code an answer stands for
(:func:`solution`: the prompt and a raw completion, or the function a chat answer wrote).
``doctest_fraction`` runs only the ``>>>`` examples written in the prompt's docstring — what a
method may look at while searching — and returns the fraction it passes.
"""

from __future__ import annotations

import re

from sazanami.evals.humaneval.problems import Problem, check_format
from sazanami.sandbox import SandboxLimits, run_python
from sazanami.search.doctest_scorer import doctest_examples
from sazanami.search.doctest_scorer import doctest_fraction as _doctest_fraction

__all__ = ["GRADE_LIMITS", "answer_code", "doctest_examples", "doctest_fraction", "grade", "program", "solution"]

GRADE_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=1024, file_mb=16)
"""Per program: HumanEval's reference harness allows 3 s; ours is looser on a loaded 2-core box."""


_FENCE = re.compile(r"^[ \t]*```[ \t]*(\S*)[ \t]*$")
"""A Markdown fence line: an opening one's info string (the language) is group 1."""
_PYTHON_TAGS = ("", "python", "python3", "py")
_MAIN = re.compile(r"^if\s+__name__\s*==", re.MULTILINE)


def answer_code(answer: str) -> str:
    """The code of a chat answer: its first ```python (or untagged) fenced block, to the end of the
    text if the block is never closed; the whole answer when it has no such block."""
    lines = answer.split("\n")
    inside: str | None = None  # the open block's language, None outside a block
    start = 0
    for i, line in enumerate(lines):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if inside is None:
            inside, start = fence.group(1).lower(), i + 1
        elif fence.group(1) == "":  # a closing fence
            if inside in _PYTHON_TAGS:
                return "\n".join(lines[start:i]).rstrip("\n") + "\n"
            inside = None
    if inside in _PYTHON_TAGS:
        return "\n".join(lines[start:]).rstrip("\n") + "\n"
    return answer


def solution(problem: Problem, text: str, format: str = "raw") -> str:
    """The source an answer stands for, before the hidden tests run on it.

    raw: ``problem.prompt`` + ``text`` (the body the model continued it with). chat: the answer's
    code (:func:`answer_code`), cut before a top-level ``if __name__ ==`` block; when it defines the
    entry point at top level it follows the prompt's text before the entry point's ``def`` (imports,
    and the helpers that HumanEval/10, /32, /38 and /50 give, which the answer may call without
    repeating), else it continues the prompt as a raw completion would.
    """
    check_format(format)
    if format == "raw":
        return problem.prompt + text
    code = answer_code(text)
    main = _MAIN.search(code)
    code = code[: main.start()] if main else code
    entry = re.compile(rf"^(?:async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", re.MULTILINE)
    if entry.search(code) is None:
        return problem.prompt + code
    given = entry.search(problem.prompt)
    return (problem.prompt[: given.start()] if given else "") + code


def program(problem: Problem, completion: str, format: str = "raw") -> str:
    """The program that passes iff ``completion`` (the body after ``problem.prompt``, or in the chat
    format the model's answer) is correct."""
    return f"{solution(problem, completion, format)}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def grade(problem: Problem, completion: str, limits: SandboxLimits = GRADE_LIMITS, format: str = "raw") -> bool:
    """Whether the completion (in ``format``, see :func:`solution`) passes the hidden tests, run in the sandbox."""
    return run_python(program(problem, completion, format), limits).ok


def doctest_fraction(problem: Problem | str, completion: str, limits: SandboxLimits = GRADE_LIMITS) -> float | None:
    """Fraction of the prompt's ``>>>`` examples the completion passes (None: the prompt has none)."""
    return _doctest_fraction(problem.prompt if isinstance(problem, Problem) else problem, completion, limits)
