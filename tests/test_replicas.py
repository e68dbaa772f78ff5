"""Scale-out: rows on Ray replicas give what one engine gives; ``sazanami batch`` resumes."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from sazanami.cli import main
from sazanami.engine.engine_spec import EngineSpec
from sazanami.engine.loop import Engine, RowRequest
from sazanami.engine.replicas import PrefixOwners, assign_rows
from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.search.scorers import token_logprobs
from sazanami.search.strategies import search

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (extra: ray)")


def _same_tree(a: dict, b: dict) -> bool:
    """Equal trees, bit for bit apart from the spend's timings: every node's text, tokens, seed,
    score, parent and log-probs (the torch backend computes a row alike in any batch, so a
    row beside other rows on a replica rounds as it does on one engine)."""
    a, b = dict(a), dict(b)
    return a.pop("spend")["generated_tokens"] == b.pop("spend")["generated_tokens"] and a == b


def _rows(prompts: list[list[int]]) -> list[RowRequest]:
    return [RowRequest(p, SamplingParams(), i) for i, p in enumerate(prompts)]


def test_assign_rows_keeps_prompts_together_and_balances():
    rows = _rows([[1]] * 3 + [[2]] * 3 + [[3]] * 2)
    parts = assign_rows(rows, 2)
    assert sorted(i for p in parts for i in p) == list(range(8))
    assert [len(p) for p in parts] == [4, 4]
    assert {tuple(rows[i].prompt_ids) for i in parts[0]} != {tuple(rows[i].prompt_ids) for i in parts[1]}
    big = assign_rows(_rows([[1]] * 8), 2)  # one prompt, more rows than a share: split
    assert [len(p) for p in big] == [4, 4]
    owners = PrefixOwners(block=4)
    owners.record([5], 1)
    sticky = assign_rows(_rows([[5]] * 2 + [[6]] * 2), 2, owners)  # same prompt: where it ran
    assert sticky[1] == [0, 1]


def test_prefix_affinity_follows_the_longest_computed_prefix():
    owners = PrefixOwners(block=4)
    parent = list(range(10))  # prompt 0..5 + output 6..9, computed on replica 1
    owners.record(parent, 1)
    owners.record(list(range(4)) + [99, 98, 97, 96], 0)  # shares only the first block
    assert owners.lookup(parent[:8] + [42, 43]) == 1  # a continuation keeping 8 tokens
    assert owners.lookup([0, 1, 2, 3, 99, 98, 97, 96, 5]) == 0
    assert owners.lookup([7, 7, 7, 7, 7]) is None  # no block known
    parts = assign_rows(_rows([parent[:8] + [1], parent[:8] + [2], [7] * 5, [8] * 5]), 2, owners)
    assert sorted(parts[1]) == [0, 1]
    assert [len(p) for p in parts] == [2, 2]  # balance still holds
    small = PrefixOwners(block=4, capacity=3)  # LRU: the oldest keys are forgotten
    small.record([1, 2, 3, 4, 5, 6, 7, 8], 0)
    small.record([9, 9, 9, 9], 1)
    assert small.lookup([1, 2, 3, 4, 5, 6, 7, 8, 0]) is None and small.lookup([9, 9, 9, 9]) == 1
    owners.clear()
    assert owners.lookup(parent) is None
    with pytest.raises(ParameterError, match="block"):
        PrefixOwners(block=0)


def test_engine_spec_validates():
    with pytest.raises(ParameterError, match="backend must be one of"):
        EngineSpec("tiny-random", "tpu")
    with pytest.raises(ParameterError, match="threads"):
        EngineSpec("tiny-random", threads=0)


@needs_ray
def test_batch_search_on_ray_replicas(tmp_path):
    """Runs before the module's replicas start (a local Ray has as many CPUs as actors)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Name a fruit."}) + "\n" + json.dumps({"prompt": "Name a tree."}) + "\n")
    common = ["-m", "tiny-random", "--max-tokens", "6", "--seed", "1", "--strategy", "best_of_n"]
    common += ["--scorer", "contains:a", "--budget", "60", "--no-progress"]
    outs = []
    for extra in ([], ["--ray-replicas", "2"]):
        out = tmp_path / f"out{len(extra)}.jsonl"
        r = CliRunner().invoke(main, ["batch", str(prompts), "--out", str(out), *common, *extra])
        assert r.exit_code == 0, (r.output, r.exception)
        outs.append([json.loads(x) for x in out.read_text().splitlines()])
    for a, b in zip(*outs):
        assert a["text"] == b["text"] and _same_tree(a["tree"], b["tree"])


@pytest.fixture(scope="module")
def ray_engines():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (extra: ray)")
    from sazanami.engine.replicas import RayEngines

    engines = RayEngines(EngineSpec("tiny-random", threads=1), replicas=2)
    yield engines
    engines.shutdown()


@needs_ray
def test_two_replicas_generate_and_search_as_one_engine(ray_engines, tiny_engine: Engine):
    p = SamplingParams(n=3, seed=4, max_tokens=10, fluctuation="pink-temperature")
    a = ray_engines.generate(["one", "two"], p)
    b = tiny_engine.generate(["one", "two"], p)
    assert [(c.token_ids, c.seed, c.prompt_index, c.index) for c in a] == [
        (c.token_ids, c.seed, c.prompt_index, c.index) for c in b
    ]
    kwargs = dict(
        scorer="contains:e", budget=240, params=SamplingParams(max_tokens=12, fluctuation="pink-draw"), seed=9
    )
    for strategy in ("best_of_n", "anneal", "beam"):  # beam rows run whole on one replica (1 thread, here 2)
        if strategy == "beam":  # a beam search draws with its own Gumbel noise: it refuses a fluctuation
            kwargs["params"] = SamplingParams(max_tokens=12)
        ta = search(ray_engines, "Say a word.", strategy, **kwargs).to_dict()
        tb = search(tiny_engine, "Say a word.", strategy, **kwargs).to_dict()
        assert _same_tree(ta, tb), strategy


@needs_ray
def test_raw_forward_is_refused_on_replicas(ray_engines):
    with pytest.raises(ParameterError, match="Ray replicas"):
        token_logprobs(ray_engines, "task", "teacher-forced text")  # LogprobScorer(engine) re-scoring


def test_batch_writes_jsonl_and_resumes(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"Prompt {i}"}) for i in range(5)) + "\n")
    args = ["batch", str(prompts), "-m", "tiny-random", "-n", "2", "--max-tokens", "6", "--seed", "3", "--chunk", "2"]
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    r = CliRunner().invoke(main, [*args, "--out", str(full), "--no-progress"])
    assert r.exit_code == 0, r.output
    lines = full.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [f"p{i}" for i in range(5)]
    assert all(len(json.loads(x)["completions"]) == 2 for x in lines)
    # A run killed while writing its fourth line, mid-chunk: three whole lines and a torn one.
    # The rerun batches p3 with p4 (the first run: p2 with p3), and its prefix cache starts
    # cold: the bytes are the same (the torch forward rounds alike in any batch, cache or not).
    part.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    r = CliRunner().invoke(main, [*args, "--out", str(part), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert part.read_text() == full.read_text()  # done prompts skipped, the rest as in one run
    one = tmp_path / "one.jsonl"  # every prompt in one engine call, without the prefix cache
    r = CliRunner().invoke(main, [*args, "--chunk", "5", "--no-prefix-cache", "--out", str(one), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert one.read_text() == full.read_text()
    r = CliRunner().invoke(main, [*args, "--out", str(part), "--seed", "4"])
    assert r.exit_code == 2 and "seed 3" in r.output
