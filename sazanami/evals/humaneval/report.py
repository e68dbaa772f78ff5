"""Tables from a HumanEval run's JSONL: pass@k per setting, and gains over the temperature curve.

Every figure is recomputed from the per-sample records. Intervals are percentile bootstraps that
resample problems (one seeded set of resamples for every setting, so comparisons are paired).
The frontier gain of a setting at k is its mean pass@k minus the temperature curve's pass@k at the
setting's pass@1 (:func:`sazanami.evals.frontier.statistics.frontier_gain`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.evals.frontier.statistics import bootstrap_ci, frontier_gain, resample_indices
from sazanami.evals.humaneval.passk import pass_at_k
from sazanami.evals.humaneval.run import read_records, temperature_curve

KS = (1, 2, 4, 8)


def per_problem(
    records: list[dict[str, Any]], half: str = "all"
) -> tuple[list[str], dict[str, dict[str, tuple[int, int]]]]:
    """Problems every setting covers (of ``half``), and (samples, passed) per setting and problem."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in records:
        c = counts[r["setting"]][r["task_id"]]
        c[0] += 1
        c[1] += int(r["passed"])
    settings = list(counts)
    common = set.intersection(*(set(counts[s]) for s in settings)) if settings else set()
    parity = {"dev": 0, "test": 1}.get(half)
    tasks = sorted(
        (t for t in common if parity is None or int(t.rsplit("/", 1)[1]) % 2 == parity),
        key=lambda t: int(t.rsplit("/", 1)[1]),
    )
    return tasks, {s: {t: (counts[s][t][0], counts[s][t][1]) for t in tasks} for s in settings}


def pass_matrix(table: dict[str, tuple[int, int]], tasks: list[str], k: int) -> np.ndarray:
    """(P,) per-problem pass@k (nan where a setting has fewer than k samples)."""
    return np.array([pass_at_k(table[t][0], table[t][1], k) if table[t][0] >= k else np.nan for t in tasks])


def summarize(path: Path, half: str = "all", n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """pass@k with intervals per setting, and gains at k over the temperature curve."""
    tasks, tables = per_problem(read_records(path), half)
    out: dict[str, Any] = {"problems": len(tasks), "half": half, "settings": {}, "gains": {}}
    if not tasks:
        return out
    idx = resample_indices(len(tasks), n_boot, seed)
    mats = {s: {k: pass_matrix(tab, tasks, k) for k in KS} for s, tab in tables.items()}
    for s, by_k in mats.items():
        out["settings"][s] = {f"pass@{k}": bootstrap_ci(v, idx) for k, v in by_k.items() if np.isfinite(v).any()}
    curve = temperature_curve(list(tables))
    if len(curve) >= 2:
        for s in tables:
            if s in curve:
                continue
            out["gains"][s] = {}
            for k in KS[1:]:
                cy = np.stack([mats[c][k] for c in curve])
                if not np.isfinite(cy).all() or not np.isfinite(mats[s][k]).all():
                    continue
                cx = np.stack([mats[c][1] for c in curve])
                out["gains"][s][f"pass@{k}"] = frontier_gain(cx, cy, mats[s][1], mats[s][k], idx)
    return out


def summary_text(path: Path) -> str:
    """The report printed by ``sazanami bench humaneval --report``: all problems, then each half."""
    lines = []
    for half in ("all", "test", "dev"):
        s = summarize(path, half)
        lines.append(f"== {half}: {s['problems']} problems covered by every setting ==")
        for name, ks in s["settings"].items():
            cells = "  ".join(f"{k} {v[0] * 100:5.1f} [{v[1] * 100:5.1f},{v[2] * 100:5.1f}]" for k, v in ks.items())
            lines.append(f"  {name:24} {cells}")
        for name, ks in s["gains"].items():
            if not ks:
                continue
            cells = "  ".join(f"{k} {v[0] * 100:+5.1f} [{v[1] * 100:+5.1f},{v[2] * 100:+5.1f}]" for k, v in ks.items())
            lines.append(f"  gain over temperature at equal pass@1, {name:24} {cells}")
    return "\n".join(lines)


def write_outputs(path: Path, out_dir: Path, name: str = "humaneval") -> dict[str, Path]:
    """``NAME_summary.csv`` (every setting, k and half with intervals, gains included) and ``NAME.png``
    (pass@k against pass@1 per setting, the temperature curve drawn as a line), from the raw JSONL."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / f"{name}_summary.csv", out_dir / f"{name}.png"
    halves = {half: summarize(path, half) for half in ("test", "dev", "all")}
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["half", "problems", "setting", "measure", "k", "value", "lo", "hi"])
        for half, s in halves.items():
            for setting, ks in s["settings"].items():
                for k, (v, lo, hi) in ks.items():
                    w.writerow([half, s["problems"], setting, "pass", k, f"{v:.4f}", f"{lo:.4f}", f"{hi:.4f}"])
            for setting, ks in s["gains"].items():
                for k, (v, lo, hi) in ks.items():
                    w.writerow(
                        [half, s["problems"], setting, "gain_over_temperature", k, f"{v:.4f}", f"{lo:.4f}", f"{hi:.4f}"]
                    )
    ks = [k for k in ("pass@2", "pass@4", "pass@8") if any(k in v for v in halves["test"]["settings"].values())]
    fig, axes = plt.subplots(1, max(len(ks), 1), figsize=(5 * max(len(ks), 1), 4), squeeze=False)
    settings = halves["test"]["settings"]
    curve = temperature_curve(list(settings))
    for ax, k in zip(axes[0], ks, strict=False):
        xs = [settings[c]["pass@1"][0] for c in curve]
        ys = [settings[c][k][0] for c in curve]
        ax.plot(xs, ys, "-o", color="black", label="temperature " + ", ".join(c[1:] for c in curve))
        for setting, vals in settings.items():
            if setting in curve or k not in vals:
                continue
            ax.errorbar(
                vals["pass@1"][0],
                vals[k][0],
                yerr=[[vals[k][0] - vals[k][1]], [vals[k][2] - vals[k][0]]],
                fmt="s",
                capsize=3,
                label=setting,
            )
        ax.set_xlabel("pass@1")
        ax.set_ylabel(k)
        ax.set_title(f"HumanEval test half ({halves['test']['problems']} problems): {k} vs pass@1")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return {"csv": csv_path, "png": png_path}
