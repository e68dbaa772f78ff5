"""Colored-noise sources and estimators: statistics with fixed seeds and stated tolerances."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sazanami.errors import ParameterError
from sazanami.noise.colored import (
    ColoredLanes,
    ColoredNoise,
    NoiseState,
    _fit_octaves,
    _i64,
    _mix64,
    _mix64_,
    colored_noise_at,
    colored_noise_at_spectrum,
    colored_noise_block,
    fit_bank,
)
from sazanami.noise.spectra import dfa_exponent, plot_psd, psd, psd_slope

BETAS = (0.0, 0.5, 1.0, 1.5, 2.0)
BAND = (1 / 128, 1 / 8)  # cycles/step; Welch nperseg 1024 over 4096 steps → 121 frequencies
SLOPE_TOL = 0.05  # estimator sd at 128 × 4096 is ≈ 0.01 (measured over seeds)


# --------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("beta", BETAS)
def test_streaming_slope(beta: float) -> None:
    x = ColoredNoise(beta, 128, seed=11, max_steps=4096).steps(4096)  # (4096, 128)
    assert psd_slope(x, BAND) == pytest.approx(beta, abs=SLOPE_TOL)


@pytest.mark.parametrize("beta", BETAS)
def test_block_slope(beta: float) -> None:
    x = colored_noise_block(beta, 4096, 128, seed=12)
    assert x.shape == (4096, 128)
    assert psd_slope(x, BAND) == pytest.approx(beta, abs=SLOPE_TOL)


@pytest.mark.parametrize("beta", (0.3, 1.0, 1.7, 2.0))
def test_one_innovation_form_has_the_fitted_spectrum(beta: float) -> None:
    """|H(f)|² of y_t = a e_t + Σ c_k v_k(t), v_k ← lerp(v_k, e_t, 1 − φ_k) equals the NNLS bank's PSD."""
    bank = fit_bank(beta, 4096)
    f = np.geomspace(1e-5, 0.5, 400)
    z = np.exp(-2j * np.pi * f)[:, None]
    phi = 1 - bank.lerp
    h = bank.a + (bank.c * bank.lerp * z / (1 - phi * z)).sum(axis=1)
    np.testing.assert_allclose(np.abs(h) ** 2, bank.spectrum(f), rtol=1e-6)
    # unit variance: the bank's weights sum to 1 and each AR(1) spectrum integrates to 1
    assert bank.weights.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("beta", (0.5, 1.0, 1.5))
def test_fitted_local_slope_below_a_tenth(beta: float) -> None:
    """The fitted spectrum's local log-log slope stays within 0.03 of β from 1/4096 to 0.1."""
    src = ColoredNoise(beta, 1, seed=0)
    f = np.geomspace(1 / 4096, 0.1, 300)
    local = -np.gradient(np.log(src.spectrum(f)), np.log(f))
    assert np.abs(local - beta).max() < 0.03


def test_white_is_exactly_white() -> None:
    src = ColoredNoise(0.0, 256, seed=3)
    assert src.components == 0
    x = src.steps(2048).double()  # (2048, 256)
    n = x.numel()
    for lag in (1, 2, 3, 10):
        r = float((x[lag:] * x[:-lag]).mean())
        assert abs(r) < 4 / n**0.5  # ±4 sd of an uncorrelated estimate
    # marginal: Gaussian (Box–Muller on 24-bit uniforms: |e| ≤ √(48 ln 2) ≈ 5.77)
    assert float(x.abs().max()) <= 5.77
    assert float((x**4).mean()) == pytest.approx(3.0, abs=0.05)


# --------------------------------------------------------------------------- moments


@pytest.mark.parametrize("beta", (0.0, 1.0, 2.0))
def test_unit_variance_zero_mean_from_step_zero(beta: float) -> None:
    """Stationary start: across 20000 streams, every early step has mean 0 and variance 1."""
    x = ColoredNoise(beta, 20_000, seed=5).steps(8).double()  # (8, 20000)
    # sd of a mean is 1/√20000 ≈ 0.007, of a variance √(2/20000) ≈ 0.01: tolerances ≈ 4 sd
    assert x[0].mean().item() == pytest.approx(0.0, abs=0.03)
    assert x[0].var().item() == pytest.approx(1.0, abs=0.05)
    assert x.mean(dim=1).abs().max().item() < 0.03
    assert (x.var(dim=1) - 1).abs().max().item() < 0.05


@pytest.mark.parametrize("beta", (0.5, 1.0))
def test_moments_over_time_match_the_spectrum(beta: float) -> None:
    """Time averages over 4096 steps: the low-frequency power sets how far they stray.

    The variance of a stream's 4096-step mean is v = ∫ S(f)·Fejér_T(f) df (0.0095 at β = 0.5,
    0.17 at β = 1: much of pink noise's power lies below 1/4096), so the grand mean of 64
    streams must lie within 4·√(v/64) of 0 and a stream's temporal variance averages 1 − v.
    """
    src = ColoredNoise(beta, 64, seed=6)
    f = np.linspace(1e-7, 0.5, 200_001)  # 100 points per Fejér lobe
    fejer = (np.sin(np.pi * f * 4096) / (4096 * np.sin(np.pi * f))) ** 2
    v = 2 * np.trapezoid(src.spectrum(f) * fejer, f)
    x = src.steps(4096).double()  # (4096, 64)
    assert abs(x.mean().item()) < 4 * (v / 64) ** 0.5
    # measured over 10 seeds: sd 0.004 (β = 0.5) and 0.015 (β = 1) around 1 − v
    assert x.var(dim=0).mean().item() == pytest.approx(1 - v, abs=0.05)


@pytest.mark.parametrize("beta", (0.0, 1.0, 2.0))
def test_block_moments(beta: float) -> None:
    x = colored_noise_block(beta, 1024, 1024, seed=7).double()
    # the DC term is zero: every stream has zero sample mean
    assert x.mean(dim=0).abs().max().item() < 1e-5
    # expected variance 1; a β = 2 stream's variance sits mostly in its lowest frequency
    # (relative sd ≈ 0.65), so the mean over 1024 streams has sd ≈ 0.02
    assert x.var(dim=0).mean().item() == pytest.approx(1.0, abs=0.1)


# --------------------------------------------------------------------------- state


def test_snapshot_restore_is_exact() -> None:
    src = ColoredNoise(1.0, 50, seed=8, block=6)
    src.steps(37)  # odd: the snapshot falls inside a Box–Muller pair and a refill block
    snap = src.snapshot()
    assert isinstance(snap, NoiseState) and snap.step == 37
    first = src.steps(50)
    src.restore(snap)
    assert torch.equal(src.steps(50), first)
    # a fresh source with the same configuration continues identically as well
    other = ColoredNoise(1.0, 50, seed=123, block=64)
    other.restore(snap)
    assert torch.equal(other.steps(50), first)
    # the snapshot is a copy: later steps do not change it
    assert snap.step == 37 and not torch.equal(snap.state, src.snapshot().state)


def test_fork_continues_from_the_same_state_with_fresh_randomness() -> None:
    src = ColoredNoise(2.0, 256, seed=9)
    src.steps(20)
    before = src.snapshot()
    fork = src.fork(seed=99)
    assert torch.equal(fork.snapshot().state, before.state) and fork.position == 20
    original, forked = src.steps(400), fork.steps(400)
    assert not torch.equal(original[0], forked[0])
    # brown noise moves little per step: the first values agree closely, later ones drift apart
    first = torch.corrcoef(torch.stack([original[0], forked[0]]))[0, 1].item()
    late = torch.corrcoef(torch.stack([original[-1], forked[-1]]))[0, 1].item()
    assert first > 0.99 and late < first
    # the original is untouched by the fork; forking with its own seed repeats it
    src.restore(before)
    assert torch.equal(src.fork(seed=9).steps(400), original)


def test_restore_rejects_other_configurations() -> None:
    snap = ColoredNoise(1.0, 4, seed=1).snapshot()
    with pytest.raises(ParameterError, match="state is for"):
        ColoredNoise(0.5, 4, seed=1).restore(snap)
    with pytest.raises(ParameterError, match="state must be a NoiseState"):
        ColoredNoise(1.0, 4, seed=1).restore("nope")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- counter-based seeding


@pytest.mark.parametrize("beta", (0.0, 1.0, 1.5))
def test_batch_invariance(beta: float) -> None:
    """Stream j gives bitwise the same values among 3 or 300 streams, whatever the block size."""
    ids = [5, 17, 250]
    small = ColoredNoise(beta, 3, seed=10, stream_ids=ids, block=2).steps(100)
    for block in (None, 6, 64):
        big = ColoredNoise(beta, 300, seed=10, block=block).steps(100)
        assert torch.equal(big[:, ids], small)


def test_per_stream_seeds_match_separate_sources() -> None:
    """A rows × vocab batch with per-row seeds equals one source per row."""
    vocab, seeds = 40, (3, 2**64 - 1)
    batch = ColoredNoise(
        1.0, 2 * vocab, seed=[seeds[0]] * vocab + [seeds[1]] * vocab, stream_ids=list(range(vocab)) * 2
    ).steps(30)
    for r, s in enumerate(seeds):
        assert torch.equal(batch[:, r * vocab : (r + 1) * vocab], ColoredNoise(1.0, vocab, seed=s).steps(30))


def test_same_seed_same_values_other_seed_other_values() -> None:
    a = ColoredNoise(1.0, 16, seed=42).steps(64)
    assert torch.equal(a, ColoredNoise(1.0, 16, seed=42).steps(64))
    assert not torch.allclose(a, ColoredNoise(1.0, 16, seed=43).steps(64))
    b = colored_noise_block(1.0, 256, 4, seed=42)
    assert torch.equal(b, colored_noise_block(1.0, 256, 4, seed=42))
    assert not torch.allclose(b, colored_noise_block(1.0, 256, 4, seed=43))
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(
        colored_noise_block(1.0, 64, seed=gen), colored_noise_block(1.0, 64, seed=torch.Generator().manual_seed(5))
    )


def test_global_rngs_change_nothing_and_are_not_consumed() -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return ColoredNoise(1.0, 8, seed=1).steps(40), colored_noise_block(1.0, 128, 4, seed=1)

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first = run()
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    second = run()
    assert torch.equal(torch.get_rng_state(), torch_state)  # nothing drawn from the global RNGs
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    torch.manual_seed(12345)
    np.random.seed(12345)
    third = run()
    for x, y, z in zip(first, second, third, strict=True):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_steps_equals_repeated_step_and_float64_agrees() -> None:
    a = ColoredNoise(1.5, 7, seed=4)
    b = ColoredNoise(1.5, 7, seed=4)
    assert torch.equal(a.steps(20), torch.stack([b.step() for _ in range(20)]))
    c = ColoredNoise(1.5, 7, seed=4, dtype=torch.float64).steps(20)
    assert c.dtype == torch.float64
    assert (c - ColoredNoise(1.5, 7, seed=4).steps(20).double()).abs().max().item() < 1e-4


def test_tensor_hash_matches_reference() -> None:
    rng = random.Random(0)
    words = [rng.getrandbits(64) for _ in range(500)] + [0, 1, 2**63, 2**64 - 1]
    z = torch.tensor([_i64(w) for w in words], dtype=torch.int64)
    out = _mix64_(z.clone(), torch.empty_like(z))
    assert out.tolist() == [_i64(_mix64(w)) for w in words]


# --------------------------------------------------------------------------- lanes


def test_lanes_equal_one_source_per_lane_when_stepped_apart() -> None:
    """Lane l is ColoredNoise(β, S, seeds[l]); lanes that skip a step resume where they were."""
    seeds = [3, 4, 5]
    lanes = ColoredLanes(1.0, 6, seeds, max_steps=256)
    refs = [ColoredNoise(1.0, 6, s, max_steps=256) for s in seeds]
    for t in range(20):
        pick = None if t % 3 else torch.tensor([0, 2])  # every third step lane 1 waits
        got = lanes.step(pick)
        want = [refs[i].step() for i in ([0, 1, 2] if pick is None else [0, 2])]
        assert torch.equal(got, torch.stack(want))
    assert lanes.positions.tolist() == [20, 13, 20]
    lanes.select(torch.tensor([2, 1]))
    assert torch.equal(lanes.step(), torch.stack([refs[2].step(), refs[1].step()]))


# --------------------------------------------------------------------------- stateless noise


def _stateless(beta: float, streams: int, steps: int, seed: int) -> torch.Tensor:
    """(steps, streams) of colored_noise_at, evaluated in blocks of 1024 steps."""
    ids = torch.arange(streams)[None, :]
    return torch.cat(
        [colored_noise_at(beta, seed, ids, torch.arange(t, t + 1024)[:, None]) for t in range(0, steps, 1024)]
    )


@pytest.mark.parametrize("beta", BETAS)
def test_stateless_slope(beta: float) -> None:
    """Measured over 4 seeds at 64 streams the estimate's spread was ≈ 0.015; here 128 streams."""
    x = _stateless(beta, 128, 4096, seed=21)
    assert x.shape == (4096, 128)
    assert psd_slope(x, BAND) == pytest.approx(beta, abs=SLOPE_TOL)


@pytest.mark.parametrize("beta", BETAS)
def test_stateless_spectrum_fit(beta: float) -> None:
    """The exact spectrum: unit variance, and its log-log line over the band has slope −β ± 0.03."""
    f = np.linspace(0, 0.5, 200_001)
    assert 2 * np.trapezoid(colored_noise_at_spectrum(beta, f), f) == pytest.approx(1.0, abs=1e-3)
    g = np.geomspace(*BAND, 300)
    slope = -np.polyfit(np.log(g), np.log(colored_noise_at_spectrum(beta, g)), 1)[0]
    assert slope == pytest.approx(beta, abs=0.03)
    assert _fit_octaves(beta, 4096).weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_stateless_white_is_one_fresh_normal_per_step() -> None:
    octs = _fit_octaves(0.0, 4096)
    assert octs.lengths.tolist() == [1] and octs.weights.tolist() == [1.0]
    x = _stateless(0.0, 256, 2048, seed=3).double()
    n = x.numel()
    for lag in (1, 2, 3, 10):
        assert abs(float((x[lag:] * x[:-lag]).mean())) < 4 / n**0.5
    assert float(x.abs().max()) <= 5.77
    assert float((x**4).mean()) == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("beta", (0.5, 1.0, 2.0))
def test_stateless_unit_variance_at_every_step(beta: float) -> None:
    """Across 20000 streams, steps 0, 1, 999 and 10^6 each have mean 0 and variance 1 (± 4 sd)."""
    x = colored_noise_at(beta, 5, torch.arange(20_000)[None, :], torch.tensor([0, 1, 999, 10**6])[:, None]).double()
    assert x.mean(dim=1).abs().max().item() < 0.03
    assert (x.var(dim=1) - 1).abs().max().item() < 0.05


def _reference_value(beta: float, seed: int, stream: int, step: int) -> float:
    """The construction of colored_noise_at's docstring, on Python ints and floats."""
    octs = _fit_octaves(beta, 4096)
    k = _mix64(_mix64(seed ^ 0x6A09E667F3BCC909) + (stream + 1) * 0x9E3779B97F4A7C15)
    k2 = _mix64(k ^ 0xBB67AE8584CAA73B)
    clock = step + (k2 >> 24)
    y = 0.0
    for length, w in zip(octs.lengths.tolist(), octs.weights.tolist()):
        j = (length - 1).bit_length()
        h = _mix64(k2 + (64 * (clock // length) + j + 1) * 0x9E3779B97F4A7C15)
        u1 = (((h >> 40) ^ 0x800000) + 1) * 2.0**-24  # the top 24 bits, sign bit flipped (as the tensor code)
        u2 = (h & 0xFFFFFF) * 2.0**-24
        y += math.sqrt(w) * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return y


def test_stateless_matches_reference() -> None:
    cases = [(1.0, 0, 0, 0), (1.0, 2**64 - 1, 151_935, 4095), (2.0, 123, 7, 10**9), (0.5, 9, 2**40, 77)]
    for beta, seed, stream, step in cases:
        got = colored_noise_at(beta, seed, torch.tensor([stream]), step, dtype=torch.float64)
        assert float(got[0]) == pytest.approx(_reference_value(beta, seed, stream, step), abs=1e-12)


def test_stateless_candidate_set_and_order_independence() -> None:
    """A stream's value is the same bits alone, among others, in any order, shape or input type."""
    ids = torch.tensor([5, 17, 250, 3, 100_000, 151_935])
    steps = torch.arange(64)[:, None]
    full = colored_noise_at(1.0, 10, ids[None, :], steps)  # (64, 6)
    wide = colored_noise_at(1.0, 10, torch.arange(151_936)[None, :], torch.tensor([[0], [13], [63]]))
    assert torch.equal(wide[:, ids], full[[0, 13, 63]])
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    assert torch.equal(colored_noise_at(1.0, 10, ids[perm][None, :], steps), full[:, perm])
    for i, t in ((0, 0), (2, 13), (5, 63)):
        assert torch.equal(colored_noise_at(1.0, 10, ids[i : i + 1], t)[0], full[t, i])
    # later steps first, one step at a time: nothing is carried from call to call
    for t in (63, 0, 31):
        assert torch.equal(colored_noise_at(1.0, 10, ids, t), full[t])
    assert torch.equal(colored_noise_at(1.0, 10, ids.numpy(), np.arange(64)[:, None]), full)
    # one seed per row broadcast against (rows, candidates) ids and per-row steps
    seeds = torch.tensor([[10], [11]])
    rows = colored_noise_at(1.0, seeds, torch.stack([ids, ids.flip(0)]), torch.tensor([[7], [9]]))
    assert torch.equal(rows[0], full[7])
    assert torch.equal(rows[1], colored_noise_at(1.0, 11, ids.flip(0), 9))


def test_stateless_seeds_and_global_rngs() -> None:
    ids = torch.arange(16)
    a = colored_noise_at(1.0, 42, ids, torch.arange(64)[:, None])
    torch.manual_seed(0)
    np.random.seed(0)
    state = torch.get_rng_state()
    assert torch.equal(a, colored_noise_at(1.0, 42, ids, torch.arange(64)[:, None]))
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.allclose(a, colored_noise_at(1.0, 43, ids, torch.arange(64)[:, None]))
    # other colors are other sums of the same kind of words, not the same values
    assert not torch.allclose(a, colored_noise_at(1.5, 42, ids, torch.arange(64)[:, None]))


@pytest.mark.parametrize(
    ("call", "param", "message"),
    [
        (lambda: colored_noise_at(2.5, 0, torch.arange(3), 0), "beta", "beta must be in [0, 2], got 2.5"),
        (
            lambda: colored_noise_at(1.0, 0, torch.arange(3), -1),
            "step",
            "step must be an integer in [0, 2**56) or an integer array of them, got -1",
        ),
        (
            lambda: colored_noise_at(1.0, 0, torch.arange(3), 2**56),
            "step",
            "step must be an integer in [0, 2**56) or an integer array of them, got 72057594037927936",
        ),
        (
            lambda: colored_noise_at(1.0, 0, torch.arange(3), torch.tensor([0, -2])),
            "step",
            "step must be an integer in [0, 2**56) or an integer array of them, got -2",
        ),
        (
            lambda: colored_noise_at(1.0, 0, torch.ones(3), 0),
            "stream_ids",
            "stream_ids must be an integer in [0, 2**63) or an integer array of them, got a torch.float32 tensor",
        ),
        (
            lambda: colored_noise_at(1.0, 0, np.array([-1]), 0),
            "stream_ids",
            "stream_ids must be an integer in [0, 2**63) or an integer array of them, got -1",
        ),
        (lambda: colored_noise_at(1.0, -1, torch.arange(3), 0), "seed", "seed must be an integer in [0, 2**64)"),
        (
            lambda: colored_noise_at(1.0, 0, torch.arange(3), 0, max_steps=1),
            "max_steps",
            "max_steps must be an integer in [2, inf), got 1",
        ),
    ],
)
def test_stateless_parameter_errors(call, param: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.param == param
    assert message in str(info.value)


# --------------------------------------------------------------------------- estimators


def test_dfa_exponents() -> None:
    """DFA-1 α ≈ (β + 1)/2: pink ≈ 1 within ±0.05 (measured 0.99), white ≈ 0.5."""
    assert dfa_exponent(ColoredNoise(1.0, 64, seed=13).steps(4096)) == pytest.approx(1.0, abs=0.05)
    assert dfa_exponent(colored_noise_block(1.0, 4096, 64, seed=13)) == pytest.approx(1.0, abs=0.05)
    assert dfa_exponent(ColoredNoise(0.0, 64, seed=13).steps(4096)) == pytest.approx(0.5, abs=0.05)


def test_psd_shapes_and_one_dimensional_input() -> None:
    x = colored_noise_block(1.0, 2048, 3, seed=14)
    freqs, power = psd(x)
    assert freqs.shape == power.shape == (513,) and freqs[-1] == 0.5
    f1, p1 = psd(x[:, 0])
    assert f1.shape == (513,) and np.all(p1 >= 0)
    assert isinstance(psd_slope(x[:, 0].numpy()), float)
    # short series (the metrics module fits texts of ≥ 64 tokens)
    assert np.isfinite(psd_slope(torch.randn(64, generator=torch.Generator().manual_seed(0))))
    assert np.isfinite(dfa_exponent(np.arange(64.0) % 7))


def test_plot_psd_writes_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_psd(colored_noise_block(1.0, 1024, 8, seed=15), 1.0, tmp_path / "psd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- parameter errors


@pytest.mark.parametrize(
    ("call", "param", "message"),
    [
        (lambda: ColoredNoise(2.5, 4, 0), "beta", "beta must be in [0, 2], got 2.5"),
        (lambda: ColoredNoise(-0.1, 4, 0), "beta", "beta must be in [0, 2], got -0.1"),
        (lambda: ColoredNoise(1.0, 0, 0), "streams", "streams must be an integer in [1, inf), got 0"),
        (lambda: ColoredNoise(1.0, 2.5, 0), "streams", "streams must be an integer in [1, inf), got 2.5"),
        (lambda: ColoredNoise(1.0, 4, 0, max_steps=0), "max_steps", "max_steps must be an integer in [1, inf), got 0"),
        (
            lambda: ColoredNoise(1.0, 4, 1.5),
            "seed",
            "seed must be an integer in [0, 2**64) or one such integer per stream, got 1.5",
        ),
        (
            lambda: ColoredNoise(1.0, 4, -1),
            "seed",
            "seed must be an integer in [0, 2**64) or one such integer per stream, got -1",
        ),
        (lambda: ColoredNoise(1.0, 4, [1, 2]), "seed", "seed must hold one seed per stream (4), got 2"),
        (lambda: ColoredNoise(1.0, 4, 0, block=3), "block", "block must be an even integer in [2, inf), got 3"),
        (lambda: ColoredNoise(1.0, 4, 0, stream_ids=[0, 1]), "stream_ids", "stream_ids must hold 4 ids, got 2"),
        (lambda: ColoredNoise(1.0, 4, 0, dtype=torch.float16), "dtype", "dtype must be torch.float32 or torch.float64"),
        (lambda: ColoredNoise(1.0, 4, 0).steps(0), "n", "n must be an integer in [1, inf), got 0"),
        (lambda: ColoredNoise(1.0, 4, 0).fork(seed="x"), "seed", "seed must be an integer in [0, 2**64)"),
        (lambda: colored_noise_block(3, 16), "beta", "beta must be in [0, 2], got 3"),
        (lambda: colored_noise_block(1.0, 0), "steps", "steps must be an integer in [2, inf), got 0"),
        (lambda: colored_noise_block(1.0, 16, -2), "streams", "streams must be an integer in [1, inf), got -2"),
        (lambda: colored_noise_block(1.0, 16, 1, seed=0.5), "seed", "seed must be an integer in [0, 2**64)"),
        (lambda: psd_slope(np.ones(64), band=(0.3, 0.2)), "band", "band must satisfy 0 < f_lo < f_hi <= 0.5"),
        (lambda: psd_slope(np.ones((4, 4, 4))), "x", "x must be 1-D (steps,) or 2-D (steps, streams)"),
    ],
)
def test_parameter_errors(call, param: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.param == param
    assert message in str(info.value)
