"""Grading completions in the sandbox: the hidden ``check`` tests and the prompt's own examples.

``grade`` runs HumanEval's hidden tests (the benchmark's verdict). ``doctest_fraction`` runs only
the ``>>>`` examples written in the prompt's docstring — what a method may look at while
searching — and returns the fraction it passes.
"""

from __future__ import annotations

import json
import re

from sazanami.bench.humaneval.problems import Problem
from sazanami.sandbox import SandboxLimits, run_python

GRADE_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=1024, file_mb=16)
"""Per program: HumanEval's reference harness allows 3 s; ours is looser on a loaded 2-core box."""
_MARK = "__sazanami_doctest__"
_PROMPT = re.compile(r"^\s*>>>\s?(.*)$")


def program(problem: Problem, completion: str) -> str:
    """The program that passes iff ``completion`` (the body after ``problem.prompt``) is correct."""
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def grade(problem: Problem, completion: str, limits: SandboxLimits = GRADE_LIMITS) -> bool:
    """Whether the completion passes the hidden tests, run in the sandbox."""
    return run_python(program(problem, completion), limits).ok


def doctest_examples(prompt: str) -> list[tuple[str, str]]:
    """The ``>>> expression`` / expected-output pairs in a prompt (expected: the lines up to a blank
    line, the next ``>>>`` or the docstring's end). Examples without an expected value are skipped."""
    lines = prompt.splitlines()
    examples: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        m = _PROMPT.match(lines[i])
        i += 1
        if not m:
            continue
        expected: list[str] = []
        while i < len(lines) and lines[i].strip() and not _PROMPT.match(lines[i]):
            if '"""' in lines[i] or "'''" in lines[i]:
                break
            expected.append(lines[i].strip())
            i += 1
        if expected and m.group(1).strip():
            examples.append((m.group(1).strip(), " ".join(expected)))
    return examples


def doctest_fraction(problem: Problem | str, completion: str, limits: SandboxLimits = GRADE_LIMITS) -> float | None:
    """Fraction of the prompt's ``>>>`` examples the completion passes (None: the prompt has none).

    One sandboxed program defines the function and evaluates every example; an example passes when
    its value equals the expected one (read as a Python literal/expression, else compared as repr).
    """
    prompt = problem.prompt if isinstance(problem, Problem) else problem
    examples = doctest_examples(prompt)
    if not examples:
        return None
    checks = json.dumps(examples)
    source = (
        f"{prompt}{completion}\n\n"
        "import json as _j\n"
        "_r = []\n"
        f"for _e, _x in _j.loads({checks!r}):\n"
        "    try:\n"
        "        _got = eval(_e)\n"
        "        try:\n"
        "            _ok = _got == eval(_x)\n"
        "        except Exception:\n"
        "            _ok = repr(_got) == _x or str(_got) == _x\n"
        "    except BaseException:\n"
        "        _ok = False\n"
        "    _r.append(bool(_ok))\n"
        f"print({_MARK!r}, _j.dumps(_r))\n"
    )
    result = run_python(source, limits)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(_MARK):
            passed = json.loads(line[len(_MARK) :])
            return sum(passed) / len(examples)
    return 0.0
