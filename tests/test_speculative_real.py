"""Speculative decoding on the embedded model through llama.cpp (one thread): tokens identical
with speculation on and off, and the backend-level fact that makes it so — a drafted
position's logits equal those of a one-token step, bit for bit."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.sampling.params import SamplingParams

pytestmark = [
    pytest.mark.usefixtures("whole_drafts"),  # acceptance counted without the timing-sized budget
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
]

CODE = '''def add_numbers(first_value, second_value):
    """Return the sum of two numbers."""
    result = first_value + second_value
    return result
'''
PROMPT = (
    f"Rename the variable `result` to `total` in this function; answer with the whole function.\n\n```python\n{CODE}```"
)


@pytest.fixture(scope="module")
def lcp() -> Engine:
    return Engine(models.load(models.DEFAULT_MODEL, backend="llamacpp", threads=1))


def test_drafted_positions_have_the_logits_of_one_token_steps(lcp: Engine):
    be = lcp.backend
    ids = lcp.encode(PROMPT)
    steps = be.new_cache(2, len(ids) + 16)
    first = be.forward(torch.tensor([ids, ids]), steps, torch.zeros(2, dtype=torch.long))
    follow = lcp.encode(CODE)[:9]
    one = [first[0]]
    for k, t in enumerate(follow[:-1]):  # row 0: one token per step
        one.append(be.forward(torch.tensor([[t], [t]]), steps, torch.tensor([len(ids) + k] * 2))[0])
    piece = be.new_cache(2, len(ids) + 16)
    be.forward(torch.tensor([ids, ids]), piece, torch.zeros(2, dtype=torch.long))
    fed = torch.tensor([[follow[0], *follow[1:-1]], [follow[0]] + [0] * (len(follow) - 2)])  # row 1: no draft
    many = be.forward(fed, piece, torch.tensor([len(ids)] * 2), None, last_only=False, counts=torch.tensor([8, 1]))
    assert torch.equal(many[0], torch.stack(one[1:]))
    assert torch.equal(many[1, 0], one[1]) and not many[1, 1:].any()
    piece.trim(0, len(ids) + 3)  # the rest of the draft rejected: the next step sees the kept part only
    again = be.forward(torch.tensor([[follow[3]], [follow[1]]]), piece, torch.tensor([len(ids) + 3, len(ids) + 1]))
    assert torch.equal(again[0], one[4]) and torch.equal(again[1], one[2])


@pytest.mark.parametrize(
    "kw", [{"temperature": 0.0}, {"temperature": 0.8, "n": 3, "fluctuation": "pink-logits"}], ids=["greedy", "pink"]
)
def test_llamacpp_tokens_identical_with_speculation(lcp: Engine, kw):
    p = SamplingParams(seed=7, max_tokens=60, **kw)
    plain = lcp.generate(PROMPT, p)
    fast = lcp.generate(PROMPT, p.replace(speculative="prompt,siblings"))
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert [c.logprobs for c in fast] == [c.logprobs for c in plain]
    assert sum(c.accepted_tokens for c in fast) > 10  # the function is copied from the prompt
