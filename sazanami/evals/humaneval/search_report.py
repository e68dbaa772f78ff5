"""Experiment 2's analysis: every figure regenerated from the run's JSONL.

Endpoints as pre-registered (docs/HUMANEVAL_PREREGISTRATION_EXP2.md): each search arm's hidden-test
pass rate against the best-of-n curve at equal wall time (primary), at equal budget and at equal
computed tokens; percentile bootstrap intervals over problems, the same resamples for every arm.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.evals.frontier.statistics import bootstrap_ci, frontier_gain, resample_indices
from sazanami.evals.humaneval.run import read_records
from sazanami.evals.humaneval.search_run import ARMS, reference_arms

__all__ = ["summarize", "summary_text", "write_plot", "write_summary"]

POWER_PROBLEMS = 150
"""Problems the earlier audit estimated for 80 % power at a 10-point effect."""


def _verdict(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not estimable (outside the curve)"
    return "better" if lo > 0 else "worse" if hi < 0 else "undecided"


def summarize(records: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Per-arm descriptives and the pre-registered comparisons, over problems every arm covers."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    by = {(r["task_id"], r["arm"]): r for r in records}
    tasks = sorted({r["task_id"] for r in records}, key=lambda t: int(t.split("/")[1]))
    tasks = [t for t in tasks if all((t, a) in by for a in arms)]
    if not tasks:
        return {"problems": 0, "arms": {}, "comparisons": {}}

    def column(arm: str, key: str) -> np.ndarray:
        return np.array([float(key(by[(t, arm)]) if callable(key) else by[(t, arm)][key]) for t in tasks])

    def computed(r: dict[str, Any]) -> float:
        return r["generated_tokens"] + r["prompt_tokens"]

    idx = resample_indices(len(tasks), seed=seed)
    table: dict[str, dict[str, Any]] = {}
    for arm in arms:
        passed = column(arm, "passed")
        mean, lo, hi = bootstrap_ci(passed, idx)
        table[arm] = {
            "pass": mean,
            "pass_lo": lo,
            "pass_hi": hi,
            "oracle": float(np.mean(column(arm, lambda r: r["candidates_passing"] > 0))),
            "wall_s": float(np.mean(column(arm, "wall_s"))),
            "generated_tokens": float(np.mean(column(arm, "generated_tokens"))),
            "computed_tokens": float(np.mean(column(arm, computed))),
            "candidates": float(np.mean(column(arm, "candidates"))),
        }
    ref = reference_arms(arms)
    comparisons: dict[str, dict[str, Any]] = {}
    same_budget = {ARMS[a]["budget"]: a for a in ref}
    for arm in arms:
        if arm in ref:
            continue
        row: dict[str, Any] = {}
        y = column(arm, "passed")
        for name, key in (("wall", "wall_s"), ("computed", computed)):
            if len(ref) >= 2:
                cx = np.stack([column(a, key) for a in ref])
                cy = np.stack([column(a, "passed") for a in ref])
                gain, lo, hi = frontier_gain(cx, cy, column(arm, key), y, idx)
            else:
                gain = lo = hi = math.nan
            row[f"gain_at_equal_{name}"] = (gain, lo, hi, _verdict(lo, hi))
        twin = same_budget.get(ARMS[arm]["budget"])
        if twin is not None:
            d, lo, hi = bootstrap_ci(y - column(twin, "passed"), idx)
            row["vs_" + twin] = (d, lo, hi, _verdict(lo, hi))
        comparisons[arm] = row
    return {"problems": len(tasks), "tasks": tasks, "arms": table, "comparisons": comparisons, "reference": ref}


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}" if math.isfinite(x) else "n/a"


def summary_text(path: Path) -> str:
    """The report printed by ``sazanami bench humaneval-search --report``."""
    s = summarize(read_records(path))
    n = s["problems"]
    if n == 0:
        return f"{path}: no problem has every arm yet"
    lines = [
        f"HumanEval Experiment 2: {n} problems with every arm ({path})",
        "",
        f"{'arm':16} {'pass %':>7} {'95 % CI':>15} {'oracle %':>9} {'wall s':>7} {'gen tok':>8} {'comp tok':>9} {'cands':>6}",
    ]
    for arm, t in s["arms"].items():
        ci = f"[{100 * t['pass_lo']:.1f}, {100 * t['pass_hi']:.1f}]"
        lines.append(
            f"{arm:16} {100 * t['pass']:7.1f} {ci:>15} {100 * t['oracle']:9.1f} {t['wall_s']:7.1f} "
            f"{t['generated_tokens']:8.0f} {t['computed_tokens']:9.0f} {t['candidates']:6.1f}"
        )
    lines += [
        "",
        f"Against the best-of-n curve ({', '.join(s['reference'])}); gains in points, 95 % bootstrap intervals:",
    ]
    for arm, row in s["comparisons"].items():
        for key, (g, lo, hi, verdict) in row.items():
            label = {
                "gain_at_equal_wall": "at equal wall time",
                "gain_at_equal_computed": "at equal computed tokens",
            }.get(key, key.replace("vs_", "vs "))
            primary = " (primary)" if key == "gain_at_equal_wall" else ""
            lines.append(f"  {arm:14} {label:26} {_pct(g):>6} [{_pct(lo)}, {_pct(hi)}]  {verdict}{primary}")
    if n < POWER_PROBLEMS:
        lines += [
            "",
            f"{n} problems: below the ~{POWER_PROBLEMS} needed for 80 % power at a 10-point effect; an undecided "
            "interval here means the test is too small to decide, not that the arms are equal.",
        ]
    return "\n".join(lines)


def write_summary(path: Path) -> Path:
    """NAME_summary.csv beside the JSONL: one row per arm, then one per comparison."""
    s = summarize(read_records(path))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", "measure", "value", "lo", "hi", "verdict", "problems"])
    for arm, t in s.get("arms", {}).items():
        w.writerow([arm, "pass", f"{t['pass']:.4f}", f"{t['pass_lo']:.4f}", f"{t['pass_hi']:.4f}", "", s["problems"]])
        for key in ("oracle", "wall_s", "generated_tokens", "computed_tokens", "candidates"):
            w.writerow([arm, key, f"{t[key]:.4f}", "", "", "", s["problems"]])
    for arm, row in s.get("comparisons", {}).items():
        for key, (g, lo, hi, verdict) in row.items():
            w.writerow([arm, key, f"{g:.4f}", f"{lo:.4f}", f"{hi:.4f}", verdict, s["problems"]])
    out = path.with_name(path.stem + "_summary.csv")
    out.write_text(buf.getvalue())
    return out


def write_plot(path: Path) -> Path:
    """NAME.png beside the JSONL: pass rate against wall time and against computed tokens, the
    best-of-n curve as a line, every other arm as a point with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(read_records(path))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "wall_s", "mean wall time per problem (s)"),
        (axes[1], "computed_tokens", "computed tokens per problem"),
    ):
        ref = s.get("reference", [])
        ax.plot(
            [s["arms"][a][key] for a in ref],
            [100 * s["arms"][a]["pass"] for a in ref],
            "o-",
            color="grey",
            label="best-of-n",
        )
        for a in ref:
            ax.annotate(a.split("@")[1], (s["arms"][a][key], 100 * s["arms"][a]["pass"]), fontsize=8)
        for arm, t in s.get("arms", {}).items():
            if arm in ref:
                continue
            err = [[100 * (t["pass"] - t["pass_lo"])], [100 * (t["pass_hi"] - t["pass"])]]
            ax.errorbar([t[key]], [100 * t["pass"]], yerr=err, fmt="s", capsize=3, label=arm)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hidden-test pass rate (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"HumanEval Experiment 2 ({s['problems']} problems, Qwen2.5-Coder-0.5B, doctest scorer)")
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
