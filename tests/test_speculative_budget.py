"""The draft budget: the step-cost fit and which drafted tokens are fed (no timing involved)."""

import pytest

from sazanami.speculative.adaptive import DraftLength
from sazanami.speculative.budget import PRIOR_RATIO, RATIO_RANGE, StepCost, budget


def test_step_cost_fits_the_ratio_of_its_fixed_and_per_token_parts():
    cost = StepCost()
    assert cost.ratio() == PRIOR_RATIO  # nothing timed yet
    for _ in range(5):
        cost.observe(3, 0.040 + 0.010 * 3)
    assert cost.ratio() == PRIOR_RATIO  # one size only: a and b cannot be told apart
    for fed in (1, 7, 2, 5, 4):
        cost.observe(fed, 0.040 + 0.010 * fed)
    assert cost.ratio() == pytest.approx(4.0, rel=1e-6)


def test_step_cost_holds_a_noisy_fit_in_range():
    falling, flat = StepCost(), StepCost()
    for fed in (1, 2, 3, 4):
        falling.observe(fed, 1.0 / fed)  # more tokens, less time: b < 0
        flat.observe(fed, 0.001 * fed)  # no fixed part at all
    assert falling.ratio() == RATIO_RANGE[1]
    assert flat.ratio() == RATIO_RANGE[0]


def test_budget_keeps_likely_tokens_when_a_step_is_mostly_fixed_cost():
    drafts = [[1, 2, 3, 4, 5, 6]]
    assert budget(drafts, [0.95], ratio=64.0) == drafts
    assert budget(drafts, [0.8], ratio=1.0) == [[1, 2]]  # a token costs as much as the rest of the step
    assert budget(drafts, [0.1], ratio=4.0) == [[]]  # unlikely tokens never pay


def test_an_unfitted_step_cost_explores_with_one_token():
    wide = [[7, 8, 9]] * 16
    kept = budget(wide, [0.6] * 15 + [0.7], ratio=4.0, explore=True)
    assert kept == [[]] * 15 + [[7]]  # the most likely token alone
    cost = StepCost()
    for fed in (16, 16, 16):
        cost.observe(fed, 0.1 + 0.01 * fed)
    assert not cost.fitted()  # one size: a and b cannot be told apart
    for fed in (17, 16, 17):
        cost.observe(fed, 0.1 + 0.01 * fed)
    assert cost.fitted() and cost.ratio() == pytest.approx(10.0, rel=1e-6) and not cost.explore()
    fresh = StepCost()
    explored = []
    for _ in range(4):
        explored.append(fresh.explore())
        fresh.observe(16, 0.26)
    assert explored == [True, False, True, False]  # every other step: two sizes, so a fit can come


def test_budget_drafts_less_in_a_wide_batch_and_prefers_likely_rows():
    wide = [[7, 8, 9]] * 16
    assert budget(wide, [0.6] * 16, ratio=4.0) == [[]] * 16  # 16 tokens are fed anyway
    mixed = budget([[1, 2, 3], [4, 5, 6]], [0.9, 0.3], ratio=4.0)
    assert mixed[0] == [1, 2, 3] and mixed[1] == []
    for row, kept in zip([[1, 2, 3], [4, 5, 6]], budget([[1, 2, 3], [4, 5, 6]], [0.7, 0.7], ratio=2.0)):
        assert kept == row[: len(kept)]  # always a prefix of the row's draft


def test_alpha_follows_the_rows_acceptance():
    n = DraftLength(16)
    assert n.alpha() == 0.75
    for _ in range(6):
        n.observe(4, 4)
    high = n.alpha()
    assert high > 0.9
    for _ in range(3):
        n.observe(4, 0)
    assert n.alpha() < high - 0.2


def test_the_engine_feeds_only_what_the_budget_keeps(tiny_engine, monkeypatch):
    """The budget sizes the drafts of a real run (a step-cost ratio pinned, so no timing is
    involved); the tokens stay those of plain decoding whatever it keeps."""
    from sazanami.sampling.params import SamplingParams
    from sazanami.speculative.budget import StepCost

    p = SamplingParams(n=4, seed=3, max_tokens=40, temperature=0.0, ignore_eos=True)
    prompt = "the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the"
    plain = tiny_engine.generate(prompt, p)
    drafted = {}
    for ratio in (RATIO_RANGE[0], RATIO_RANGE[1]):
        monkeypatch.setattr(StepCost, "ratio", lambda self, r=ratio: r)
        monkeypatch.setattr(StepCost, "fitted", lambda self: True)
        fast = tiny_engine.generate(prompt, p.replace(speculative="prompt,siblings"))
        assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
        drafted[ratio] = sum(c.drafted_tokens for c in fast)
    assert drafted[RATIO_RANGE[0]] == 0  # 4 rows, a/b = 0.5: no draft of a new row (α = ¾) pays
    assert drafted[RATIO_RANGE[1]] > 0
