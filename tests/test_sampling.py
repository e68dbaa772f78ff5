"""The sampler pipeline on hand-built logits (vocab ~ 10, batch ~ 4)."""

from __future__ import annotations

import math

import pytest
import torch

from sazanami.sampling import (
    apply_penalties,
    draw_inverse_cdf,
    dynamic_temperature,
    entropy,
    mirostat_v2,
    truncate,
)

LOGITS = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]]))


def kept(x: torch.Tensor) -> list[int]:
    return torch.isfinite(x[0]).nonzero().flatten().tolist()


def run(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, logits=LOGITS):
    B = logits.shape[0]
    return truncate(
        logits,
        torch.full((B,), top_k),
        torch.full((B,), top_p),
        torch.full((B,), min_p),
        torch.full((B,), typical_p),
    )


def test_top_k_keeps_k_most_likely():
    assert kept(run(top_k=2)) == [0, 1]
    assert kept(run(top_k=0)) == [0, 1, 2, 3, 4]
    assert kept(run(top_k=99)) == [0, 1, 2, 3, 4]


def test_top_p_smallest_set_with_mass():
    # 0.4 + 0.3 = 0.7 ≥ 0.65 → {0, 1}; 0.7 < 0.75 → needs 0.2 too
    assert kept(run(top_p=0.65)) == [0, 1]
    assert kept(run(top_p=0.75)) == [0, 1, 2]
    assert kept(run(top_p=0.01)) == [0]


def test_min_p_relative_to_top():
    # threshold 0.25 * 0.4 = 0.1 → drops 0.06 and 0.04
    assert kept(run(min_p=0.25)) == [0, 1, 2]


def test_typical_by_hand():
    p = torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04])
    h = -(p * p.log()).sum()
    dev = ((-p.log()) - h).abs()
    order = dev.argsort().tolist()
    mass, expect = 0.0, []
    for i in order:
        if mass >= 0.5:
            break
        expect.append(i)
        mass += float(p[i])
    assert kept(run(typical_p=0.5)) == sorted(expect)


def test_per_row_values():
    logits = LOGITS.repeat(2, 1)
    out = truncate(logits, torch.tensor([1, 0]), torch.ones(2), torch.zeros(2), torch.ones(2))
    assert torch.isfinite(out[0]).sum() == 1 and torch.isfinite(out[1]).sum() == 5


def test_processors_do_not_modify_input():
    logits = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    before = logits.clone()
    run(top_k=3, top_p=0.8, min_p=0.1, typical_p=0.7, logits=logits)
    counts = torch.zeros(4, 20)
    counts[:, 3] = 2
    apply_penalties(logits, counts, counts > 0, torch.full((4,), 1.3), torch.full((4,), 0.5), torch.full((4,), 0.2))
    mirostat_v2(logits, torch.full((4,), 3.0))
    dynamic_temperature(logits, torch.ones(4), torch.full((4,), 0.5), torch.ones(4))
    assert torch.equal(logits, before)


def test_penalties_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    seen = torch.tensor([[True, True, False, True]])  # token 3 only in the prompt
    out = apply_penalties(logits, counts, seen, torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([0.25]))
    expected = torch.tensor([[2.0 / 2 - 0.5 - 0.5, -1.0 * 2 - 0.5 - 0.25, 0.5, 1.0 / 2]])
    assert torch.allclose(out, expected)


def test_dynamic_temperature_range():
    flat = torch.zeros(1, 8)
    peaked = torch.tensor([[10.0] + [0.0] * 7])
    base, spread, exp = torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([1.0])
    assert dynamic_temperature(flat, base, spread, exp).item() == pytest.approx(1.5, abs=1e-5)
    t = dynamic_temperature(peaked, base, spread, exp).item()
    assert 0.5 <= t < 0.6


def test_mirostat_truncates_by_surprise():
    logits = LOGITS
    # surprises in bits: 1.32, 1.74, 2.32, 4.06, 4.64
    out = mirostat_v2(logits, torch.tensor([2.0]))
    assert kept(out) == [0, 1]
    assert kept(mirostat_v2(logits, torch.tensor([0.1]))) == [0]


def test_entropy_uniform():
    assert entropy(torch.zeros(1, 8)).item() == pytest.approx(math.log(8), abs=1e-6)


def test_inverse_cdf_draw_is_exact():
    """Token frequencies match the probabilities (chi-square, fixed seed)."""
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    logits = probs.log()[None].expand(20000, -1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(1))
    tokens = draw_inverse_cdf(logits, u)
    counts = torch.bincount(tokens, minlength=5).double()
    assert counts[4] == 0
    expected = probs[:4].double() * 20000
    chi2 = ((counts[:4] - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.27  # p = 0.001 for 3 degrees of freedom
