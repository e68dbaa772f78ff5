"""Beam search as its own entry: every BeamParams field honoured, every other sampling field refused.

Each honoured field is checked through both spellings, ``Engine.beam_search(prompts, BeamParams)``
and the deprecated ``SamplingParams(beams=...)``: they give the same samples, and setting the
field changes them (or does what it says). Before issue 26 the deprecated spelling silently
ignored stop, logit_bias, the penalties, DRY, top-nσ, dynamic temperature and top_logprobs.
"""

from __future__ import annotations

import dataclasses

import pytest

from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.sampling.beam_params import NOT_FOR_BEAMS, BeamParams
from sazanami.sampling.params import SamplingParams

BASE = {"width": 3, "seed": 5, "max_tokens": 24, "temperature": 1.0}
DRY = {"dry_multiplier": 1.0}


def beams(engine: Engine, entry: str, **fields):
    """The samples of one beam search of "hello" with ``BASE | fields``, through ``entry``."""
    bp = BeamParams(**(BASE | fields))
    if entry == "beam_search":
        return engine.beam_search("hello", bp)
    rest = bp.sampling_fields()
    with pytest.warns(DeprecationWarning, match="beam_search"):
        return engine.generate("hello", SamplingParams(beams={"width": bp.width, "beta": bp.beta}, **rest))


def ids(completions) -> list[list[int]]:
    return [c.token_ids for c in completions]


# (field, the fields of the reference search, the value that must change its samples)
CHANGES = [
    ("beta", {}, 0.0),
    ("seed", {}, 6),
    ("temperature", {}, 0.5),
    ("top_k", {}, 3),
    ("top_p", {}, 0.5),
    ("min_p", {}, 0.2),
    ("typical_p", {}, 0.3),
    ("repetition_penalty", {}, 3.0),
    ("presence_penalty", {}, 2.0),
    ("frequency_penalty", {}, 2.0),
    ("dynatemp_range", {}, 0.9),
    ("dynatemp_exponent", {"dynatemp_range": 0.9}, 4.0),
    ("top_n_sigma", {}, 0.5),
    ("logit_bias", {}, {7: 5.0}),
    ("dry_multiplier", {}, 5.0),
    ("dry_base", DRY, 8.0),
    ("dry_allowed_length", DRY, 1),
    ("dry_penalty_last_n", DRY, 4),
    ("dry_sequence_breakers", DRY, tuple("aeioustnrl")),
]


@pytest.mark.parametrize("entry", ["beam_search", "deprecated"])
@pytest.mark.parametrize(("field", "base", "value"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_field_changes_the_samples(tiny_engine: Engine, entry, field, base, value):
    ref = beams(tiny_engine, entry, **base)
    got = beams(tiny_engine, entry, **base, **{field: value})
    assert ids(got) != ids(ref)
    assert ids(got) == ids(beams(tiny_engine, "beam_search", **base, **{field: value}))  # both spellings agree


@pytest.mark.parametrize("entry", ["beam_search", "deprecated"])
def test_width_and_max_tokens(tiny_engine: Engine, entry):
    out = beams(tiny_engine, entry, width=5, max_tokens=7)
    assert len(out) == 5 and [c.index for c in out] == list(range(5))
    assert all(c.drawn <= 7 for c in out) and any(c.finish_reason == "length" for c in out)
    tags = [c.tag["perturbed_logprob"] for c in out]
    assert tags == sorted(tags, reverse=True)  # best perturbed value first


@pytest.mark.parametrize("entry", ["beam_search", "deprecated"])
def test_stop_ends_a_beam_before_its_stop_string(tiny_engine: Engine, entry):
    ref = beams(tiny_engine, entry)
    stop = next(ch for c in ref for ch in c.text[2:] if ch.isprintable() and ch.strip())
    got = beams(tiny_engine, entry, stop=(stop,))
    assert all(stop not in c.text for c in got)
    assert any(c.finish_reason == "stop" and c.drawn < BASE["max_tokens"] for c in got)


@pytest.mark.parametrize("entry", ["beam_search", "deprecated"])
def test_ignore_eos(tiny_engine: Engine, entry):
    eos = min(tiny_engine.tokenizer.eos_token_ids)
    ended = beams(tiny_engine, entry, logit_bias={eos: 100.0}, max_tokens=6)
    best = ended[0]
    assert best.token_ids == [] and best.finish_reason == "stop"  # end-of-sequence first: an empty sample
    going = beams(tiny_engine, entry, logit_bias={eos: 100.0}, max_tokens=6, ignore_eos=True)
    assert all(c.drawn == 6 for c in going) and going[0].token_ids == [eos] * 6


@pytest.mark.parametrize("entry", ["beam_search", "deprecated"])
def test_top_logprobs(tiny_engine: Engine, entry):
    out = beams(tiny_engine, entry, top_logprobs=2, max_tokens=5)
    for c in out:
        assert len(c.top_logprobs) == len(c.token_ids)
        for token, logprob, top in zip(c.token_ids, c.logprobs, c.top_logprobs):
            assert len(top) == 2 and top[0][1] >= top[1][1]
            assert logprob <= top[0][1] + 1e-6  # the raw model's distribution
            assert token != top[0][0] or logprob == pytest.approx(top[0][1], abs=1e-5)
    assert beams(tiny_engine, entry, max_tokens=5)[0].top_logprobs == []


def test_the_same_seed_gives_the_same_samples(tiny_engine: Engine):
    assert ids(beams(tiny_engine, "beam_search")) == ids(beams(tiny_engine, "beam_search"))


# -- refused ---------------------------------------------------------------------------------------
REFUSED = {
    "n": 2,
    "fluctuation": "pink-temperature",
    "mirostat_tau": 3.0,
    "mirostat_eta": 0.5,
    "xtc_probability": 0.5,
    "xtc_threshold": 0.2,
    "trace": True,
    "speculative": "prompt",
}


def test_every_sampling_field_is_a_beam_field_or_refused():
    shared = set(BeamParams.field_names()) - {"width", "beta"}
    assert set(SamplingParams.field_names()) == shared | set(NOT_FOR_BEAMS) | {"beams"}
    assert set(REFUSED) == set(NOT_FOR_BEAMS)


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_a_field_beams_do_not_honour_is_refused_by_name(tiny_engine: Engine, field):
    p = SamplingParams(beams={"width": 2}, max_tokens=4, **{field: REFUSED[field]})
    with pytest.warns(DeprecationWarning), pytest.raises(ParameterError, match="not a beam search parameter") as err:
        tiny_engine.generate("hello", p)
    assert err.value.param == field
    with pytest.raises(ParameterError) as err:
        BeamParams.from_dict({"width": 2, field: REFUSED[field]})
    assert err.value.param == field


def test_unknown_and_out_of_range_fields_are_named(tiny_engine: Engine):
    with pytest.raises(ParameterError) as err:
        BeamParams.from_dict({"widht": 2})
    assert err.value.param == "widht"
    with pytest.raises(ParameterError) as err:
        BeamParams(width=0)
    assert err.value.param == "beams.width"
    with pytest.raises(ParameterError, match=r"top_p must be in \(0, 1\]") as err:
        tiny_engine.beam_search("hello", BeamParams(top_p=1.5))
    assert err.value.param == "top_p"


def test_a_field_set_twice_in_the_deprecated_spelling_is_refused(tiny_engine: Engine):
    p = SamplingParams(beams=BeamParams(width=2, temperature=0.5), temperature=0.9, max_tokens=4)
    with pytest.warns(DeprecationWarning), pytest.raises(ParameterError) as err:
        tiny_engine.generate("hello", p)
    assert err.value.param == "beams.temperature"


def test_beam_params_round_trip():
    bp = BeamParams(width=2, beta=0.5, stop=["x"], logit_bias={"3": 1.5}, top_logprobs=1)
    assert BeamParams.parse(bp.to_dict()).to_dict() == bp.to_dict()
    assert BeamParams.parse(3) == BeamParams(width=3)
    assert dataclasses.replace(bp, width=4).width == 4


# -- the server --------------------------------------------------------------------------------------
def test_the_server_runs_beams_and_refuses_what_they_do_not_honour(tiny_engine: Engine):
    import openai

    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    with serving(create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        body = {"beams": {"width": 3, "beta": 1.0}, "stop": ["\n"], "logit_bias": {"7": 5.0}}
        r = client.completions.create(model="tiny-random", prompt="hello", max_tokens=8, seed=5, extra_body=body)
        bp = BeamParams(width=3, max_tokens=8, seed=5, temperature=0.7, stop=("\n",), logit_bias={7: 5.0})
        direct = tiny_engine.run(tiny_engine.beam_rows(["hello"], bp, raw=True))  # a completion's prompt is raw
        assert [c.text for c in r.choices] == [c.text for c in direct]
        for field, value in (("mirostat_tau", 3.0), ("xtc_probability", 0.5)):
            with pytest.raises(openai.BadRequestError) as e:
                client.completions.create(
                    model="tiny-random", prompt="hello", max_tokens=8, extra_body={"beams": 2, field: value}
                )
            assert e.value.body["param"] == field and "not a beam search parameter" in e.value.body["message"]
