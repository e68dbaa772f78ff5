"""HumanEval Experiment 2: the arms' runner (tiny model), the code improver and the report's arithmetic."""

from __future__ import annotations

import json
import math

import pytest

from sazanami.errors import ParameterError
from sazanami.evals.humaneval import load_problems
from sazanami.evals.humaneval.search_report import summarize, summary_text, write_plot, write_summary
from sazanami.evals.humaneval.search_run import ARMS, CodeImprover, SearchConfig, reference_arms, run_search_arms


def _record(task: int, arm: str, passed: bool, wall: float, tokens: int = 100, oracle: bool = False) -> dict:
    return {
        "task_id": f"HumanEval/{task}", "arm": arm, "passed": passed, "wall_s": wall, "generated_tokens": tokens,
        "prompt_tokens": 10, "candidates": 3, "candidates_passing": int(passed or oracle),
    }  # fmt: skip


def test_report_gains_follow_the_best_of_n_curve():
    recs = []
    for t in range(40):
        recs += [
            _record(t, "best_of_n@256", t < 10, 10.0),  # 25 %
            _record(t, "best_of_n@512", t < 20, 20.0),  # 50 %
            _record(t, "best_of_n@1024", t < 24, 40.0),  # 60 %
            _record(t, "paths@512", t < 32, 20.0),  # 80 % at the wall of best_of_n@512: +30 points
            _record(t, "tree@512", t < 20, 80.0),  # slower than the whole curve: not estimable at equal wall
        ]
    recs.append(_record(99, "paths@512", True, 1.0))  # a problem without every arm is left out
    s = summarize(recs)
    assert s["problems"] == 40 and s["reference"] == ["best_of_n@256", "best_of_n@512", "best_of_n@1024"]
    gain, lo, hi, verdict = s["comparisons"]["paths@512"]["gain_at_equal_wall"]
    assert gain == pytest.approx(0.30) and lo > 0 and verdict == "better"
    d, lo, hi, _ = s["comparisons"]["paths@512"]["vs_best_of_n@512"]
    assert d == pytest.approx(0.30) and lo <= d <= hi
    assert math.isnan(s["comparisons"]["tree@512"]["gain_at_equal_wall"][0])
    assert s["comparisons"]["tree@512"]["gain_at_equal_wall"][3].startswith("not estimable")
    assert s["arms"]["paths@512"]["pass"] == pytest.approx(0.8)


def test_report_text_says_when_the_test_is_too_small(tmp_path):
    path = tmp_path / "exp2.jsonl"
    recs = [_record(t, a, t % 2 == 0, 10.0 * (i + 1)) for t in range(6) for i, a in enumerate(ARMS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = summary_text(path)
    assert "6 problems with every arm" in text and "too small to decide" in text and "(primary)" in text
    assert write_plot(path).stat().st_size > 0 and "paths@512,pass," in write_summary(path).read_text()


def test_code_improver_keeps_the_draft_a_body_and_feeds_back_the_failure():
    task = 'def f(x):\n    """Double x.\n    >>> f(2)\n    4\n    """\n'
    prompt = CodeImprover().prompt(
        task, "    return x + 1\n", "0/1 examples pass; first failure: f(2) gave 3, expected 4"
    )
    assert prompt.startswith(task + "    return x + 1\n")  # indentation kept: an earlier definition
    assert "# 0/1 examples pass; first failure: f(2) gave 3, expected 4\n" in prompt
    assert prompt.endswith(task)  # the model writes the body again


def test_config_rejects_unknown_arms_and_ranges():
    with pytest.raises(ParameterError, match="arms"):
        SearchConfig(arms=("best_of_n@3",))
    with pytest.raises(ParameterError, match="temperature"):
        SearchConfig(temperature=0.0)
    assert reference_arms(tuple(ARMS)) == ["best_of_n@256", "best_of_n@512", "best_of_n@1024"]


def test_runner_records_graded_searches_and_resumes(tiny_engine, tmp_path):
    out = tmp_path / "exp2.jsonl"
    config = SearchConfig(model="tiny-random", arms=("best_of_n@256", "optimize@512"), max_tokens=24, problems=(0,))
    assert run_search_arms(config, tiny_engine, out, progress=False) == 1
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["arm"] for r in recs] == ["best_of_n@256", "optimize@512"]
    problem = load_problems()[0]
    for r in recs:
        assert r["task_id"] == problem.task_id and r["passed"] is False  # random weights pass nothing
        assert 0 < r["generated_tokens"] <= ARMS[r["arm"]]["budget"] and r["candidates"] >= 1
        assert all(score == 0.0 for score in r["candidate_scores"])  # scored by the prompt's doctests
    assert run_search_arms(config, tiny_engine, out, progress=False) == 0  # resumed: nothing left
