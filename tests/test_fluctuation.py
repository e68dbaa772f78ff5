"""Fluctuations: parsing, each point of entry, exactness of the colored draw, adapters."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from sazanami.engine.loop import Engine, RowRequest
from sazanami.errors import ParameterError
from sazanami.noise.colored import ColoredNoise
from sazanami.noise.fluctuation import PRESETS, Entry, Fluctuation, gumbel_from_normal
from sazanami.sampling.params import SamplingParams

SHORT = dict(seed=3, max_tokens=24, ignore_eos=True)


def tokens(engine: Engine, fl, **kw) -> list[list[int]]:
    p = SamplingParams(fluctuation=fl, **(SHORT | kw))
    return [c.token_ids for c in engine.generate("noise", p)]


# -- the object -------------------------------------------------------------------------------
def test_presets_parse_and_round_trip(tmp_path):
    for name, fl in PRESETS.items():
        assert Fluctuation.parse(name) == fl
        assert Fluctuation.from_dict(json.loads(json.dumps(fl.to_dict()))) == fl
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"temperature": {"sigma": 0.5, "beta": 2}, "draw": {}}))
    fl = Fluctuation.parse(str(path))
    assert fl.temperature == Entry(sigma=0.5, beta=2) and fl.draw == Entry()
    assert Fluctuation.parse('{"preset": "pink-logits", "draw": {"beta": 0}}').active == ("logits", "draw")


def test_override_sigma_beta():
    fl = Fluctuation.parse("pink-temperature").override(sigma=0.4, beta=2.0)
    assert fl.temperature.sigma == 0.4 and fl.temperature.beta == 2.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"temperature": {"beta": 2.5}}, "temperature.beta must be in [0, 2], got 2.5"),
        ({"logits": {"sigma": -1}}, "logits.sigma must be in [0, 10], got -1"),
        ({"colour": {}}, "unknown fluctuation field 'colour'"),
        ({"draw": {"gamma": 1}}, "unknown field 'gamma' in fluctuation.draw"),
        ("purple-noise", "fluctuation must be a preset"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
    ],
)
def test_bad_fluctuations(spec, message):
    with pytest.raises(ParameterError) as info:
        SamplingParams(fluctuation=spec)
    assert message in str(info.value)


# -- points of entry in the engine ------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in PRESETS if n != "none"])
def test_each_preset_changes_output_and_is_reproducible(tiny_engine: Engine, name: str):
    base = tokens(tiny_engine, "none")
    a = tokens(tiny_engine, name)
    assert a == tokens(tiny_engine, name)
    fl = Fluctuation.parse(name)
    if name.endswith("hidden") or name.endswith("embedding"):
        fl = fl.override(sigma=0.5)  # the tiny model needs a strong push to flip tokens
        a = tokens(tiny_engine, fl)
    assert a != base


def test_none_equals_no_fluctuation(tiny_engine: Engine):
    assert tokens(tiny_engine, "none") == tokens(tiny_engine, None)


def test_hidden_noise_leaves_no_residue(tiny_engine: Engine):
    before = tokens(tiny_engine, None)
    tokens(tiny_engine, Fluctuation.parse("pink-hidden").override(sigma=0.5))
    assert tokens(tiny_engine, None) == before


def test_fluctuation_rows_are_batch_invariant(tiny_engine: Engine):
    p = SamplingParams(fluctuation="pink-logits", **SHORT)
    ids = tiny_engine.encode("alone")
    alone = tiny_engine.run([RowRequest(ids, p, seed=5)])[0]
    mixed = tiny_engine.run([RowRequest(tiny_engine.encode("x" * 30), p, seed=6), RowRequest(ids, p, seed=5)])[1]
    assert alone.token_ids == mixed.token_ids


def test_temperature_trace_follows_formula(tiny_engine: Engine):
    fl = Fluctuation(temperature=Entry(sigma=0.5, beta=1.0, t_min=0.3, t_max=1.5))
    c = tiny_engine.generate("t", SamplingParams(fluctuation=fl, trace=True, temperature=0.8, **SHORT))[0]
    temps = [s["temperature"] for s in c.trace]
    xs = [s["noise"]["temperature"] for s in c.trace]
    for t, x in zip(temps, xs):
        assert t == pytest.approx(min(max(0.8 * math.exp(0.5 * x), 0.3), 1.5), rel=1e-5)
    assert len(set(temps)) > 5


def test_noise_mixture_replaces_row_seed(tiny_engine: Engine):
    """With a noise-driven draw, a row's randomness is its noise mixture, not its seed."""
    p = SamplingParams(fluctuation={"logits": {"sigma": 0.3}, "draw": {"beta": 1}}, **SHORT)
    ids = tiny_engine.encode("mix")
    a = tiny_engine.run([RowRequest(ids, p, seed=1, noise=[(77, 1.0)])])[0]
    b = tiny_engine.run([RowRequest(ids, p, seed=2, noise=[(77, 1.0)])])[0]
    c = tiny_engine.run([RowRequest(ids, p, seed=1, noise=[(77, 0.6), (78, 0.8)])])[0]
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


# -- exactness of the colored draw ----------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_colored_gumbel_draw_is_exact(beta: float):
    """Across 4000 independent streams, the token drawn at steps 0, 7 and 31 follows softmax(logits).

    Colored noise is correlated in time, so one long run is not a set of independent
    draws; independent streams are (the counter-based RNG keys each stream), and every
    step must be an exact sample.
    """
    probs = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    rows = 4000
    src = ColoredNoise(beta, rows * 5, seed=11)
    counts = torch.zeros(3, 5)
    for step in range(32):
        tok = (probs.log().double() + gumbel_from_normal(src.step().view(rows, 5))).argmax(-1)
        if step in (0, 7, 31):
            counts[(0, 7, 31).index(step)] = torch.bincount(tok, minlength=5).float()
    expected = probs * rows
    for row in counts:
        chi2 = float(((row - expected) ** 2 / expected).sum())
        assert chi2 < 18.47  # p = 0.001, 4 degrees of freedom


def test_gumbel_argmax_matches_vectorised_draw():
    """The per-row sampler path uses the same transform as the test above."""
    fl = Fluctuation(draw=Entry(beta=1.0), noise_version=1)  # one stream per vocabulary entry
    st = fl.start(5, 5)
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0, -0.5])
    tok = st.gumbel_argmax(logits)
    z = st.draw_noise.last
    assert tok == int((logits.double() + gumbel_from_normal(z)).argmax())


def test_perturb_logits_keeps_masks_and_input():
    fl = Fluctuation.parse("pink-logits").override(sigma=2.0)
    st = fl.start(1, 6)
    logits = torch.tensor([1.0, -math.inf, 0.5, 2.0, -math.inf, 0.0])
    before = logits.clone()
    out = st.perturb_logits(logits)
    assert torch.equal(logits, before)
    assert torch.isinf(out[[1, 4]]).all() and torch.isfinite(out[[0, 2, 3, 5]]).all()
    assert not torch.equal(out, logits)


# -- stochastic beam search ----------------------------------------------------------------------
def test_stochastic_beams_distinct_and_seeded(tiny_engine: Engine):
    fl = {"beams": {"width": 4, "beta": 0}}
    p = SamplingParams(fluctuation=fl, seed=1, max_tokens=8, ignore_eos=True)
    a = tiny_engine.generate("beam", p)
    b = tiny_engine.generate("beam", p)
    assert len(a) == 4
    assert len({tuple(c.token_ids) for c in a}) == 4  # without replacement
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    g = [c.tag["perturbed_logprob"] for c in a]
    assert g == sorted(g, reverse=True)
    colored = tiny_engine.generate("beam", p.replace(fluctuation={"beams": {"width": 4, "beta": 1}}))
    assert len({tuple(c.token_ids) for c in colored}) == 4


def test_beam_width_one_top_value_matches_sequence_logprob(tiny_engine: Engine):
    """The sequence log-prob reported for a beam equals the sum of its processed step log-probs at T=1."""
    p = SamplingParams(
        fluctuation={"beams": {"width": 2, "beta": 0}}, seed=4, max_tokens=6, ignore_eos=True, temperature=1.0
    )
    for c in tiny_engine.generate("sum", p):
        assert c.tag["sequence_logprob"] == pytest.approx(sum(c.logprobs), abs=1e-3)


# -- adapters for transformers' generate ---------------------------------------------------------------
def test_logits_processor_inside_generate():
    transformers = pytest.importorskip("transformers")
    from sazanami.sampling.transformers_hooks import FluctuationLogitsProcessor, hidden_noise_hooks

    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[1, 2, 3, 4]])

    def run(fl, seed):
        proc = FluctuationLogitsProcessor(fl, seed=seed)
        with torch.random.fork_rng():
            torch.manual_seed(123)  # generate's own multinomial must not matter with `draw`
            out = model.generate(
                ids, do_sample=True, max_new_tokens=12, logits_processor=[proc], top_k=0, pad_token_id=0
            )
        return out[0, 4:].tolist()

    assert run("pink-draw", 1) == run("pink-draw", 1)
    assert run("pink-draw", 1) != run("pink-draw", 2)
    greedy = model.generate(ids, do_sample=False, max_new_tokens=12, pad_token_id=0)[0, 4:].tolist()
    with hidden_noise_hooks(model, Fluctuation.parse("pink-hidden").override(sigma=3.0), seed=1):
        noisy = model.generate(ids, do_sample=False, max_new_tokens=12, pad_token_id=0)[0, 4:].tolist()
    after = model.generate(ids, do_sample=False, max_new_tokens=12, pad_token_id=0)[0, 4:].tolist()
    assert noisy != greedy and after == greedy
    assert not any(layer._forward_hooks for layer in model.model.layers)


def test_quantile_draw_is_exact_and_validated():
    """The quantile draw: one colored stream per row; across 2000 rows each step follows softmax."""
    probs = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    fl = Fluctuation.parse({"draw": {"beta": 1, "mode": "quantile"}})
    counts = torch.zeros(2, 5)
    for s in range(2000):
        st = fl.start(s, 5)
        for step in range(16):
            tok = st.draw(probs.log())
            if step in (0, 15):
                counts[(0, 15).index(step), tok] += 1
    for row in counts:
        chi2 = float(((row - probs * 2000) ** 2 / (probs * 2000)).sum())
        assert chi2 < 18.47  # p = 0.001, 4 degrees of freedom
    with pytest.raises(ParameterError, match="draw.mode must be one of gumbel, quantile"):
        Fluctuation.parse({"draw": {"mode": "median"}})


def test_quantile_draw_in_engine(tiny_engine: Engine):
    a = tokens(tiny_engine, {"draw": {"beta": 1, "mode": "quantile"}})
    assert a == tokens(tiny_engine, {"draw": {"beta": 1, "mode": "quantile"}})
    assert a != tokens(tiny_engine, "pink-draw")


# -- batched state == per-row reference -----------------------------------------------------------
def _reference_step(states, logits, temp, h_layers, num_layers):
    """What the per-row sampler did: each row's FluctuationState, one by one (the reference)."""
    x = logits.clone()
    for b, st in enumerate(states):
        if st is not None:
            x[b] = st.perturb_logits(x[b])
    t = temp.clone()
    for b, st in enumerate(states):
        if st is not None:
            t[b] = st.temperature(float(t[b]))
    tok = torch.zeros(len(states), dtype=torch.long)
    for b, st in enumerate(states):
        if st is not None and st.draws:
            tok[b] = st.draw(x[b])
    hs = []
    for layer, h in h_layers:
        out = h.clone()
        for b, st in enumerate(states):
            z = st.hidden_noise_for(layer, num_layers) if st is not None else None
            if z is not None:
                scale = st.sigma_for(layer) * h[b, -1].float().norm() / math.sqrt(h.shape[-1])
                out[b, -1] += (scale * z).to(h.dtype)
        hs.append(out)
    return x, t, tok, hs


@pytest.mark.parametrize("version", [1, 2, "both"])
@pytest.mark.parametrize("mixtures", [True, False])
def test_batched_state_matches_per_row_reference(mixtures, version):
    """Every (seed, stream, step) value, and so every token, equals the per-row implementation's
    (noise version 1, 2, or rows of both in one batch; version 2 with each row's truncation)."""
    from sazanami.noise.fluctuation import FluctuationBatch, Truncation

    V, C, L = 37, 12, 4
    fls = [
        Fluctuation.parse("pink-logits"),
        Fluctuation.parse('{"logits": {"beta": 2}, "temperature": {}, "draw": {"beta": 0.5}}'),
        None,
        Fluctuation.parse('{"temperature": {"beta": 0}, "draw": {"mode": "quantile"}, "hidden": {"layers": [1, 3]}}'),
        Fluctuation.parse('{"embedding": {}, "hidden": {}, "logits": {"sigma": 1}, "max_steps": 64}'),
        Fluctuation.parse('{"draw": {}, "temperature": {"beta": 2}}'),
        Fluctuation.parse("pink-logits"),
    ]
    versions = [1, 2, 1, 2, 1, 2, 2] if version == "both" else [version] * 7
    fls = [dataclasses.replace(fl, noise_version=v) if fl is not None else None for fl, v in zip(fls, versions)]
    params = [
        SamplingParams(top_k=5),
        SamplingParams(top_p=0.5, temperature=0.7),
        SamplingParams(),
        SamplingParams(min_p=0.2),
        SamplingParams(temperature=0.0),
        SamplingParams(mirostat_tau=3.0, top_k=2),
        SamplingParams(top_k=20, top_p=0.9, min_p=0.01, temperature=1.3),
    ]
    seeds = [11, 12, 13, 14, 15, 16, 17]
    mixes = [None] * 7
    if mixtures:
        mixes[5] = [(16, 0.6), (99, 0.8)]  # a noise-search mixture
        mixes[6] = [(17, 0.8), (5, 0.36), (6, 0.48)]
    ref = [
        fl.start(s, V, C, m, Truncation.of(p)) if fl is not None else None
        for fl, s, m, p in zip(fls, seeds, mixes, params)
    ]
    bat = FluctuationBatch(fls, [m or [(s, 1.0)] for s, m in zip(seeds, mixes)], V, C, params=params)
    gen = torch.Generator().manual_seed(0)
    rows = list(range(7))
    for step in range(40):
        B = len(rows)
        logits = torch.randn(B, V, generator=gen) * 3
        logits[0, :5] = -math.inf  # a masked row takes its finite std
        temp = torch.full((B,), 0.8)
        temp[1] = 0.0 if step % 3 == 0 else 0.8  # a greedy step: that row's temperature noise pauses
        hl = [(layer, torch.randn(B, 2, C, generator=gen)) for layer in (-1, 0, 1, 2, 3)]
        x, t, tok, hs = _reference_step([ref[r] for r in rows], logits, temp, hl, L)
        before = logits.clone()
        bx = bat.perturb_logits(logits)
        assert torch.equal(bx, x) and torch.equal(logits, before)
        assert torch.equal(bat.temperature(temp), t)
        draws = [i for i, r in enumerate(rows) if ref[r] is not None and ref[r].draws]
        assert torch.equal(bat.draw(x, torch.zeros(B, dtype=torch.long))[draws], tok[draws])
        hook = bat.hidden_hook(L)
        for (layer, h), want in zip(hl, hs):
            assert torch.equal(hook(layer, h), want)
        if step in (9, 21):  # rows finish: the batch compacts
            keep = [i for i in range(B) if i != (1 if step == 9 else 0)]
            bat.select(torch.tensor(keep))
            rows = [rows[i] for i in keep]


def test_batched_one_row_hook_steps_only_that_row():
    from sazanami.noise.fluctuation import FluctuationBatch

    fl = Fluctuation.parse("pink-hidden")
    ref = [fl.start(s, 8, 6) for s in (1, 2)]
    bat = FluctuationBatch([fl, fl], [[(1, 1.0)], [(2, 1.0)]], 8, 6)
    h = torch.randn(1, 1, 6, generator=torch.Generator().manual_seed(3))
    for _ in range(3):  # row 1 runs injected tokens alone: only its stream moves
        got = bat.hidden_hook(2, row=1)(1, h)
        want = h.clone()
        want[0, -1] += (0.05 * h[0, -1].norm() / math.sqrt(6) * ref[1].hidden_noise_for(1, 2)).to(h.dtype)
        assert torch.equal(got, want)
    h2 = torch.randn(2, 1, 6, generator=torch.Generator().manual_seed(4))
    out = bat.hidden_hook(2)(1, h2)
    for b in (0, 1):
        z = ref[b].hidden_noise_for(1, 2)
        assert torch.equal(out[b, -1], h2[b, -1] + (0.05 * h2[b, -1].norm() / math.sqrt(6) * z).to(h2.dtype))


def test_batched_rows_of_several_colors_keep_their_order():
    """Every row perturbed, grouped by color (rows 0, 2 | 1): each still gets its own stream."""
    from sazanami.noise.fluctuation import FluctuationBatch

    fls = [Fluctuation.parse(f'{{"logits": {{"beta": {b}}}, "draw": {{"beta": {b}}}}}') for b in (1, 2, 1)]
    ref = [fl.start(s, 9) for fl, s in zip(fls, (1, 2, 3))]
    bat = FluctuationBatch(fls, [[(s, 1.0)] for s in (1, 2, 3)], 9)
    x = torch.randn(3, 9, generator=torch.Generator().manual_seed(5))
    for _ in range(3):
        got = bat.perturb_logits(x)
        assert torch.equal(got, torch.stack([st.perturb_logits(r) for st, r in zip(ref, x)]))
        assert bat.draw(got, torch.zeros(3, dtype=torch.long)).tolist() == [st.draw(r) for st, r in zip(ref, got)]


# -- noise versions ---------------------------------------------------------------------------------
def test_noise_version_field():
    """Version 2 by default (presets too), version 1 on request; validated, serialised, parsed."""
    assert Fluctuation().noise_version == 2
    assert all(fl.noise_version == 2 for fl in PRESETS.values())
    fl = Fluctuation.parse('{"preset": "pink-draw", "noise_version": 1}')
    assert fl.noise_version == 1 and fl.draw == PRESETS["pink-draw"].draw
    assert fl.to_dict()["noise_version"] == 1
    assert Fluctuation.from_dict(json.loads(json.dumps(fl.to_dict()))) == fl
    assert SamplingParams(fluctuation=fl).to_dict()["fluctuation"]["noise_version"] == 1
    for bad, message in (
        (3, "noise_version must be in [1, 2], got 3"),
        ("2", "noise_version must be an integer, got '2'"),
    ):
        with pytest.raises(ParameterError) as info:
            SamplingParams(fluctuation={"logits": {}, "noise_version": bad})
        assert info.value.param == "noise_version" and message in str(info.value)


def test_version1_is_one_colored_stream_per_vocabulary_entry():
    """Version 1 stays what it was: logits + σ·std·x_t, x the row's ColoredNoise over the vocabulary."""
    from sazanami.noise.fluctuation import FluctuationBatch, logit_std
    from sazanami.seeds import derive_seed

    V, fl = 50, Fluctuation(logits=Entry(sigma=0.4, beta=1.0), noise_version=1)
    bat = FluctuationBatch([fl, fl], [[(7, 1.0)], [(8, 1.0)]], V)
    srcs = [ColoredNoise(1.0, V, derive_seed(s, "logits"), max_steps=4096) for s in (7, 8)]
    x = torch.randn(2, V, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        want = x + (torch.tensor([0.4, 0.4]) * logit_std(x))[:, None] * torch.stack([s.step() for s in srcs])
        assert torch.equal(bat.perturb_logits(x), want)


def test_version2_noise_is_the_stateless_value_on_candidates_only():
    """Each candidate gets σ·std·colored_noise_at(β, derive_seed(seed, "logits"), id, t); the rest
    keep their logits bit for bit; a token that becomes a candidate at step t gets its stream's
    value at t, as if it had been computed all along."""
    from sazanami.noise.colored import colored_noise_at
    from sazanami.noise.fluctuation import Truncation, logit_std
    from sazanami.seeds import derive_seed

    V = 40
    fl = Fluctuation(logits=Entry(sigma=0.5, beta=1.0))
    st = fl.start(9, V, truncation=Truncation(top_k=4))
    gen = torch.Generator().manual_seed(2)
    seen = set()
    for t in range(12):
        x = torch.randn(V, generator=gen) * 2
        out = st.perturb_logits(x)
        top4 = set(x.topk(4).indices.tolist())
        changed = set((out != x).nonzero().flatten().tolist())
        assert changed == top4  # top-k 4: exactly its survivors get noise
        ids = torch.tensor(sorted(top4))
        z = colored_noise_at(1.0, derive_seed(9, "logits"), ids, t)
        assert torch.equal(out[ids], x[ids] + 0.5 * logit_std(x[None])[0] * z)
        seen |= top4
    assert len(seen) > 8  # the candidate set moved, and newcomers got their streams' values


def test_version2_candidates_follow_truncation():
    from sazanami.noise.fluctuation import CANDIDATES_MAX, Truncation, token_candidates

    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.04, 0.01, 1e-6, 0.0])
    x = probs.log()[None]  # the last entry is −inf (masked)

    def cands(**kw) -> list[int]:
        ids, valid = token_candidates(x, Truncation.stack([Truncation(**kw)]) if kw else None)
        return ids[valid].tolist()

    assert cands() == [0, 1, 2, 3, 4, 5]  # 1e-6 < 10^-4 × 0.5; −inf never
    assert cands(top_k=2) == [0, 1]
    assert cands(top_p=0.8) == [0, 1, 2]  # mass before token 3 is 0.85 ≥ 0.8
    assert cands(min_p=0.25) == [0, 1, 2]  # p ≥ 0.125
    assert cands(min_p=0.25, temperature=2.0) == [0, 1, 2, 3, 4]  # at T = 2: p ∝ √p0, ratio ≥ 0.25
    wide = torch.zeros(1, 5000)  # a flat row: the cap keeps the first CANDIDATES_MAX (ties: lowest ids)
    ids, valid = token_candidates(wide)
    assert int(valid.sum()) == CANDIDATES_MAX


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_version2_gumbel_draw_is_exact_with_a_tail(beta: float, monkeypatch):
    """4000 independent rows (seeds): the tokens at steps 0, 7 and 31 follow softmax(logits) —
    with the candidate cap at 2, the tail (tokens 2-4, mass 0.3) is drawn through its own option."""
    import sazanami.noise.fluctuation as fluct

    monkeypatch.setattr(fluct, "CANDIDATES_MAX", 2)
    probs = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    rows = 4000
    fl = Fluctuation(draw=Entry(beta=beta))
    bat = fluct.FluctuationBatch([fl] * rows, [[(s, 1.0)] for s in range(rows)], 5)
    x = probs.log().expand(rows, 5)
    counts = torch.zeros(3, 5)
    for step in range(32):
        tok = bat.draw(x, torch.zeros(rows, dtype=torch.long))
        if step in (0, 7, 31):
            counts[(0, 7, 31).index(step)] = torch.bincount(tok, minlength=5).float()
    expected = probs * rows
    for row in counts:
        chi2 = float(((row - expected) ** 2 / expected).sum())
        assert chi2 < 18.47  # p = 0.001, 4 degrees of freedom


def test_version2_draw_is_batch_invariant_and_colored():
    """A row's draws are the same alone as among others; β = 2 repeats tokens more than β = 0."""
    from sazanami.noise.fluctuation import FluctuationBatch

    V = 300
    x = torch.randn(1, V, generator=torch.Generator().manual_seed(4)) * 1.5

    def run(beta: float, seed: int, others: int) -> list[int]:
        fl = Fluctuation(draw=Entry(beta=beta))
        fls = [fl] * (others + 1)
        bat = FluctuationBatch(fls, [[(seed + 100 * i, 1.0)] for i in range(others)] + [[(seed, 1.0)]], V)
        logits = torch.cat([torch.randn(others, V, generator=torch.Generator().manual_seed(5)), x])
        return [int(bat.draw(logits, torch.zeros(others + 1, dtype=torch.long))[-1]) for _ in range(200)]

    alone = run(1.0, 3, 0)
    assert alone == run(1.0, 3, 4)

    def repeats(seq: list[int]) -> float:
        return float(np.mean([a == b for a, b in zip(seq, seq[1:])]))

    assert repeats(run(2.0, 3, 0)) > repeats(run(0.0, 3, 0)) + 0.2


def test_noise_versions_in_engine(tiny_engine: Engine):
    """Both versions run in the engine, each reproducible; they are different noise."""
    for name in ("pink-logits", "pink-draw"):
        v2 = tokens(tiny_engine, name)
        v1 = tokens(tiny_engine, dataclasses.replace(PRESETS[name], noise_version=1))
        assert v2 == tokens(tiny_engine, name) and v1 == tokens(tiny_engine, {"preset": name, "noise_version": 1})
        assert v1 != v2


def test_version2_rows_can_all_finish():
    """When the batch drops its last version-2 row, the per-token entries skip (no empty-batch work)."""
    from sazanami.noise.fluctuation import FluctuationBatch

    fls = [Fluctuation.parse('{"logits": {}, "draw": {}}'), Fluctuation.parse("pink-temperature")]
    bat = FluctuationBatch(fls, [[(1, 1.0)], [(2, 1.0)]], 30)
    x = torch.randn(2, 30, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(bat.perturb_logits(x)[0], x[0])
    bat.select(torch.tensor([1]))
    assert torch.equal(bat.perturb_logits(x[1:]), x[1:])
    assert torch.equal(bat.draw(x[1:], torch.tensor([7])), torch.tensor([7]))
    assert bat.last_noise()[0] is not None and "logits" not in bat.last_noise()[0]
