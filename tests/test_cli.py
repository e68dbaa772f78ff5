"""The command line, through click's runner, on the tiny model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sazanami.cli import PARAM_OPTIONS, main
from sazanami.params import SamplingParams


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_generate_json():
    r = invoke(
        "generate",
        "hello",
        "-m",
        "tiny-random",
        "-n",
        "3",
        "--seed",
        "1",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["params"]["n"] == 3
    assert len(doc["completions"]) == 3
    c = doc["completions"][0]
    assert {"text", "seed", "finish_reason", "completion_tokens", "logprobs"} <= set(c)
    assert c["completion_tokens"] == 5 and len(c["logprobs"]) == 5


def test_generate_readable_and_stream():
    r = invoke("generate", "hello", "-m", "tiny-random", "-n", "2", "--seed", "1", "--max-tokens", "5")
    assert r.exit_code == 0 and "variant 1" in r.output
    r = invoke("generate", "hello", "-m", "tiny-random", "--seed", "1", "--max-tokens", "5", "--stream")
    assert r.exit_code == 0


def test_bad_parameter_is_one_line_error():
    r = invoke("generate", "hello", "-m", "tiny-random", "--top-p", "1.5")
    assert r.exit_code == 2
    assert r.output.strip() == "error: top_p must be in (0, 1], got 1.5"


def test_unknown_model_is_one_line_error():
    r = invoke("generate", "hello", "-m", "no-such-model")
    assert r.exit_code == 2
    assert "unknown model 'no-such-model'" in r.output and "Traceback" not in r.output


def test_models_lists_registry():
    r = invoke("models")
    assert r.exit_code == 0 and "smollm2-135m" in r.output and "tiny-random" in r.output


def test_every_sampling_field_reachable_from_cli():
    cli_fields = set(PARAM_OPTIONS) | {"fluctuation"}
    assert cli_fields == set(SamplingParams.field_names())


def test_new_sampler_options():
    """logit_bias as JSON, XTC / DRY / top-nσ flags and top_logprobs reach the engine."""
    args = ["generate", "hello", "-m", "tiny-random", "--seed", "1", "--max-tokens", "3", "--ignore-eos", "--json"]
    r = invoke(*args, "-t", "0", "--logit-bias", '{"9": 100}', "--top-logprobs", "2")
    assert r.exit_code == 0, r.output
    c = json.loads(r.output)["completions"][0]
    assert c["token_ids"] == [9, 9, 9] and len(c["top_logprobs"]) == 3 and len(c["top_logprobs"][0]) == 2
    r = invoke(*args, "--xtc-probability", "0.5", "--dry-multiplier", "0.8", "--top-n-sigma", "1", "--dry-sequence-breakers", ".")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["params"]["dry_sequence_breakers"] == ["."]
    r = invoke(*args, "--logit-bias", '{"9": 500}')
    assert r.exit_code != 0 and "logit_bias" in r.output
