"""The sampler pipeline on hand-built logits (vocab ~ 10, batch ~ 4)."""

from __future__ import annotations

import math

import pytest
import torch

from sazanami.sampling.sampler import (
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


# -- logit bias, DRY, top-nσ, XTC ------------------------------------------------------------------
from sazanami.errors import ParameterError  # noqa: E402
from sazanami.sampling.params import SamplingParams  # noqa: E402
from sazanami.sampling.rows import RowRequest  # noqa: E402
from sazanami.sampling.sampler import (  # noqa: E402
    SamplerBatch,
    apply_logit_bias,
    dry_penalties,
    top_n_sigma,
    xtc,
)


def synthetic(B: int = 4, V: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 2


def test_logit_bias_by_hand_and_validation():
    x = synthetic()
    bias = torch.zeros(4, 20)
    bias[1, 3], bias[2, 7] = 5.0, -100.0
    before = x.clone()
    out = apply_logit_bias(x, bias)
    assert torch.equal(x, before)
    assert out[1, 3] == x[1, 3] + 5 and out[2, 7] == x[2, 7] - 100 and torch.equal(out[0], x[0])
    p = SamplingParams(logit_bias={"3": 5, 7: -1.5})
    assert p.logit_bias == ((3, 5.0), (7, -1.5)) and p.to_dict()["logit_bias"] == {"3": 5.0, "7": -1.5}
    assert SamplingParams.from_dict(p.to_dict()) == p == SamplingParams(logit_bias='{"3": 5, "7": -1.5}')
    with pytest.raises(ParameterError, match=r"logit_bias must be in \[-100, 100\], got 101"):
        SamplingParams(logit_bias={"1": 101})
    with pytest.raises(ParameterError, match="token ids"):
        SamplingParams(logit_bias={"x": 1})
    # in the sampler: a +100 bias makes greedy pick the token; an id past the vocabulary is an error
    rows = [
        RowRequest([0], SamplingParams(temperature=0, logit_bias={"11": 100}), 1),
        RowRequest([0], SamplingParams(temperature=0), 2),
    ]
    tok, _ = SamplerBatch(rows, 20).sample(x[:2])
    assert tok.tolist() == [11, int(x[1].argmax())]
    with pytest.raises(ParameterError, match=r"\[0, 19\], got 25"):
        SamplerBatch([RowRequest([0], SamplingParams(logit_bias={"25": 1}), 1)], 20)


def test_dry_by_hand():
    # context a b c x a b → "a b" repeats; continuing with c would extend it to 3 tokens (repeat length 2)
    a, b, c, x = 1, 2, 3, 4
    pen = dry_penalties([a, b, c, x, a, b], frozenset(), 0.8, 1.75, 2)
    assert pen == {c: pytest.approx(0.8 * 1.75**0)}
    # longer repeat: a b c x a b c → x follows "a b c" (length 3)
    pen = dry_penalties([a, b, c, x, a, b, c], frozenset(), 0.8, 1.75, 2)
    assert pen == {x: pytest.approx(0.8 * 1.75)}
    assert dry_penalties([a, b, c, x, a, b], frozenset(), 0.8, 1.75, 3) == {}  # shorter than allowed
    assert dry_penalties([a, b, c, x, a, b], frozenset({x}), 0.8, 1.75, 2) == {c: pytest.approx(0.8)}
    assert dry_penalties([a, b, c, x, a, b], frozenset({c}), 0.8, 1.75, 2) == {}  # breakers are never penalised
    assert dry_penalties([a, b, x, a, b], frozenset({b}), 0.8, 1.75, 1) == {}  # the tail ends in a breaker
    assert dry_penalties([a, b, c, x, a, b], frozenset(), 0.8, 1.75, 2, last_n=3) == {}  # a b c out of range
    assert dry_penalties([a, b, c, x, a, b], frozenset(), 0.0, 1.75, 2) == {}


def test_dry_in_the_sampler_uses_prompt_and_history():
    x = torch.zeros(2, 20)
    p = SamplingParams(temperature=0, dry_multiplier=2.0, dry_allowed_length=2)
    rows = [RowRequest([5, 6, 7, 8, 5], p, 1), RowRequest([5, 6, 7, 8, 5], SamplingParams(temperature=0), 2)]
    sb = SamplerBatch(rows, 20)
    tok, _ = sb.sample(x, generated=[[6], [6]])  # context 5 6 7 8 5 6: 7 would repeat "5 6 7"
    out = sb._dry(x, [[6], [6]])
    assert out[0, 7] == -2.0 and (out[0] != 0).sum() == 1 and torch.equal(out[1], x[1])
    assert torch.equal(x, torch.zeros(2, 20))
    with pytest.raises(ParameterError, match=r"dry_base must be in \[1, 10\], got 0.5"):
        SamplingParams(dry_base=0.5)
    with pytest.raises(ParameterError, match=r"dry_penalty_last_n must be in \[-1, 1000000\], got -2"):
        SamplingParams(dry_penalty_last_n=-2)


def test_dry_breakers_from_the_tokenizer():
    from sazanami.sampling.sampler import breaker_tokens

    class Tok:
        vocab_size = 6

        def token_text(self, t: int) -> str:
            return ["a", "b\n", ":", "c", "d*", "e"][t]

    assert breaker_tokens(Tok(), ("\n", ":", "*")) == frozenset({1, 2, 4})


def test_top_n_sigma_by_hand():
    x = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0, -math.inf]])
    # row 0: mean 2, σ = √2 ≈ 1.414; n = 1 keeps logit ≥ 4 − 1.414 = 2.586 → tokens 0, 1
    # row 1: finite 4 3 2 1: mean 2.5, σ = √1.25 ≈ 1.118; n = 2 keeps ≥ 1.764 → tokens 0, 1, 2
    before = x.clone()
    out = top_n_sigma(x, torch.tensor([1.0, 2.0]))
    assert torch.equal(x, before)
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False, False]
    assert torch.isfinite(out[1]).tolist() == [True, True, True, False, False]
    assert torch.equal(top_n_sigma(x, torch.tensor([0.0, 0.0])), x)  # 0 disables
    # temperature does not change the kept set
    assert torch.equal(torch.isfinite(top_n_sigma(x / 0.3, torch.tensor([1.0, 2.0]))), torch.isfinite(out))
    with pytest.raises(ParameterError, match=r"top_n_sigma must be in \[0, 100\], got -1"):
        SamplingParams(top_n_sigma=-1)


def test_xtc_by_hand():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]] * 4)
    x = probs.log()
    before = x.clone()
    thr = torch.full((4,), 0.15)
    # row 0 acts: 0.4, 0.3, 0.2 ≥ 0.15 → drop 0.4 and 0.3, keep 0.2 (the least likely top choice)
    # row 1: chance ≥ probability → unchanged; row 2: probability 0; row 3: one token ≥ 0.35 → unchanged
    out = xtc(
        x,
        torch.tensor([0.1, 0.9, 0.0, 0.1]),
        torch.tensor([0.5, 0.5, 0.0, 0.5]),
        torch.tensor([0.15, 0.15, 0.15, 0.35]),
    )
    assert torch.equal(x, before)
    assert torch.isfinite(out[0]).tolist() == [False, False, True, True, True]
    assert torch.equal(out[1:], x[1:])
    assert torch.equal(xtc(x, torch.zeros(4), torch.ones(4), thr).isfinite()[0], out[0].isfinite())
    with pytest.raises(ParameterError, match=r"xtc_probability must be in \[0, 1\], got 2"):
        SamplingParams(xtc_probability=2)


def test_xtc_coin_is_the_rows_own():
    """XTC's draw comes from the row's seed: same seed same tokens, and the global RNG changes nothing."""
    x = synthetic(B=4, V=20, seed=3).softmax(-1).log()
    p = SamplingParams(xtc_probability=0.5, xtc_threshold=0.05, temperature=0)

    def run(seeds):
        sb = SamplerBatch([RowRequest([0], p, s) for s in seeds], 20)
        return [sb.sample(x)[0].tolist() for _ in range(8)]

    torch.manual_seed(0)
    a = run([1, 2, 3, 4])
    torch.manual_seed(1)
    assert run([1, 2, 3, 4]) == a
    assert run([5, 6, 7, 8]) != a
    greedy = x.argmax(-1).tolist()
    acted = sum(t != g for step in a for t, g in zip(step, greedy))  # 32 draws, each acts with p = 0.5
    assert 6 <= acted <= 26
