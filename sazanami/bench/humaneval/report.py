"""Tables from a HumanEval run's JSONL: pass@k per setting, and gains over the temperature curve.

Every figure is recomputed from the per-sample records. Intervals are percentile bootstraps that
resample problems (one seeded set of resamples for every setting, so comparisons are paired).
The frontier gain of a setting at k is its mean pass@k minus the temperature curve's pass@k at the
setting's pass@1 (:func:`sazanami.bench.frontier.statistics.frontier_gain`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.bench.frontier.statistics import bootstrap_ci, frontier_gain, resample_indices
from sazanami.bench.humaneval.passk import pass_at_k
from sazanami.bench.humaneval.run import read_records, temperature_curve

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
            cells = "  ".join(f"{k} {v[0] * 100:+5.1f} [{v[1] * 100:+5.1f},{v[2] * 100:+5.1f}]" for k, v in ks.items())
            lines.append(f"  gain over temperature at equal pass@1, {name:24} {cells}")
    return "\n".join(lines)
