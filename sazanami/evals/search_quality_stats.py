"""The search-quality bench's statistics: solved rates per task group, paired deltas against best-of-n.

``bench/search_quality.py`` runs the strategies and writes one row per run (setting, strategy,
budget, task, group, seed, solved, costs); everything it reports is computed here from those
rows, so the committed run CSVs regenerate the committed summaries
(``tests/test_search_quality_stats.py`` checks that they do, to the byte).

- :func:`groups_of`: the task groups a run counts in (the one membership rule);
- :func:`summarise`: per (setting, strategy, budget, group): mean and spread over seeds, costs,
  and the deltas below;
- :func:`paired_delta`: solved rate minus best-of-n's at the same budget, paired by (task, seed),
  with a 95 % percentile bootstrap interval that resamples tasks;
- :func:`equal_cost_delta`: solved rate minus best-of-n's interpolated at equal wall time or
  computed tokens.

The bootstrap here draws with :class:`random.Random` and reads the interval off the sorted
replicates by index; :func:`sazanami.evals.frontier.statistics.bootstrap_ci` draws with numpy
and interpolates percentiles. Both are percentile bootstraps over tasks, but their intervals
differ in the last digits, and every Δ [CI] quoted in docs/guide/search.md and RESULTS comes from this one.
"""

from __future__ import annotations

import csv
import io
import math
import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError
from sazanami.evals.frontier.statistics import interpolate_curve

#: Costs at which strategies are also compared with best-of-n (besides generated tokens).
EQUAL_COSTS = ("wall_s", "computed_tokens")

#: The baseline every strategy is compared with.
BASELINE = "best_of_n"

#: Run-CSV columns read back as floats / ints (the rest stay strings).
FLOAT_COLUMNS = frozenset({"quality", "wall_s"})
INT_COLUMNS = frozenset(
    {
        "budget_tokens",
        "seed",
        "solved",
        "generated_tokens",
        "prompt_tokens",
        "prompt_tokens_reused",
        "computed_tokens",
        "judge_tokens",
        "nodes",
        "unit",
    }
)


def groups_of(row: dict[str, Any]) -> list[str]:
    """The task groups a run counts in: its own, "all", and "concepts-5-6" for 5- and 6-word tasks."""
    return [row["group"], "all"] + (["concepts-5-6"] if row["group"] in ("concepts-5", "concepts-6") else [])


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run CSV, typed (:data:`INT_COLUMNS`, :data:`FLOAT_COLUMNS`), keeping only the
    configurations (setting, strategy, budget) that every task × seed finished: a partial run
    stops mid-configuration, and a half-run configuration would be compared on other tasks."""
    with Path(path).open(newline="") as fh:
        rows = [
            {
                k: (int(v) if k in INT_COLUMNS and v else float(v) if k in FLOAT_COLUMNS and v else v)
                for k, v in r.items()
            }
            for r in csv.DictReader(fh)
        ]
    if not rows:
        raise ParameterError("path", f"path must be a run CSV with at least one row, got an empty {path}")
    counts: dict[tuple, int] = defaultdict(int)
    for r in rows:
        counts[(r["setting"], r["strategy"], r["budget_tokens"])] += 1
    full = max(counts.values())
    return [r for r in rows if counts[(r["setting"], r["strategy"], r["budget_tokens"])] == full]


def unit_of(rows: list[dict[str, Any]]) -> int:
    """One sample's tokens (the budgets' unit): the ``unit`` column, or in older files without
    it the smallest budget (the 1× baseline's)."""
    return int(rows[0].get("unit") or min(r["budget_tokens"] for r in rows))


def summarise(rows: list[dict[str, Any]], unit: int, draws: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Solved rate per (setting, strategy, budget, task group): mean and spread over seeds.

    Each summary row also carries its solved rate minus best-of-n's at equal cost
    (``vs_best_of_n_at_equal_{cost}``, :func:`equal_cost_delta`) and at the same budget paired
    by (task, seed) with its interval (``vs_best_of_n_paired``, ``_lo``, ``_hi``,
    :func:`paired_delta` with ``draws`` and ``seed``). Rows sorted by their key.
    """
    if unit < 1:
        raise ParameterError("unit", f"unit must be in [1, inf), got {unit}")
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for g in groups_of(r):
            groups[(r["setting"], r["strategy"], r["budget_tokens"], g)][r["seed"]].append(r)
    out = []
    for (setting, strategy, budget, group), by_seed in sorted(groups.items()):
        rates = [statistics.mean(x["solved"] for x in rs) for rs in by_seed.values()]
        quality = [statistics.mean(x["quality"] for x in rs) for rs in by_seed.values()]
        runs = [x for rs in by_seed.values() for x in rs]
        out.append(
            {
                "setting": setting,
                "strategy": strategy,
                "budget_x": round(budget / unit, 2),
                "budget_tokens": budget,
                "group": group,
                "tasks": len(runs) // len(by_seed),
                "seeds": len(by_seed),
                "solved": round(statistics.mean(rates), 4),
                "solved_sd": round(statistics.stdev(rates), 4) if len(rates) > 1 else 0.0,
                "quality": round(statistics.mean(quality), 4),
                "tokens": round(statistics.mean(x["generated_tokens"] for x in runs), 1),
                "prompt_tokens": round(statistics.mean(x["prompt_tokens"] for x in runs), 1),
                # prompt_tokens are the computed ones (the cache's are prompt_tokens_reused); run
                # files before this fix stored generated + prompt − reused, counting reuse twice.
                "computed_tokens": round(statistics.mean(x["generated_tokens"] + x["prompt_tokens"] for x in runs), 1),
                "wall_s": round(statistics.mean(x["wall_s"] for x in runs), 2),
            }
        )
    for cost in EQUAL_COSTS:
        for s in out:
            s[f"vs_best_of_n_at_equal_{cost}"] = round(equal_cost_delta(out, s, cost), 4)
    for s in out:
        d, lo, hi = paired_delta(rows, s, draws, seed)
        s["vs_best_of_n_paired"], s["vs_best_of_n_lo"], s["vs_best_of_n_hi"] = round(d, 4), round(lo, 4), round(hi, 4)
    return out


def paired_differences(rows: list[dict[str, Any]], s: dict[str, Any]) -> dict[str, float]:
    """Per task: mean over seeds of (``s``'s solved − best-of-n's solved), paired by (task, seed).

    The runs are those of ``s``'s setting and budget whose task is in ``s``'s group
    (:func:`groups_of`); a (task, seed) that only one of the two strategies ran is left out.
    Tasks in sorted order (the bootstrap is seeded, so its input order must not depend on the
    hash seed that orders sets of strings).
    """
    in_group = [
        r for r in rows
        if (r["setting"], r["budget_tokens"]) == (s["setting"], s["budget_tokens"]) and s["group"] in groups_of(r)
    ]  # fmt: skip
    mine = {(r["task"], r["seed"]): r["solved"] for r in in_group if r["strategy"] == s["strategy"]}
    base = {(r["task"], r["seed"]): r["solved"] for r in in_group if r["strategy"] == BASELINE}
    per_task: dict[str, list[int]] = defaultdict(list)
    for key in sorted(mine.keys() & base.keys()):
        per_task[key[0]].append(mine[key] - base[key])
    return {task: statistics.mean(v) for task, v in per_task.items()}


def paired_delta(
    rows: list[dict[str, Any]], s: dict[str, Any], draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Solved rate of ``s`` minus best-of-n's at the same budget: ``(delta, lo, hi)``.

    delta is the mean over tasks of :func:`paired_differences`; (lo, hi) a 95 % percentile
    bootstrap interval that resamples tasks ``draws`` times with ``random.Random(seed)`` and
    reads the sorted replicate means at ``int(0.025 * draws)`` and ``int(0.975 * draws) - 1``.
    nan for best-of-n itself or without pairs.
    """
    if draws < 1:
        raise ParameterError("draws", f"draws must be in [1, inf), got {draws}")
    if s["strategy"] == BASELINE:
        return math.nan, math.nan, math.nan
    diffs = list(paired_differences(rows, s).values())
    if not diffs:
        return math.nan, math.nan, math.nan
    rng = random.Random(seed)
    boot = sorted(statistics.mean(rng.choices(diffs, k=len(diffs))) for _ in range(draws))
    return statistics.mean(diffs), boot[int(0.025 * draws)], boot[int(0.975 * draws) - 1]


def equal_cost_delta(summary: list[dict[str, Any]], s: dict[str, Any], cost: str) -> float:
    """Solved rate of ``s`` minus best-of-n's at the same ``cost`` (wall time or computed tokens).

    Best-of-n's solved rate vs log cost (its budgets, same setting and group) is interpolated
    piecewise linearly at ``s``'s cost (:func:`sazanami.evals.frontier.statistics.interpolate_curve`);
    nan outside its range (no extrapolation) and for best-of-n itself.
    """
    if cost not in EQUAL_COSTS:
        raise ParameterError("cost", f"cost must be one of {', '.join(EQUAL_COSTS)}, got {cost!r}")
    if s["strategy"] == BASELINE or not s[cost] or s[cost] <= 0:
        return math.nan
    base = [b for b in summary if (b["strategy"], b["setting"], b["group"]) == (BASELINE, s["setting"], s["group"])]
    xs = [math.log(b[cost]) for b in base if b[cost] and b[cost] > 0]
    ys = [b["solved"] for b in base if b[cost] and b[cost] > 0]
    return s["solved"] - interpolate_curve(xs, ys, math.log(s[cost]))


def summary_csv(summary: list[dict[str, Any]]) -> str:
    """The summary as CSV text (header from the first row), as ``*_summary.csv`` files hold it."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]))
    writer.writeheader()
    writer.writerows(summary)
    return buf.getvalue()
