"""The ``doctest`` scorer: the fraction of a task's own ``>>>`` examples a code candidate passes.

The examples come from the task prompt (a function signature and docstring, as in HumanEval); the
candidate is either the body that continues the prompt or a whole program (fenced or starting with a
top-level ``def``/``import``). Everything runs in :mod:`sazanami.sandbox`, one child per candidate.
A method may look at these examples; benchmarks grade with hidden tests elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sazanami.sandbox import SandboxLimits, run_python
from sazanami.search.scorers import Host, Score, Scorer, as_items

DOCTEST_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=1024, file_mb=16)
_MARK = "__sazanami_doctest__"
_PROMPT = re.compile(r"^\s*>>>\s?(.*)$")
_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.DOTALL)


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


def candidate_program(prompt: str, candidate: str) -> str:
    """The code a candidate stands for: a fenced block or a whole program as it is, else prompt + body."""
    fenced = _FENCE.search(candidate)
    code = fenced.group(1) if fenced else candidate
    if re.match(r"\s*(def|import|from|class)\s", code):
        return code
    return prompt + code


def doctest_check(prompt: str, candidate: str, limits: SandboxLimits = DOCTEST_LIMITS) -> tuple[float | None, str]:
    """Fraction of the prompt's ``>>>`` examples the candidate passes (None: the prompt has none),
    and what went wrong first ("" when all pass): a failing example with the value it gave, or the
    error that stopped the program.

    One sandboxed program defines the code and evaluates every example; an example passes when its
    value equals the expected one (read as a Python expression, else compared as repr/str).
    """
    examples = doctest_examples(prompt)
    if not examples:
        return None, ""
    source = (
        candidate_program(prompt, candidate) + "\n\n"
        "import json as _j\n"
        "_r, _why = [], ''\n"
        f"for _e, _x in _j.loads({json.dumps(examples)!r}):\n"
        "    try:\n"
        "        _got = eval(_e)\n"
        "        _said = repr(_got)\n"
        "        try:\n"
        "            _ok = _got == eval(_x)\n"
        "        except Exception:\n"
        "            _ok = _said == _x or str(_got) == _x\n"
        "    except BaseException as _exc:\n"
        "        _ok, _said = False, 'raised ' + type(_exc).__name__ + ': ' + str(_exc)\n"
        "    _r.append(bool(_ok))\n"
        "    if not _ok and not _why:\n"
        "        _why = _e + ' gave ' + _said[:200] + ', expected ' + _x[:200]\n"
        f"print({_MARK!r}, _j.dumps([_r, _why]))\n"
    )
    result = run_python(source, limits)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(_MARK):
            passed, why = json.loads(line[len(_MARK) :])
            return sum(passed) / len(examples), why
    if result.timed_out or result.returncode < 0:
        return 0.0, f"the program was stopped by its sandbox limits ({limits.cpu_s} CPU s, {limits.wall_s:g} s wall)"
    last = [ln for ln in result.stderr.splitlines() if ln.strip()]
    return 0.0, (last[-1][:300] if last else f"the program exited with status {result.returncode}")


def doctest_fraction(prompt: str, candidate: str, limits: SandboxLimits = DOCTEST_LIMITS) -> float | None:
    """Fraction of the prompt's ``>>>`` examples the candidate passes (None: the prompt has none)."""
    return doctest_check(prompt, candidate, limits)[0]


class DoctestScorer(Scorer):
    """Fraction of the task's ``>>>`` examples a candidate passes, run in the sandbox.

    Unscored (None) when the task has no examples. ``prompt`` overrides the search's task text.
    """

    name = "doctest"

    def __init__(self, prompt: str | None = None) -> None:
        self.prompt = prompt

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        prompt = self.prompt if self.prompt is not None else (ctx.task if ctx is not None else "")
        n = len(doctest_examples(prompt))
        out = []
        for it in as_items(items):
            value, why = doctest_check(prompt, it.text)
            if value is None:
                out.append(Score(None, "no examples"))
                continue
            reason = f"{round(value * n)}/{n} examples pass"
            out.append(Score(value, f"{reason}; first failure: {why}" if why else reason))
        return out
