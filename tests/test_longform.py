"""The long-form benchmark: its measures on hand-made inputs, and a micro run through the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sazanami.cli.bench import bench_group
from sazanami.errors import ParameterError
from sazanami.evals import longform as lf
from sazanami.evals.longform import judge as jd
from tests.test_frontier import HashEmbedder


def test_longest_repeat() -> None:
    assert lf.longest_repeat("a b c a b d") == 2
    assert lf.longest_repeat("one two three four") == 0
    assert lf.longest_repeat("") == 0
    # A loop: overlapping occurrences count, so "x y x y x y" repeats "x y x y".
    assert lf.longest_repeat("x y x y x y") == 4
    assert lf.longest_repeat("The cat sat. the CAT sat!") == 3


def test_first_loop_and_improbable() -> None:
    assert lf.first_loop([1, 2, 3, 4, 1, 2, 5, 6], n=3) is None
    assert lf.first_loop([1, 2, 3, 4, 1, 2, 5, 6], n=2) == 4
    assert lf.first_loop([7, 7, 7, 7], n=2) == 1
    assert lf.first_improbable([-0.1, -2.0, -10.0, -12.0], p_min=1e-4) == 2
    assert lf.first_improbable([-0.1, -2.0], p_min=1e-4) is None
    with pytest.raises(ParameterError, match="p_min"):
        lf.first_improbable([-1.0], p_min=0.0)


def test_degeneration_point_is_the_earlier_event() -> None:
    ids = [1, 2, 3, 1, 2, 3, 1, 2]
    lps = [-1.0, -1.0, -1.0, -1.0, -1.0, -20.0, -1.0, -1.0]
    assert lf.degeneration_point(ids, lps, n=3, p_min=1e-4) == {"loop": 3, "improbable": 5, "first": 3}
    assert lf.degeneration_point([1, 2], [-1.0, -1.0], n=3) == {"loop": None, "improbable": None, "first": None}
    with pytest.raises(ParameterError, match="logprobs"):
        lf.degeneration_point([1, 2], [-1.0])


def test_partition_into_classes() -> None:
    texts = ["the red fox runs", "the red fox runs fast", "a blue whale sings", "the red fox runs"]
    assert lf.partition(texts, "unigram", 0.5) == [0, 0, 1, 0]
    assert lf.distinct_k(texts, "unigram", 0.5) == 2
    assert lf.distinct_k(texts, "unigram", 1.0) == 3  # only identical word sets merge
    emb = HashEmbedder()
    assert lf.partition(["abc", "abc", "xyz"], "embedding", 0.99, embedder=emb) == [0, 0, 1]
    assert lf.distinct_k([], "unigram") == 0
    with pytest.raises(ParameterError, match="partitioner"):
        lf.partition(texts, "nope")


def test_labelled_pairs_and_validation() -> None:
    pairs = [json.loads(x) for x in lf.measures.EQUIVALENCE_PAIRS.read_text().splitlines()]
    assert len(pairs) >= 20 and {p["same"] for p in pairs} == {True, False}
    v = lf.validate_partitioner("unigram", pairs)
    assert v["pairs"] == len(pairs) and v["threshold"] == lf.PARTITIONERS["unigram"]
    assert v["accuracy"] >= 0.8  # the threshold was fixed on these pairs


def test_human_reference_is_running_prose() -> None:
    text = jd.human_prose()
    assert len(text) > 20_000 and "def " not in text
    passages = jd.human_passages(lambda s: s.split(), 50, 3)
    assert len(passages) == 3 and all(len(p) == 50 for p in passages)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Tell me."}\n{"id": "b", "prompt": "Say it."}\n')
    return [
        "longform",
        "--prompts",
        str(prompts),
        "--model",
        "tiny-random",
        "--samples",
        "2",
        "--max-tokens",
        "6",
        "--methods",
        "pink-temperature,pink-quantile",
        "--quick",
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache.jsonl"),
        "--bootstrap",
        "50",
        "-q",
        *extra,
    ]


def test_cli_micro_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sazanami.measure.embeddings as emb

    monkeypatch.setattr(emb, "get_embedder", lambda: HashEmbedder())
    monkeypatch.setattr(jd, "judge_unavailable", lambda: "not in this test")
    args = _args(tmp_path)
    result = CliRunner().invoke(bench_group, args)
    assert result.exit_code == 0, result.output
    assert "6 settings, 2 prompts × 2 samples × 6 tokens" in result.output
    assert "judge: skipped: not in this test" in result.output
    out = tmp_path / "out"
    with (out / "longform.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["label"]) for r in rows][-2:] == [("pink-temperature", "σ=0.6"), ("pink-quantile", "T=1")]
    for r in rows:
        assert 1 <= float(r["distinct_k"]) <= 2
        assert float(r["ppl_gen"]) > 1 and r["ppl_judge"] == "nan"
        assert 0 <= float(r["degeneration"]) <= 1
    for name in ("longform.png", "longform_spectra.png", "longform_degeneration.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "longform.json").read_text())
    assert meta["generated_rows"] == 24 and meta["partitioner"]["pairs"] >= 20
    result = CliRunner().invoke(bench_group, args)
    assert result.exit_code == 0 and json.loads((out / "longform.json").read_text())["generated_rows"] == 0


def test_cli_lists_methods_and_rejects_unknown(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_group, ["longform", "--list-methods"])
    assert result.exit_code == 0 and "pink-quantile" in result.output and "top_n_sigma" in result.output
    result = CliRunner().invoke(bench_group, _args(tmp_path, "--methods", "nope"))
    assert isinstance(result.exception, ParameterError) and "unknown method 'nope'" in str(result.exception)


def test_quick_settings_are_a_subset_of_the_full_ones() -> None:
    quick = {s.key for s in lf.longform_settings(lf.QUICK_METHODS, quick=True)}
    full = {s.key for s in lf.longform_settings(tuple(lf.LONGFORM_METHODS), quick=False)}
    assert quick <= full and len(quick) == 8
    assert not math.isnan(lf.PARTITIONERS["embedding"])


def _float64_logprobs(scores: np.ndarray, targets: list[int]) -> np.ndarray:
    """The judge's log-softmax before it ran in float32 on torch (float64 numpy over (T, V))."""
    scores = np.asarray(scores, dtype=np.float64)  # (T, V)
    mx = scores.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(scores - mx).sum(axis=1))  # (T,)
    return scores[np.arange(len(targets)), targets] - lse


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_token_logprobs_match_the_float64_log_softmax(scale: float) -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((64, 1000)) * scale).astype(np.float32)  # (T, V)
    targets = rng.integers(0, 1000, 64).tolist()
    targets[0] = int(logits[0].argmax())  # a confident row: log p near 0 at scale 10
    before = logits.copy()
    new = np.array(jd.token_logprobs(logits, targets))
    np.testing.assert_allclose(new, _float64_logprobs(logits, targets), rtol=1e-5, atol=0)
    np.testing.assert_array_equal(logits, before)  # read, not changed in place
    # Chunking, dtype and layout change nothing beyond round-off.
    for other in (
        jd.token_logprobs(logits, targets, rows=1),
        jd.token_logprobs(logits, targets, rows=64),
        jd.token_logprobs(logits.astype(np.float64), targets),
        jd.token_logprobs(np.asfortranarray(logits), targets),
        jd.token_logprobs(torch.from_numpy(logits), targets),
    ):
        np.testing.assert_allclose(other, new, rtol=0, atol=1e-6)


def test_token_logprobs_at_gemmas_vocabulary_size() -> None:
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((6, 262_144)) * 15).astype(np.float32)  # (T, V) like Gemma 3's output
    targets = rng.integers(0, 262_144, 6).tolist()
    targets[2] = int(logits[2].argmax())
    logits[4, :100] = -np.inf  # masked columns
    targets[5] = 7
    logits[5, 7] = -np.inf
    expected = _float64_logprobs(logits, targets)
    new = np.array(jd.token_logprobs(logits, targets))
    assert new[5] == expected[5] == -np.inf
    np.testing.assert_allclose(new[:5], expected[:5], rtol=0, atol=1e-6)
    # A row with no finite logit has no distribution: nan.
    assert math.isnan(jd.token_logprobs(np.full((1, 4), -np.inf, dtype=np.float32), [0])[0])


def test_token_logprobs_reject_bad_shapes() -> None:
    logits = np.zeros((3, 5), dtype=np.float32)
    with pytest.raises(ParameterError, match=r"targets must be in \[0, 5\), got 0\.\.5"):
        jd.token_logprobs(logits, [0, 1, 5])
    with pytest.raises(ParameterError, match=r"targets must hold one id per row \(3\), got 2"):
        jd.token_logprobs(logits, [0, 1])
    with pytest.raises(ParameterError, match=r"logits must be a \(T, V\) array"):
        jd.token_logprobs(np.zeros(5, dtype=np.float32), [0])
    with pytest.raises(ParameterError, match=r"rows must be in \[1, inf\), got 0"):
        jd.token_logprobs(logits, [0, 1, 2], rows=0)
    assert jd.token_logprobs(np.zeros((0, 5), dtype=np.float32), []) == []
    assert jd.token_logprobs(logits, [0, 1, 2]) == pytest.approx([-math.log(5)] * 3, abs=1e-7)


def test_gemma_judge_threads_are_checked_before_loading() -> None:
    with pytest.raises(ParameterError, match=r"threads must be in \[1, inf\), got 0"):
        jd.GemmaJudge(threads=0)


@pytest.mark.skipif(jd.judge_unavailable() is not None, reason="Gemma 3 270M or llama-cpp-python missing")
def test_gemma_judge_logprobs_equal_the_float64_log_softmax_of_its_scores() -> None:
    judge = jd.GemmaJudge(threads=1, n_ctx=64)
    prompt, completion = "Say something about rivers.", " Rivers carry water from the hills down to the sea."
    lp = judge.logprobs(prompt, completion)
    ctx = judge.llm.tokenize(
        f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n".encode(), add_bos=True, special=True
    )
    comp = judge.llm.tokenize(completion.encode(), add_bos=False, special=False)
    scores = judge.llm.scores[len(ctx) - 1 : len(ctx) + len(comp) - 1]  # (T, V) as eval left them
    assert len(lp) == len(comp) > 5
    np.testing.assert_allclose(lp, _float64_logprobs(scores, comp), rtol=0, atol=1e-6)
    assert all(x < 0 for x in lp) and 0 < jd.nll(lp) < 15
