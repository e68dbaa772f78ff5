"""Grading completions in the sandbox: the hidden ``check`` tests and the prompt's own examples.

``grade`` runs HumanEval's hidden tests (the benchmark's verdict). ``doctest_fraction`` runs only
the ``>>>`` examples written in the prompt's docstring — what a method may look at while
searching — and returns the fraction it passes.
"""

from __future__ import annotations

from sazanami.bench.humaneval.problems import Problem
from sazanami.sandbox import SandboxLimits, run_python
from sazanami.search.doctest_scorer import doctest_examples
from sazanami.search.doctest_scorer import doctest_fraction as _doctest_fraction

__all__ = ["GRADE_LIMITS", "doctest_examples", "doctest_fraction", "grade", "program"]

GRADE_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=1024, file_mb=16)
"""Per program: HumanEval's reference harness allows 3 s; ours is looser on a loaded 2-core box."""


def program(problem: Problem, completion: str) -> str:
    """The program that passes iff ``completion`` (the body after ``problem.prompt``) is correct."""
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def grade(problem: Problem, completion: str, limits: SandboxLimits = GRADE_LIMITS) -> bool:
    """Whether the completion passes the hidden tests, run in the sandbox."""
    return run_python(program(problem, completion), limits).ok


def doctest_fraction(problem: Problem | str, completion: str, limits: SandboxLimits = GRADE_LIMITS) -> float | None:
    """Fraction of the prompt's ``>>>`` examples the completion passes (None: the prompt has none)."""
    return _doctest_fraction(problem.prompt if isinstance(problem, Problem) else problem, completion, limits)
