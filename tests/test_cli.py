"""The command line, through click's runner, on the tiny model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sazanami.cli import PARAM_OPTIONS, main
from sazanami.sampling.params import SamplingParams


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


def test_every_field_and_option_is_reachable_from_cli_and_server():
    """Nothing listed by hand: each field of the objects must show up as an option and a body field."""
    import dataclasses

    from sazanami.cli.options import options_of, params_from_options, strategy_dest
    from sazanami.cli.search import flow, search
    from sazanami.cli.serve import serve
    from sazanami.islands.runtime import ISLAND_INPUTS, ISLAND_LIMITS, Islands
    from sazanami.search.strategies import SIDE_BY_SIDE, STRATEGIES, strategy_options
    from sazanami.server.limits import Limits
    from sazanami.server.schemas import ChatCompletionRequest, CompletionRequest

    generate = main.commands["generate"]
    body = {cls: cls.model_json_schema()["properties"] for cls in (ChatCompletionRequest, CompletionRequest)}
    for f in dataclasses.fields(SamplingParams):
        for command in (generate, search):
            assert f.name in options_of(command), (command.name, f.name)
        assert all(f.name in props for props in body.values()), f.name
    for command in (generate, search):  # derived names never collide
        flags = [opt for p in command.params for opt in p.opts]
        assert len(flags) == len(set(flags)) and len(command.params) == len(options_of(command)), command.name
    # The options' defaults are the library's defaults.
    ctx = generate.make_context("generate", ["p"])
    assert params_from_options(dict(ctx.params)) == SamplingParams()

    for strategy in STRATEGIES:
        for name, default in strategy_options(strategy).items():
            assert strategy_dest(name) in options_of(search), (strategy, name)
            options = {name: default}  # values are range-checked too: the default is in range
            req = ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": "q"}], "search": {"strategy": strategy, "options": options}}
            )
            req.check_search(req.sampling_params(Limits()), Limits())  # the server accepts the option
    for strategy, key in SIDE_BY_SIDE.items():  # where a strategy keeps -n is one of its options
        assert key in strategy_options(strategy)

    serve_options = options_of(serve)
    for f in dataclasses.fields(Limits):
        assert f.name in serve_options and serve_options[f.name].default == f.default, f.name

    island_fields = {f.name: f.default for f in dataclasses.fields(Islands)}
    for key in (*ISLAND_INPUTS, *ISLAND_LIMITS):
        for command in (generate, search, flow.commands["run"]):
            assert key in options_of(command), (command.name, key)
        if key in ISLAND_LIMITS:
            assert options_of(generate)[key].default == island_fields[key], key
    for key in ("tools", "regex", "json_schema", "grammar"):  # the corpus is the server's (serve --corpus)
        assert all(key in props for props in body.values()), key


def test_search_beam_n_is_the_width():
    args = ["search", "hello", "-m", "tiny-random", "--strategy", "beam", "--scorer", "logprob"]
    args += ["--max-tokens", "4", "--budget", "80", "--seed", "1", "--json", "--no-progress"]
    r = invoke(*args, "-n", "3")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["config"]["options"] == {"width": 3}
    rounds: dict[int, int] = {}
    for node in doc["nodes"][1:]:
        rounds[node["round"]] = rounds.get(node["round"], 0) + 1
    assert rounds and max(rounds.values()) == 3
    r = invoke(*args, "-n", "2", "--beam-beta", "0.5")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)["config"]
    assert doc["options"] == {"width": 2, "beta": 0.5}
    # --beta colors a fluctuation, which a beam search refuses (its noise is its Gumbel noise: --beam-beta)
    r = invoke(*args, "-n", "2", "--beam-beta", "0.5", "--beta", "2.0", "-f", "pink-draw")
    assert r.exit_code == 2 and "fluctuation is not a beam search parameter" in r.output
    r = invoke(*args, "-n", "3", "--width", "2")
    assert r.exit_code == 2 and "n is beam's width (candidates side by side): give n or width, not both" in r.output


def test_search_strategy_options_are_typed():
    args = ["search", "hello", "-m", "tiny-random", "--strategy", "anneal", "--scorer", "logprob"]
    args += ["--max-tokens", "4", "--budget", "80", "--seed", "1", "--json", "--no-progress"]
    r = invoke(*args, "--schedule", "1.0,0.5", "--rounds", "2", "--keep", "1")
    assert r.exit_code == 0, r.output
    options = json.loads(r.output)["config"]["options"]
    assert options == {"schedule": [1.0, 0.5], "rounds": 2, "keep": 1}
    r = invoke(*args, "--chunk", "4")
    assert r.exit_code == 2 and "strategy anneal has no option 'chunk'" in r.output


def test_new_sampler_options():
    """logit_bias as JSON, XTC / DRY / top-nσ flags and top_logprobs reach the engine."""
    args = ["generate", "hello", "-m", "tiny-random", "--seed", "1", "--max-tokens", "3", "--ignore-eos", "--json"]
    r = invoke(*args, "-t", "0", "--logit-bias", '{"9": 100}', "--top-logprobs", "2")
    assert r.exit_code == 0, r.output
    c = json.loads(r.output)["completions"][0]
    assert c["token_ids"] == [9, 9, 9] and len(c["top_logprobs"]) == 3 and len(c["top_logprobs"][0]) == 2
    r = invoke(
        *args,
        "--xtc-probability",
        "0.5",
        "--dry-multiplier",
        "0.8",
        "--top-n-sigma",
        "1",
        "--dry-sequence-breakers",
        ".",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["params"]["dry_sequence_breakers"] == ["."]
    r = invoke(*args, "--logit-bias", '{"9": 500}')
    assert r.exit_code != 0 and "logit_bias" in r.output


def test_generate_beams_run_the_beam_search_entry_without_the_deprecated_field():
    """A beams entry in --fluctuation runs Engine.beam_search (no DeprecationWarning), the same beams."""
    import warnings

    from sazanami import models
    from sazanami.engine.loop import Engine
    from sazanami.sampling.beam_params import BeamParams

    args = ["generate", "hello", "-m", "tiny-random", "--seed", "4", "--max-tokens", "6", "--json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        r = invoke(*args, "--fluctuation", '{"beams": {"width": 3, "beta": 1}}')
    assert r.exit_code == 0, r.output
    got = [c["token_ids"] for c in json.loads(r.output)["completions"]]
    want = Engine(models.load("tiny-random")).beam_search(
        "hello", BeamParams(width=3, beta=1.0, seed=4, max_tokens=6, temperature=0.7)
    )
    assert len(got) == 3 and got == [c.token_ids for c in want]
