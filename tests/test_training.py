"""Training fluctuation pieces: statistics with fixed seeds and stated tolerances, closed forms."""

from __future__ import annotations

import math
import re
from collections import deque

import numpy as np
import pytest
import torch

from sazanami.errors import ParameterError
from sazanami.noise.colored import fit_bank
from sazanami.noise.spectra import psd_slope
from sazanami.training import (
    Color,
    ColoredGradientNoise,
    ColoredLR,
    GrokfastEMA,
    GrokfastMA,
    SpectralGain,
    lr_multipliers,
)
from sazanami.training.embedding_noise import ColoredEmbeddingNoise
from sazanami.training.spectral_filter import spectral_gain_response

# --------------------------------------------------------------------------- colors


def test_color_parse_and_errors() -> None:
    assert Color.parse("pink:0.3") == Color(1.0, 0.3)
    assert Color.parse("1.5:2") == Color(1.5, 2.0)
    assert str(Color(2.0, 0.01)) == "brown:0.01"
    for bad, msg in [("pink", "COLOR:SCALE"), ("teal:1", "COLOR:SCALE"), ("3:1", "[0, 2]"), ("pink:-1", "[0, inf)")]:
        with pytest.raises(ParameterError, match=re.escape(msg)) as exc:
            Color.parse(bad, "lr-noise")
        assert exc.value.param == "lr-noise"


# --------------------------------------------------------------------------- colored LR


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_lr_multiplier_spectrum_and_mean(beta: float) -> None:
    sigma = 0.3
    m = lr_multipliers(Color(beta, sigma), 4096, list(range(64)))  # (4096, 64)
    # log m = σx − σ²/2 has the stream's 1/f^β spectrum (±0.05 over 64 × 4096)
    assert psd_slope(m.log()) == pytest.approx(beta, abs=0.05)
    # E[m] = 1 (log-normal correction); the sample mean over 64 × 4096 within 0.02
    assert float(m.mean()) == pytest.approx(1.0, abs=0.02)
    # the log's spread is σ (±5 %)
    assert float(m.log().std()) == pytest.approx(sigma, rel=0.05)


def test_colored_lr_scheduler_multiplies_base_and_resumes() -> None:
    def make() -> tuple[torch.optim.Optimizer, ColoredLR]:
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([p], lr=0.1)
        return opt, ColoredLR(opt, Color(1.0, 0.5), seed=7, base=lambda t: 1.0 / (1 + t))

    opt, sched = make()
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    m = lr_multipliers(Color(1.0, 0.5), 6, 7)
    expected = [0.1 / (1 + t) * float(m[t]) for t in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    # resume from step 3
    opt2, sched2 = make()
    for _ in range(3):
        opt2.step()
        sched2.step()
    state = sched2.state_dict()
    opt3, sched3 = make()
    sched3.load_state_dict(state)
    opt3.param_groups[0]["lr"] = opt2.param_groups[0]["lr"]
    rest = []
    for _ in range(3):
        rest.append(opt3.param_groups[0]["lr"])
        opt3.step()
        sched3.step()
    assert rest == pytest.approx(lrs[3:], rel=1e-6)


# --------------------------------------------------------------------------- gradient noise


def _model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))


def test_gradient_noise_memory_within_one_parameter_copy() -> None:
    model = _model()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    noise = ColoredGradientNoise(model.parameters(), Color(1.0, 0.01), seed=0, directions=4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    noise.step()  # refill buffers exist only after a step
    assert noise.extra_bytes() <= param_bytes
    # and the bound holds for a large model with many tensors (the state is per tensor, not per element)
    big = [torch.nn.Parameter(torch.zeros(256, 256)) for _ in range(8)]
    bn = ColoredGradientNoise(big, Color(1.0, 0.01), seed=0, directions=4)
    for p in big:
        p.grad = torch.zeros_like(p)
    bn.step()
    assert bn.extra_bytes() <= 0.2 * sum(p.numel() * 4 for p in big)


def test_gradient_noise_spectrum_variance_and_seeding() -> None:
    p = torch.nn.Parameter(torch.zeros(128))
    noise = ColoredGradientNoise([p], Color(1.0, 1.0), seed=3, gamma=0.0, directions=4, max_steps=2048)
    torch.manual_seed(123)  # the global RNG must not matter
    rows = []
    for _ in range(2048):
        p.grad = torch.zeros(128)
        noise.step()
        rows.append(p.grad.clone())
    x = torch.stack(rows)  # (steps, elements)
    assert psd_slope(x) == pytest.approx(1.0, abs=0.1)
    p2 = torch.nn.Parameter(torch.zeros(128))
    again = ColoredGradientNoise([p2], Color(1.0, 1.0), seed=3, gamma=0.0, directions=4, max_steps=2048)
    p2.grad = torch.zeros(128)
    again.step()
    assert torch.equal(p2.grad, rows[0])
    other = ColoredGradientNoise([p2], Color(1.0, 1.0), seed=4, gamma=0.0, directions=4, max_steps=2048)
    p2.grad = torch.zeros(128)
    other.step()
    assert not torch.equal(p2.grad, rows[0])


def test_gradient_noise_unit_variance_per_element() -> None:
    # white streams: the sample variance converges fast (pink streams' do not over 2048 steps)
    p = torch.nn.Parameter(torch.zeros(256))
    noise = ColoredGradientNoise([p], Color(0.0, 1.0), seed=5, gamma=0.0, directions=4)
    rows = []
    for _ in range(1024):
        p.grad = torch.zeros(256)
        noise.step()
        rows.append(p.grad.clone())
    assert float(torch.stack(rows).var()) == pytest.approx(1.0, rel=0.1)


def test_gradient_noise_anneals() -> None:
    noise = ColoredGradientNoise([torch.nn.Parameter(torch.zeros(3))], Color(0.0, 0.04), seed=0)
    assert noise.sigma(0) == pytest.approx(0.2)
    assert noise.sigma(99) == pytest.approx(math.sqrt(0.04 / 100**0.55))


# --------------------------------------------------------------------------- embedding noise


def test_white_embedding_noise_is_neftune_exactly() -> None:
    from transformers.integrations.neftune import neftune_post_forward_hook

    emb = torch.nn.Embedding(50, 24)
    emb.neftune_noise_alpha = 5.0
    emb.train()
    x = torch.randn(3, 11, 24, generator=torch.Generator().manual_seed(0))
    x_copy = x.clone()
    noise = ColoredEmbeddingNoise(Color(0.0, 5.0), seed=9)
    for step in range(3):
        with torch.random.fork_rng():
            torch.manual_seed(noise.step_seed(step))
            ref = neftune_post_forward_hook(emb, None, x)
        assert torch.equal(noise(x), ref)
    assert torch.equal(x, x_copy)  # input untouched


def test_colored_embedding_noise_uniform_and_correlated() -> None:
    alpha, B, L, d = 5.0, 2, 8, 16
    mag = alpha / math.sqrt(L * d)
    steps = {}
    for beta in (0.0, 1.0):
        noise = ColoredEmbeddingNoise(Color(beta, alpha), seed=1, max_batch=B, max_len=L, max_steps=512)
        steps[beta] = torch.stack([noise.sample(torch.Size([B, L, d])) for _ in range(512)]).view(512, -1)
    for e in steps.values():
        assert float(e.abs().max()) <= mag * (1 + 1e-6)
        # uniform on [−mag, mag]: mean 0, variance mag²/3 (±5 %)
        assert float(e.var()) == pytest.approx(mag**2 / 3, rel=0.05)
        hist = torch.histc(e, bins=10, min=-mag, max=mag) / e.numel()
        assert float((hist - 0.1).abs().max()) < 0.015
    lag1 = {b: float(torch.nn.functional.cosine_similarity(e[1:], e[:-1], dim=0).mean()) for b, e in steps.items()}
    assert abs(lag1[0.0]) < 0.05 and lag1[1.0] > 0.3
    with pytest.raises(ParameterError, match="max_len"):
        ColoredEmbeddingNoise(Color(1.0, 5.0), max_len=4)(torch.zeros(1, 5, 3))


# --------------------------------------------------------------------------- spectral filters


def _series(steps: int = 300, n: int = 5) -> torch.Tensor:
    return torch.randn(steps, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _run(filt_factory, g: torch.Tensor) -> torch.Tensor:
    p = torch.nn.Parameter(torch.zeros(g.shape[1], dtype=g.dtype))
    f = filt_factory([p])
    out = []
    for t in range(len(g)):
        p.grad = g[t].clone()
        f.step()
        out.append(p.grad.clone())
    return torch.stack(out)


def test_grokfast_ema_closed_form() -> None:
    g, a, lam = _series(), 0.9, 2.0
    out = _run(lambda ps: GrokfastEMA(ps, alpha=a, lamb=lam), g)
    gn = g.numpy()
    for t in (0, 1, 57, 299):  # m_t = α^t g_0 + (1 − α) Σ_{s=1..t} α^{t−s} g_s
        m = a**t * gn[0] + (1 - a) * sum(a ** (t - s) * gn[s] for s in range(1, t + 1))
        np.testing.assert_allclose(out[t].numpy(), gn[t] + lam * m, rtol=1e-10, atol=1e-12)


def test_grokfast_ma_closed_form() -> None:
    g, w, lam = _series(), 10, 5.0
    out = _run(lambda ps: GrokfastMA(ps, window=w, lamb=lam), g)
    gn = g.numpy()
    for t in range(len(g)):
        expected = gn[t] + (lam * gn[t - w + 1 : t + 1].mean(0) if t >= w - 1 else 0.0)
        np.testing.assert_allclose(out[t].numpy(), expected, rtol=1e-9, atol=1e-9)


def test_grokfast_ma_float32_forgets_large_old_gradients() -> None:
    # regression: a float32 running sum kept the rounding residue of large early gradients after they
    # left the window, and it swamped the mean of the small late ones (in grokking, gradients shrink
    # by orders of magnitude once the training set is memorised)
    w, lam = 5, 5.0
    gen = torch.Generator().manual_seed(3)
    g = torch.cat([1e4 * torch.randn(w, 64, generator=gen), 1e-3 * torch.randn(20, 64, generator=gen)])
    out = _run(lambda ps: GrokfastMA(ps, window=w, lamb=lam), g.float())
    g64 = g.float().double()
    for t in range(2 * w, len(g)):  # the window holds only small gradients
        expected = g64[t] + lam * g64[t - w + 1 : t + 1].mean(0)
        np.testing.assert_allclose(out[t].double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-9)


def test_grokfast_ma_matches_the_papers_algorithm_in_a_training_loop() -> None:
    """Against Lee et al.'s algorithm, written out: per parameter with a gradient, keep the last
    ``window`` raw gradients; once the window is full, grad ← grad + λ·mean(window); then Adam."""
    w, lam, steps = 4, 5.0, 15
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 2, generator=gen)

    def make() -> torch.nn.Module:
        m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        m.unused = torch.nn.Parameter(torch.ones(3))  # never gets a gradient: skipped
        m.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        return m

    ours, ref = make(), make()
    filt = GrokfastMA(ours.parameters(), window=w, lamb=lam)
    history: dict[str, deque] = {}
    opt_o, opt_r = torch.optim.Adam(ours.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
    for t in range(steps):
        b = slice(8 * (t % 4), 8 * (t % 4) + 8)  # a different batch each step: the gradient series varies
        for m, opt in ((ours, opt_o), (ref, opt_r)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(m(x[b]), y[b]).backward()
        before = {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}
        filt.step()
        for n, p in ref.named_parameters():
            if p.requires_grad and p.grad is not None:
                h = history.setdefault(n, deque(maxlen=w))
                h.append(p.grad.detach().clone())
                if len(h) == w:
                    p.grad = p.grad + lam * (sum(h) / len(h))
        for n, p in ours.named_parameters():  # warm-up: unchanged until the window is full
            if t < w - 1 and n in before:
                assert torch.equal(p.grad, before[n])
        opt_o.step()
        opt_r.step()
    assert ours.unused.grad is None and ours.frozen.grad is None
    for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    assert not torch.equal(ours[0].weight, make()[0].weight)  # it trained


def test_spectral_gain_closed_forms() -> None:
    beta, lam, steps = 1.0, 2.0, 200
    bank = fit_bank(beta, steps)
    dc = bank.a + bank.c.sum()
    impulse = torch.zeros(60, 1, dtype=torch.float64)
    impulse[0] = 1.0
    out = _run(lambda ps: SpectralGain(ps, beta=beta, lamb=lam, max_steps=steps), impulse)[:, 0].numpy()
    h = np.array([bank.a] + [np.sum(bank.c * bank.lerp * (1 - bank.lerp) ** (n - 1)) for n in range(1, 60)]) / dc
    np.testing.assert_allclose(out, np.eye(60)[0] + lam * h, rtol=1e-9, atol=1e-12)
    # |H|² is the fitted 1/f^β spectrum up to a constant, and H(0) = 1
    f = np.geomspace(1e-3, 0.5, 50)
    power = np.abs(spectral_gain_response(beta, f, max_steps=steps)) ** 2
    ratio = power / bank.spectrum(f)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    assert abs(spectral_gain_response(beta, np.array([0.0]), max_steps=steps)[0]) == pytest.approx(1.0)


def test_filters_state_round_trip_and_validation() -> None:
    g = _series(40, 3)
    for factory in (
        lambda ps: GrokfastEMA(ps, alpha=0.8),
        lambda ps: GrokfastMA(ps, window=5),
        lambda ps: SpectralGain(ps, max_steps=50),
    ):
        full = _run(factory, g)
        p = torch.nn.Parameter(torch.zeros(3, dtype=g.dtype))
        f = factory([p])
        for t in range(20):
            p.grad = g[t].clone()
            f.step()
        f2 = factory([p])
        f2.load_state_dict(f.state_dict())
        for t in range(20, 40):
            p.grad = g[t].clone()
            f2.step()
            np.testing.assert_allclose(p.grad.numpy(), full[t].numpy(), rtol=1e-12)
    with pytest.raises(ParameterError, match=r"alpha must be in \[0, 1\)"):
        GrokfastEMA([], alpha=1.0)
    with pytest.raises(ParameterError, match="window"):
        GrokfastMA([], window=0)
