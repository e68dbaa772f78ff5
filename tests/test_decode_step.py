"""The row step (sazanami.engine.decode_step): one step for every driver, its parts, and forks."""

from __future__ import annotations

import torch

from sazanami.engine.decode_step import RowStep
from sazanami.engine.loop import Engine
from sazanami.islands import Constraint, Islands
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import RowRequest
from sazanami.sampling.sampler import SamplerBatch

V = 50

PARAMS = [
    SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.3, dry_multiplier=1.0),
    SamplingParams(temperature=1.0, mirostat_tau=3.0, logit_bias={3: 2.0}),
    SamplingParams(temperature=0.7, xtc_probability=0.5, xtc_threshold=0.05, fluctuation="pink-draw"),
    SamplingParams(temperature=0.0, dynatemp_range=0.5, top_n_sigma=1.0, fluctuation="pink-logits"),
]


def requests() -> list[RowRequest]:
    return [RowRequest([1, 2, 3, 1, 2], p, 10 + i) for i, p in enumerate(PARAMS)]


def test_process_draw_record_is_sample():
    """The split is exact: SamplerBatch.sample and process → draw → record give the same tokens,
    step after step (noise, penalty counts, DRY context and mirostat's μ stay in step)."""
    whole, parts = SamplerBatch(requests(), V), SamplerBatch(requests(), V)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        x = torch.randn(len(PARAMS), V, generator=gen) * 3
        before = x.clone()
        want, _ = whole.sample(x)
        processed = parts.process(x)
        got = parts.draw(processed)
        parts.record(got, processed)
        assert torch.equal(got, want) and torch.equal(x, before)  # and the logits are not changed in place


def test_choose_in_the_step_is_the_samplers_draw(tiny_engine: Engine):
    tok = tiny_engine.tokenizer
    V = tiny_engine.backend.vocab_size
    reqs = [RowRequest([1, 2, 3], p, 10 + i) for i, p in enumerate(PARAMS)]
    step, sampler = RowStep(reqs, tok, V), SamplerBatch(reqs, V, tokenizer=tok)
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        x = torch.randn(len(reqs), V, generator=gen) * 3
        s = step(x, [3 + len(r.tokens) for r in step.rows])
        generated = [r.tokens[:-1] if r.tokens else [] for r in step.rows]  # the context before this token
        want, _ = sampler.sample(x, generated=generated)
        assert s.drawn == want.tolist()


def test_fork_gives_children_their_own_row_sampler_and_grammar(tiny_engine: Engine):
    tok, V = tiny_engine.tokenizer, tiny_engine.backend.vocab_size
    islands = Islands(constraint=Constraint.regex("[ab]+"))
    params = SamplingParams(temperature=1.0, presence_penalty=2.0, stop=("bb",), max_tokens=10)
    step = RowStep([RowRequest([1], params, 3, islands=islands)], tok, V)
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    step.take([a], [0.0])
    step.record(torch.tensor([a]))
    step.fork([0, 0, 0])  # three children of the one row
    step.take([a, b, b], [0.0, 0.0, 0.0])
    step.record(torch.tensor([a, b, b]))
    assert [r.text for r in step.rows] == ["aa", "ab", "ab"]
    counts = step.sampler.counts
    assert counts is not None and counts[0, a] == 2 and counts[1, a] == 1 and counts[1, b] == 1
    step.take([a, b, a], [0.0, 0.0, 0.0])
    assert [r.text for r in step.rows] == ["aaa", "a", "aba"]  # "abb" ends at its stop string
    assert [r.finish_reason for r in step.rows] == [None, "stop", None]
    assert step.running() == [0, 2]
    # each child's grammar went its own way: only a or b is allowed next, whatever its history
    masked, _ = step.process(torch.zeros(3, V))
    assert all(set(torch.isfinite(masked[i]).nonzero().flatten().tolist()) >= {a, b} for i in (0, 2))
