"""The frontier benchmark: statistics on hand-made data, and a micro run through the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sazanami.cli.bench import bench_group
from sazanami.errors import ParameterError
from sazanami.evals.frontier import (
    METHODS,
    FrontierConfig,
    GenerationCache,
    Setting,
    SettingResult,
    bootstrap_ci,
    frontier_gain,
    interpolate_curve,
    load_prompts,
    method_settings,
    resample_indices,
    run_frontier,
    score_completions,
    summarize,
)


class HashEmbedder:
    """Deterministic stand-in for MiniLM: bag of bytes, normalised (no model load)."""

    def encode(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 256)
        for i, t in enumerate(texts):
            for b in t.encode():
                out[i, b] += 1
            out[i, 0] += 1e-3  # an empty text still has a direction
        return torch.nn.functional.normalize(out, dim=-1)


# --------------------------------------------------------------------------- statistics


def test_resample_indices_seeded() -> None:
    a, b = resample_indices(5, 100, seed=3), resample_indices(5, 100, seed=3)
    assert a.shape == (100, 5) and a.min() >= 0 and a.max() <= 4
    assert np.array_equal(a, b)
    assert not np.array_equal(a, resample_indices(5, 100, seed=4))
    np.random.seed(0)  # the global RNG plays no part
    assert np.array_equal(a, resample_indices(5, 100, seed=3))


def test_bootstrap_ci_by_hand() -> None:
    # Constant values: no spread, the interval collapses onto the mean.
    assert bootstrap_ci([2.0] * 6) == (2.0, 2.0, 2.0)
    # Two values 0 and 1: a resample's mean is k/2 with k ~ Binomial(2, 1/2), so the 95%
    # percentile interval is [0, 1] (P(k=0) = 1/4 > 2.5%).
    mean, lo, hi = bootstrap_ci([0.0, 1.0], resample_indices(2, 4000, seed=1))
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    # Many values: the interval matches the normal approximation mean ± 1.96·sd/√n within 10%.
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    mean, lo, hi = bootstrap_ci(x, resample_indices(400, 4000, seed=2))
    half = 1.96 * x.std() / math.sqrt(400)
    assert mean == pytest.approx(x.mean())
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert lo < mean < hi
    # nan entries (an undefined metric on one prompt) are left out.
    assert bootstrap_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_bootstrap_ci_rejects_bad_input() -> None:
    with pytest.raises(ParameterError, match="values"):
        bootstrap_ci([])
    with pytest.raises(ParameterError, match=r"level must be in \(0, 1\)"):
        bootstrap_ci([1.0], level=1.0)


def test_interpolate_curve() -> None:
    # Unsorted input is sorted by x; linear between points; nan outside (no extrapolation).
    assert interpolate_curve([2.0, 1.0, 3.0], [0.4, 0.2, 0.5], 1.5) == pytest.approx(0.3)
    assert interpolate_curve([1.0, 2.0], [0.2, 0.4], 2.0) == pytest.approx(0.4)
    assert math.isnan(interpolate_curve([1.0, 2.0], [0.2, 0.4], 2.5))
    assert math.isnan(interpolate_curve([1.0, 2.0], [0.2, 0.4], 0.5))
    assert math.isnan(interpolate_curve([1.0], [0.2], 1.0))


def test_frontier_gain_on_hand_made_curves() -> None:
    # Reference curve y = x/10 on x in {1, 2, 3}, the same on every one of 4 prompts.
    cx = np.repeat(np.array([[1.0], [2.0], [3.0]]), 4, axis=1)  # (J=3, P=4)
    cy = cx / 10
    # A setting at x = 1.5 with y = 0.25: the curve gives 0.15, the gain is 0.1 on every
    # resample (no spread), so the interval is [0.1, 0.1].
    x, y = np.full(4, 1.5), np.full(4, 0.25)
    assert frontier_gain(cx, cy, x, y) == pytest.approx((0.1, 0.1, 0.1))
    # Below the curve: negative gain.
    assert frontier_gain(cx, cy, x, np.full(4, 0.05))[0] == pytest.approx(-0.1)
    # Outside the curve's x range: nan, no extrapolation.
    assert all(math.isnan(v) for v in frontier_gain(cx, cy, np.full(4, 3.5), y))


def test_frontier_gain_interval_pairs_prompts() -> None:
    # Prompt-level noise shared by the curve and the setting cancels in the paired gain:
    # each prompt shifts every method's diversity by the same offset.
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 0.2, size=30)  # (P,)
    cx = np.repeat(np.array([[1.0], [2.0], [3.0]]), 30, axis=1)
    cy = cx / 10 + offset
    y = 0.2 + offset  # the curve at x = 1.5 gives 0.15 + offset: gain 0.05 exactly
    gain, lo, hi = frontier_gain(cx, cy, np.full(30, 1.5), y, resample_indices(30, 500, seed=1))
    assert (gain, lo, hi) == pytest.approx((0.05, 0.05, 0.05))
    # Independent noise on the setting widens the interval around the true gain.
    y2 = y + rng.normal(0, 0.05, size=30)
    gain, lo, hi = frontier_gain(cx, cy, np.full(30, 1.5), y2, resample_indices(30, 2000, seed=1))
    assert lo < gain < hi and lo < 0.05 + 0.03 and hi > 0.05 - 0.03 and hi - lo < 0.06


def test_frontier_gain_checks_shapes() -> None:
    with pytest.raises(ParameterError, match="curve_x"):
        frontier_gain(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ParameterError, match=r"x and y must have shape \(4,\)"):
        frontier_gain(np.zeros((2, 4)), np.zeros((2, 4)), np.zeros(3), np.zeros(3))


def test_summarize_verdicts_and_repetition_flag() -> None:
    """A setting above the curve on meaning but below it on distinct-2 is flagged as repetitive."""
    P = 8
    jitter = np.random.default_rng(0).normal(0, 0.01, size=P)  # prompt effects, shared by all settings

    def result(method: str, nll: float, div: float, d2: float) -> SettingResult:
        per = {m: np.full(P, 1.0) for m in ("self_bleu", "gap", "tokens")}
        per |= {"nll": nll + jitter, "semantic_diversity": div + jitter, "distinct_2": d2 + jitter}
        return SettingResult(Setting(method, "temperature", nll, ()), per)

    curve = [result("temperature", x, x / 10, 0.5 + x / 10) for x in (1.0, 2.0, 3.0)]
    loop = result("pink-draw", 2.0, 0.4, 0.3)  # diversity +0.2, distinct-2 -0.4 at x = 2
    same = result("top_p", 1.5, 0.15, 0.65)  # on both curves
    far = result("mirostat", 5.0, 0.5, 0.9)  # beyond the curve's x range
    results = [*curve, loop, same, far]
    summarize(results, resample_indices(P, 200, seed=0), 0.95)
    assert [r.summary["verdict"] for r in results] == ["reference"] * 3 + ["beyond", "on", "outside"]
    assert loop.summary["gain"] == pytest.approx(0.2, abs=0.01)
    assert loop.summary["distinct_2_gain"] == pytest.approx(-0.4, abs=0.01)
    assert loop.summary["distinct_2_verdict"] == "below"
    assert loop.summary["perplexity"] == pytest.approx(math.exp(2.0), rel=0.01)
    assert (
        loop.summary["semantic_diversity_lo"]
        < loop.summary["semantic_diversity"]
        < loop.summary["semantic_diversity_hi"]
    )


# --------------------------------------------------------------------------- settings and inputs


def test_method_settings() -> None:
    quick = method_settings(["temperature", "top_p"], quick=True)
    assert [s.name for s in quick] == [
        "temperature T=0.4",
        "temperature T=0.7",
        "temperature T=1",
        "temperature T=1.3",
        "top_p p=0.7",
        "top_p p=0.9",
    ]
    assert quick[4].kwargs == {"temperature": 1.0, "top_p": 0.7}
    assert len({s.key for s in method_settings()}) == len(method_settings())  # no duplicate settings
    with pytest.raises(ParameterError, match="unknown method 'nope'"):
        method_settings(["nope"])


def test_every_method_builds_valid_params() -> None:
    settings = method_settings(list(METHODS))
    assert {s.method for s in settings} == set(METHODS)
    for s in settings:
        p = s.sampling_params(8)
        assert p.trace and p.max_tokens == 8
    draw = [s.kwargs["fluctuation"]["draw"] for s in settings if "draw" in s.method]
    assert [d["beta"] for d in draw] == [1.0] * 4 + [2.0] + [0.0] * 4  # pink sweep, its β = 2 point, the white control
    assert [s.perturbs_forward for s in settings if s.method in ("pink-hidden", "pink-logits")] == [False] * 5 + [
        True
    ] * 6


def test_load_prompts(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "prompt": "x"}\n\n{"prompt": "y"}\n')
    assert [(p.id, p.text) for p in load_prompts(f)] == [("a", "x"), ("p003", "y")]
    assert len(load_prompts(f, limit=1)) == 1
    f.write_text('{"id": "a"}\n')
    with pytest.raises(ParameterError, match="must be a JSON object with a 'prompt'"):
        load_prompts(f)
    with pytest.raises(ParameterError, match="does not exist"):
        load_prompts(tmp_path / "missing.jsonl")


def test_score_completions_matches_engine(tiny_engine) -> None:
    """A clean teacher-forced pass gives the log-probs and entropies the engine recorded."""
    from sazanami.sampling.params import SamplingParams

    out = tiny_engine.generate("hi", SamplingParams(n=3, seed=5, max_tokens=6, temperature=1.0, trace=True))
    ids = tiny_engine.encode("hi")
    scored = score_completions(tiny_engine.backend, ids, [c.token_ids for c in out])
    for c, (lp, ent) in zip(out, scored, strict=True):
        assert lp == pytest.approx(c.logprobs, abs=1e-4)
        assert ent == pytest.approx([t["entropy"] for t in c.trace][: len(lp)], abs=1e-4)


# --------------------------------------------------------------------------- runs


def test_run_frontier_uses_cache(tiny_engine, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Tell me."}\n{"id": "b", "prompt": "Say it."}\n')
    cfg = FrontierConfig(
        prompts=prompts,
        methods=("temperature",),
        samples=2,
        max_tokens=4,
        quick=True,
        cache=tmp_path / "cache.jsonl",
        n_boot=50,
    )
    first = run_frontier(cfg, tiny_engine, HashEmbedder(), progress=False, log=lambda s: None)
    assert [r.generated for r in first.results] == [4] * 4
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 16 and {"key", "text", "logprobs", "entropies", "seed"} <= set(json.loads(lines[0]))
    again = run_frontier(cfg, tiny_engine, HashEmbedder(), progress=False, log=lambda s: None)
    assert [r.generated for r in again.results] == [0] * 4
    assert again.rows()[0]["semantic_diversity"] == first.rows()[0]["semantic_diversity"]
    # A different max_tokens is a different key.
    other = run_frontier(
        dataclasses.replace(cfg, max_tokens=3), tiny_engine, HashEmbedder(), progress=False, log=lambda s: None
    )
    assert [r.generated for r in other.results] == [4] * 4
    assert len(GenerationCache(tmp_path / "cache.jsonl").records) == 32


def test_cache_misses_when_the_generating_code_changes(tiny_engine, tmp_path: Path, monkeypatch) -> None:
    import sazanami.evals.frontier.generation as fr

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Tell me."}\n')
    cfg = FrontierConfig(
        prompts=prompts,
        methods=("temperature",),
        samples=2,
        max_tokens=3,
        quick=True,
        cache=tmp_path / "cache.jsonl",
        n_boot=20,
    )

    def generated() -> list[int]:
        result = run_frontier(cfg, tiny_engine, HashEmbedder(), progress=False, log=lambda s: None)
        return [r.generated for r in result.results]

    assert len(fr.code_fingerprint()) == 12
    assert generated() == [2] * 4 and generated() == [0] * 4
    monkeypatch.setattr(fr, "code_fingerprint", lambda: "edited")
    assert generated() == [2] * 4


def test_cli_micro_run_writes_csv_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sazanami.measure.embeddings as emb

    monkeypatch.setattr(emb, "get_embedder", lambda: HashEmbedder())
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Tell me."}\n{"id": "b", "prompt": "Say it."}\n')
    out = tmp_path / "out"
    args = [
        "frontier",
        "--prompts",
        str(prompts),
        "--model",
        "tiny-random",
        "--samples",
        "2",
        "--max-tokens",
        "4",
        "--methods",
        "temperature,top_p",
        "--quick",
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "cache.jsonl"),
        "--bootstrap",
        "50",
        "-q",
    ]
    result = CliRunner().invoke(bench_group, args)
    assert result.exit_code == 0, result.output
    assert "6 settings, 2 prompts × 2 samples × 4 tokens" in result.output
    with (out / "frontier.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["label"]) for r in rows][-2:] == [("top_p", "p=0.7"), ("top_p", "p=0.9")]
    for r in rows:
        assert float(r["semantic_diversity_lo"]) <= float(r["semantic_diversity"]) <= float(r["semantic_diversity_hi"])
        assert float(r["perplexity"]) > 1
    assert rows[0]["gain"] == "nan" and rows[0]["verdict"] == "reference"
    assert {r["verdict"] for r in rows[4:]} <= {"beyond", "below", "on", "outside"}
    for name in ("frontier.png", "frontier_gain.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "frontier.json").read_text())["generated_rows"] == 24
    # Rerun: every generation comes from the cache.
    result = CliRunner().invoke(bench_group, args)
    assert result.exit_code == 0, result.output
    assert "(0 rows generated)" in result.output


def test_cli_lists_methods_and_rejects_unknown(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_group, ["frontier", "--list-methods"])
    assert result.exit_code == 0 and "pink-draw" in result.output
    result = CliRunner().invoke(
        bench_group, ["frontier", "--methods", "nope", "--model", "tiny-random", "--out", str(tmp_path)]
    )
    assert isinstance(result.exception, ParameterError) and "unknown method 'nope'" in str(result.exception)
