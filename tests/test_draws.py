"""The batched colored draws give exactly the tokens of their float64 / full-sort references."""

from __future__ import annotations

import math

import pytest
import torch

from sazanami.noise.draws import _gumbel_screen, _quantile_full, gumbel_argmax, gumbel_from_normal, quantile_draw


def _cases(seed: int, trials: int):
    """Peaked, flat, masked, tied and far-tailed rows."""
    g = torch.Generator().manual_seed(seed)
    for t in range(trials):
        n, v = 6, (5, 97, 4096)[t % 3]
        x = torch.randn(n, v, generator=g) * (0.05, 1.0, 5.0, 30.0)[t % 4]
        if t % 5 == 0:
            x[:, : v // 2] = -math.inf  # a grammar mask
        if t % 7 == 0:
            x = x.round()  # many exact ties
        if t % 9 == 0:
            x[:, 1] = x[:, 0]  # a tie at the top
        z = torch.randn(n, v, generator=g) * (1.0, 2.5, 4.0)[t % 3]  # far tails too
        u = torch.special.ndtr(torch.randn(n, generator=g).double())
        u[0] = (1.0, 0.0, 0.5)[t % 3]
        yield x, z, u


def test_gumbel_argmax_equals_the_float64_reference():
    for x, z, _ in _cases(0, 90):
        ref = (x.double() + gumbel_from_normal(z)).argmax(-1)
        assert torch.equal(gumbel_argmax(x, z), ref)


def test_gumbel_screen_is_within_its_bound_and_conservative_outside():
    z = torch.linspace(-10, 10, 400_001)
    g, ref = _gumbel_screen(z).double(), gumbel_from_normal(z)
    inside = (z >= -7) & (z <= 6)
    assert float((g[inside] - ref[inside]).abs().max()) < 5e-6
    assert bool(torch.isinf(g[~inside]).all())  # always re-scored exactly


def test_gumbel_argmax_on_flat_rows_uses_the_screen_and_stays_exact():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50_000, generator=g) * 0.01  # nearly uniform: the bound keeps everything
    z = torch.randn(4, 50_000, generator=g)
    assert torch.equal(gumbel_argmax(x, z), (x.double() + gumbel_from_normal(z)).argmax(-1))


def test_quantile_draw_equals_the_full_sort():
    for x, _, u in _cases(1, 90):
        assert torch.equal(quantile_draw(x, u), _quantile_full(x.double().softmax(-1), u))


@pytest.mark.parametrize("u", [0.0, 1e-12, 0.25, 0.5, 0.999999, 1.0])
def test_quantile_draw_at_bucket_edges(u: float):
    """u exactly at cumulative-probability edges, where summation order could matter."""
    x = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125] + [0.0] * 4]))
    uu = torch.tensor([u], dtype=torch.float64)
    assert torch.equal(quantile_draw(x, uu), _quantile_full(x.double().softmax(-1), uu))
