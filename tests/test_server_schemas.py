"""Request bodies → SamplingParams: every field reachable, ranges from SamplingParams, server limits."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sazanami.cli.serve import serve
from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.server.limits import Limits
from sazanami.server.schemas import ChatCompletionRequest, CompletionRequest

# A non-default value for every SamplingParams field. A new field fails test_table_covers_every_field
# until it gets a value here (and so is known to be reachable from the HTTP body).
VALUES = {
    "n": 2,
    "seed": 5,
    "max_tokens": 7,
    "temperature": 0.3,
    "top_k": 5,
    "top_p": 0.9,
    "min_p": 0.1,
    "typical_p": 0.8,
    "repetition_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "dynatemp_range": 0.2,
    "dynatemp_exponent": 2.0,
    "mirostat_tau": 3.0,
    "mirostat_eta": 0.2,
    "stop": ["\n\n", "END"],
    "ignore_eos": True,
    "trace": True,
    "fluctuation": {"temperature": {"sigma": 0.4, "beta": 1.5}},
    "beams": {"width": 3, "beta": 0.5},
    "logit_bias": {"3": 2.5, "10": -100},
    "top_n_sigma": 1.5,
    "xtc_probability": 0.5,
    "xtc_threshold": 0.2,
    "dry_multiplier": 0.8,
    "dry_base": 2.0,
    "dry_allowed_length": 3,
    "dry_penalty_last_n": 64,
    "dry_sequence_breakers": ["\n", "."],
    "top_logprobs": 3,
    "speculative": {"sources": ["prompt", "siblings"], "max_draft": 8},
}
BODIES = {
    CompletionRequest: {"prompt": "hi"},
    ChatCompletionRequest: {"messages": [{"role": "user", "content": "hi"}]},
}


def test_table_covers_every_field():
    assert sorted(VALUES) == sorted(SamplingParams.field_names())


@pytest.mark.parametrize("cls", list(BODIES))
@pytest.mark.parametrize("name", SamplingParams.field_names())
def test_every_sampling_field_is_reachable_from_the_body(cls, name):
    assert name in cls.model_json_schema()["properties"]
    req = cls.model_validate(BODIES[cls] | {name: VALUES[name]})
    params = req.sampling_params(Limits())
    expected = SamplingParams(**{name: tuple(VALUES[name]) if name == "stop" else VALUES[name]})
    assert getattr(params, name) == getattr(expected, name)
    assert getattr(params, name) != getattr(SamplingParams(), name)


def test_defaults_are_the_library_defaults_within_limits():
    req = ChatCompletionRequest.model_validate(BODIES[ChatCompletionRequest])
    assert req.sampling_params(Limits()) == SamplingParams()
    assert req.sampling_params(Limits(max_tokens=32)).max_tokens == 32


def test_field_descriptions_come_from_sampling_params():
    props = ChatCompletionRequest.model_json_schema()["properties"]
    assert "nucleus" in props["top_p"]["description"].lower()


def test_ranges_are_sampling_params_messages():
    req = ChatCompletionRequest.model_validate(BODIES[ChatCompletionRequest] | {"min_p": 1.0})
    with pytest.raises(ParameterError, match=r"min_p must be in \[0, 1\), got 1.0") as e:
        req.sampling_params(Limits())
    assert e.value.param == "min_p"


def test_max_completion_tokens_alias():
    body = BODIES[ChatCompletionRequest] | {"max_completion_tokens": 9}
    assert ChatCompletionRequest.model_validate(body).sampling_params(Limits()).max_tokens == 9
    with pytest.raises(ParameterError):
        ChatCompletionRequest.model_validate(body | {"max_tokens": 8}).sampling_params(Limits())


def test_messages_flatten_text_parts():
    body = {
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    }
    assert ChatCompletionRequest.model_validate(body).prompts(Limits()) == [[{"role": "system", "content": "ab"}]]


def test_one_constraint_at_most_and_response_format():
    base = BODIES[ChatCompletionRequest]
    with pytest.raises(ParameterError):
        ChatCompletionRequest.model_validate(base | {"regex": "a", "grammar": "start: 'a'"}).constraint()
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    c = ChatCompletionRequest.model_validate(base | {"response_format": fmt}).constraint()
    assert c.kind == "json_schema"


@pytest.mark.parametrize(
    "scorer", ["py:os:system", "0.5*logprob+py:os:system", {"type": "verifier", "function": "os:system"}]
)
def test_python_scorers_are_refused(scorer):
    req = ChatCompletionRequest.model_validate(BODIES[ChatCompletionRequest] | {"search": {"scorer": scorer}})
    with pytest.raises(ParameterError, match="HTTP"):
        req.check_search(req.sampling_params(Limits()), Limits())


def test_limits_validate():
    with pytest.raises(ParameterError, match=r"max_n must be in \[1, 256\], got 0"):
        Limits(max_n=0)


def test_serve_help():
    out = CliRunner().invoke(serve, ["--help"])
    assert out.exit_code == 0
    for option in ("--host", "--port", "--model", "--max-tokens", "--max-n", "--max-search-budget", "--max-concurrent"):
        assert option in out.output
