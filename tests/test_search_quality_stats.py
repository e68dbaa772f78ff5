"""bench/search_quality.py's statistics (sazanami.evals.search_quality_stats): paired deltas,
group membership, summaries, and the committed summaries recomputed from the committed runs."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sazanami.errors import ParameterError
from sazanami.evals import search_quality_stats as sq

ROOT = Path(__file__).resolve().parents[1]


def run(
    strategy: str, task: str, seed: int, solved: int, group: str = "concepts-5", budget: int = 100, **extra: object
) -> dict:
    """One run row as bench/search_quality.py writes it (costs that the delta ignores filled in)."""
    row = {
        "setting": "verifier",
        "strategy": strategy,
        "budget_tokens": budget,
        "task": task,
        "group": group,
        "seed": seed,
        "solved": solved,
        "quality": float(solved),
        "generated_tokens": 10,
        "prompt_tokens": 5,
        "wall_s": 1.0,
    }
    return row | extra


def outcomes(table: dict[str, dict[str, list[int]]], group: str = "concepts-5") -> list[dict]:
    """Rows from {strategy: {task: [solved for seed 0, seed 1, ...]}}."""
    return [
        run(strategy, task, seed, solved, group)
        for strategy, tasks in table.items()
        for task, by_seed in tasks.items()
        for seed, solved in enumerate(by_seed)
    ]


def key(strategy: str, group: str = "concepts-5", budget: int = 100) -> dict:
    return {"setting": "verifier", "strategy": strategy, "budget_tokens": budget, "group": group}


def test_paired_delta_is_the_mean_over_tasks_of_seed_paired_differences() -> None:
    rows = outcomes(
        {
            "best_of_n": {"a": [0, 0], "b": [1, 1], "c": [0, 1], "d": [1, 0]},
            "paths": {"a": [1, 1], "b": [1, 1], "c": [1, 1], "d": [0, 0]},
        }
    )
    # Per task, mean over seeds of paths − best-of-n: a 1, b 0, c 0.5, d −0.5 → mean 0.25.
    assert sq.paired_differences(rows, key("paths")) == {"a": 1, "b": 0, "c": 0.5, "d": -0.5}
    d, lo, hi = sq.paired_delta(rows, key("paths"))
    assert d == 0.25
    assert -0.5 <= lo <= d <= hi <= 1
    # The other direction is the negation (the baseline is fixed: best-of-n is never "s").
    flipped = [r | {"strategy": {"best_of_n": "paths", "paths": "best_of_n"}[r["strategy"]]} for r in rows]
    assert sq.paired_delta(flipped, key("paths"))[0] == -0.25


def test_paired_delta_pairs_by_task_and_seed_only() -> None:
    rows = outcomes({"best_of_n": {"a": [0, 0], "b": [1, 0]}, "tree": {"a": [1, 1], "b": [1, 1]}})
    # A seed best-of-n did not run, another budget and another setting are not paired with anything.
    rows += [
        run("tree", "a", 2, 0),
        run("best_of_n", "a", 0, 1, budget=400),
        run("tree", "b", 0, 0, budget=400),
        run("best_of_n", "b", 0, 1) | {"setting": "judge"},
    ]
    assert sq.paired_differences(rows, key("tree")) == {"a": 1, "b": 0.5}
    assert sq.paired_delta(rows, key("tree"))[0] == 0.75


def test_paired_delta_known_intervals() -> None:
    # Equal outcomes: every resample is 0.
    same = outcomes({"best_of_n": {"a": [0, 1], "b": [1, 1]}, "paths": {"a": [0, 1], "b": [1, 1]}})
    assert sq.paired_delta(same, key("paths")) == (0, 0, 0)
    # One task: every resample is that task.
    one = outcomes({"best_of_n": {"a": [0, 0]}, "paths": {"a": [1, 0]}})
    assert sq.paired_delta(one, key("paths")) == (0.5, 0.5, 0.5)
    # Two tasks with differences 0 and 1: resample means are 0, 0.5, 1 with probability
    # 1/4, 1/2, 1/4, so of 2000 draws far more than 50 are 0 and far more than 50 are 1.
    two = outcomes({"best_of_n": {"a": [0], "b": [0]}, "paths": {"a": [0], "b": [1]}})
    assert sq.paired_delta(two, key("paths")) == (0.5, 0, 1)
    # Best-of-n itself and a strategy without pairs: nan.
    assert all(math.isnan(x) for x in sq.paired_delta(two, key("best_of_n")))
    assert all(math.isnan(x) for x in sq.paired_delta(two, key("beam")))
    with pytest.raises(ParameterError, match=r"draws must be in \[1, inf\), got 0"):
        sq.paired_delta(two, key("paths"), draws=0)


def random_outcomes(n_tasks: int, n_seeds: int, rng: random.Random, p: float = 0.4, q: float = 0.5) -> list[dict]:
    return outcomes(
        {
            "best_of_n": {f"t{i:03d}": [int(rng.random() < p) for _ in range(n_seeds)] for i in range(n_tasks)},
            "paths": {f"t{i:03d}": [int(rng.random() < q) for _ in range(n_seeds)] for i in range(n_tasks)},
        }
    )


@pytest.mark.parametrize("case", range(20))
def test_interval_contains_the_point_estimate(case: int) -> None:
    rng = random.Random(case)
    rows = random_outcomes(rng.randint(2, 40), rng.randint(1, 3), rng, rng.random(), rng.random())
    d, lo, hi = sq.paired_delta(rows, key("paths"))
    assert lo <= d <= hi
    assert -1 <= lo and hi <= 1


def test_interval_depends_on_its_seed_and_draws_only() -> None:
    rows = random_outcomes(30, 2, random.Random(7))
    a = sq.paired_delta(rows, key("paths"), seed=0)
    assert sq.paired_delta(list(reversed(rows)), key("paths"), seed=0) == a  # row order does not matter
    others = [sq.paired_delta(rows, key("paths"), seed=seed) for seed in range(1, 6)]
    assert all(o[0] == a[0] for o in others)  # the point estimate has no randomness
    assert len({o[1:] for o in [a, *others]}) > 1  # the interval's resamples come from the seed
    random.seed(123)  # the global RNG is not used
    assert sq.paired_delta(rows, key("paths"), seed=0) == a


def test_group_membership() -> None:
    assert sq.groups_of({"group": "concepts-5"}) == ["concepts-5", "all", "concepts-5-6"]
    assert sq.groups_of({"group": "concepts-6"}) == ["concepts-6", "all", "concepts-5-6"]
    assert sq.groups_of({"group": "concepts-3"}) == ["concepts-3", "all"]
    assert sq.groups_of({"group": "arithmetic"}) == ["arithmetic", "all"]
    rows = [
        *outcomes({"best_of_n": {"c5": [0, 0]}, "paths": {"c5": [1, 1]}}, "concepts-5"),
        *outcomes({"best_of_n": {"c6": [0, 0]}, "paths": {"c6": [0, 1]}}, "concepts-6"),
        *outcomes({"best_of_n": {"c3": [1, 1]}, "paths": {"c3": [0, 0]}}, "concepts-3"),
        *outcomes({"best_of_n": {"r0": [0, 0]}, "paths": {"r0": [0, 0]}}, "arithmetic"),
    ]
    assert sq.paired_differences(rows, key("paths", "concepts-5-6")) == {"c5": 1, "c6": 0.5}
    assert sq.paired_differences(rows, key("paths", "all")) == {"c3": -1, "c5": 1, "c6": 0.5, "r0": 0}
    assert sq.paired_differences(rows, key("paths", "arithmetic")) == {"r0": 0}
    summary = {(s["strategy"], s["group"]): s for s in sq.summarise(rows, unit=25)}
    assert {g for _, g in summary} == {"concepts-3", "concepts-5", "concepts-6", "concepts-5-6", "arithmetic", "all"}
    assert [summary["paths", g]["tasks"] for g in ("concepts-5-6", "all", "concepts-3")] == [2, 4, 1]
    assert summary["paths", "concepts-5-6"]["vs_best_of_n_paired"] == 0.75
    assert summary["paths", "all"]["vs_best_of_n_paired"] == 0.125


def test_summarise_means_and_spread_over_seeds() -> None:
    rows = outcomes({"best_of_n": {"a": [1, 0, 0], "b": [1, 1, 0]}, "paths": {"a": [1, 1, 1], "b": [0, 1, 1]}})
    rows = [r | {"wall_s": 1.0 + r["seed"], "generated_tokens": 10 * (r["seed"] + 1)} for r in rows]
    summary = {(s["strategy"], s["group"]): s for s in sq.summarise(rows, unit=50)}
    base = summary["best_of_n", "concepts-5"]
    # Solved rate per seed 1, 0.5, 0 → mean 0.5, sample sd 0.5.
    assert (base["solved"], base["solved_sd"], base["tasks"], base["seeds"]) == (0.5, 0.5, 2, 3)
    assert (base["budget_x"], base["tokens"], base["wall_s"], base["computed_tokens"]) == (2.0, 20.0, 2.0, 25.0)
    paths = summary["paths", "concepts-5"]
    assert paths["solved"] == round(5 / 6, 4)
    assert paths["vs_best_of_n_paired"] == round(5 / 6 - 0.5, 4)
    assert paths["vs_best_of_n_lo"] <= paths["vs_best_of_n_paired"] <= paths["vs_best_of_n_hi"]
    # Same wall time and computed tokens as best-of-n's only budget: one point, no curve → nan.
    assert math.isnan(paths["vs_best_of_n_at_equal_wall_s"])
    assert math.isnan(base["vs_best_of_n_paired"])
    with pytest.raises(ParameterError, match=r"unit must be in \[1, inf\), got 0"):
        sq.summarise(rows, unit=0)


_HASH_SEED_SCRIPT = """
import json, random, sys
sys.path.insert(0, {root!r})
from sazanami.evals import search_quality_stats as sq
rng = random.Random(3)
rows = [
    {{"setting": "verifier", "strategy": s, "budget_tokens": 100, "task": f"task-{{i}}", "group": g, "seed": seed,
      "solved": int(rng.random() < 0.5), "quality": 0.5, "generated_tokens": 1, "prompt_tokens": 1, "wall_s": 1.0}}
    for i, g in enumerate(["concepts-5", "concepts-6", "arithmetic"] * 9)
    for s in ("best_of_n", "paths")
    for seed in (0, 1)
]
print(json.dumps(sq.summarise(rows, unit=50)))
"""


def test_intervals_do_not_depend_on_the_hash_seed() -> None:
    # Sets of task names iterate in an order that varies with PYTHONHASHSEED; the bootstrap is
    # seeded, so its input must be put in a fixed order first, or the intervals change per process.
    out = []
    for hash_seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", _HASH_SEED_SCRIPT.format(root=str(ROOT))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out.append(json.loads(proc.stdout))
    assert out[0] == out[1]
    paired = [s for s in out[0] if s["strategy"] == "paths"]
    assert paired and all(s["vs_best_of_n_lo"] < s["vs_best_of_n_hi"] for s in paired)  # intervals, not points


@pytest.mark.parametrize("name", ["search_quality_llamacpp_dev", "search_quality_llamacpp_test"])
def test_committed_summaries_recompute_exactly(name: str) -> None:
    """Every Δ [CI] in docs/guide/search.md's search-at-equal-cost section comes from these files."""
    runs = sq.read_runs(ROOT / "docs" / f"{name}.csv")
    summary = sq.summarise(runs, sq.unit_of(runs))
    with (ROOT / "docs" / f"{name}_summary.csv").open(newline="") as fh:
        assert sq.summary_csv(summary) == fh.read()


def test_read_runs_keeps_complete_configurations(tmp_path: Path) -> None:
    rows = outcomes({"best_of_n": {"a": [0, 1], "b": [1, 1]}, "paths": {"a": [1, 1], "b": [1]}})
    rows = [r | {"unit": 25} for r in rows]
    path = tmp_path / "runs.csv"
    path.write_text(sq.summary_csv(rows))  # any list of dicts with one set of keys
    back = sq.read_runs(path)
    assert {r["strategy"] for r in back} == {"best_of_n"}  # paths stopped after 3 of 4 runs
    assert back[0]["solved"] == 0 and isinstance(back[0]["wall_s"], float) and back[0]["task"] == "a"
    assert sq.unit_of(back) == 25
    (tmp_path / "empty.csv").write_text("setting,strategy\n")
    with pytest.raises(ParameterError, match="path"):
        sq.read_runs(tmp_path / "empty.csv")
