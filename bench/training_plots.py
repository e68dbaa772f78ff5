"""Tables, intervals and figures for docs/TRAINING.md from the training benches' output.

    python bench/training_plots.py     # prints markdown tables; writes docs/training_grokking.png,
                                       # docs/training_finetune.png (the pruning bench draws its own)

Grokking: steps to 95 % validation accuracy per method over seeds (mean ± SD when every seed
reached it, else the median and range with censored runs as "> cap"), validation accuracy at
the cap, and the baseline / Grokfast ratio (a lower bound when the baseline is censored).
Fine-tuning: exact match pooled over seeds with a 95 % Wilson interval, and the paired
difference to the baseline (same seed = same held-out questions) in exact match and in answer
NLL with a 95 % bootstrap interval (examples resampled within each seed, 4000 draws, seed 0).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

PAPER = {"baseline": 39890, "ema": 910, "ma": 790}  # Lee et al. 2024, steps to 95 % val (their setting)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


# --------------------------------------------------------------------------- grokking


def load_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _first(curve: list, column: int, threshold: float) -> int | None:
    return next((c[0] for c in curve if c[column] >= threshold), None)


def _val_at(curve: list, step: int) -> float:
    return max((c for c in curve if c[0] <= step), key=lambda c: c[0])[2]


def grokking_summary(runs: list[dict]) -> tuple[str, dict]:
    """Markdown table per method and a dict method → summary numbers."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    common = min(r["budget"] for r in runs)  # every run's validation accuracy is known at this step
    lines = [
        "| method | seeds | cap | reached 95 % | steps to 95 % val | train ≥ 99 % at (median, runs) |"
        f" val acc at step {common:,} (mean, range) |",
        "|---|---|---|---|---|---|---|",
    ]
    out = {}
    for m in methods:
        rs = sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
        cap = max(r["budget"] for r in rs)
        reached = [r["steps_to_95"] for r in rs if r["steps_to_95"] is not None]
        keyed = sorted((r["steps_to_95"] if r["steps_to_95"] is not None else math.inf) for r in rs)
        if len(reached) == len(rs):
            sd = statistics.stdev(reached) if len(reached) > 1 else 0.0
            steps = f"{statistics.mean(reached):,.0f} ± {sd:,.0f} (range {min(reached):,}–{max(reached):,})"
        elif reached:
            med = statistics.median(keyed)
            steps = f"median {'> ' + format(cap, ',') if math.isinf(med) else format(med, ',.0f')} (range {min(reached):,} – > {cap:,})"
        else:
            steps = f"> {cap:,} (all censored)"
        mem = [s for s in (_first(r["curve"], 1, 0.99) for r in rs) if s is not None]
        mem_s = f"{statistics.median(mem):,.0f} ({len(mem)}/{len(rs)})" if mem else "—"
        # a run that stopped at 95 % before that step is counted with its last value (≥ 0.95)
        at = [(_val_at(r["curve"], common) if r["curve"][-1][0] >= common else r["curve"][-1][2]) for r in rs]
        lines.append(
            f"| {m} | {', '.join(str(r['seed']) for r in rs)} | {cap:,} | {len(reached)}/{len(rs)} | {steps} | {mem_s}"
            f" | {statistics.mean(at):.3f} ({min(at):.3f}–{max(at):.3f}) |"
        )
        out[m] = {"reached": reached, "n": len(rs), "cap": cap, "val_at_common": at}
    return "\n".join(lines), out


def ratio_lines(s: dict) -> str:
    lines = []
    base = s.get("baseline")
    for m in ("ema", "ma"):
        if m not in s or not s[m]["reached"] or base is None:
            continue
        g = statistics.mean(s[m]["reached"])
        paper = PAPER["baseline"] / PAPER[m]
        if len(base["reached"]) == base["n"]:
            lines.append(f"- baseline / {m}: {statistics.mean(base['reached']) / g:.1f}× (paper: {paper:.0f}×)")
        else:
            lines.append(
                f"- baseline / {m}: > {base['cap'] / g:.1f}× (baseline censored at {base['cap']:,};"
                f" {m} mean {g:,.0f} over {len(s[m]['reached'])} seeds that reached 95 %; paper: {paper:.0f}×)"
            )
    return "\n".join(lines)


def grokking_plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in runs))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for r in runs:
        steps = [c[0] for c in r["curve"]]
        ls = styles[r["seed"] % len(styles)]
        label = r["method"] if r["seed"] == min(q["seed"] for q in runs if q["method"] == r["method"]) else None
        for ax, col in zip(axes, (1, 2)):
            ax.plot(steps, [c[col] for c in r["curve"]], ls, color=colors[r["method"]], lw=1, label=label)
    for ax, name in zip(
        axes, ("train accuracy (batches since the last evaluation)", "validation accuracy (4,705 pairs)")
    ):
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        ax.axhline(0.95, color="grey", lw=0.5)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8, title="seed 0 solid, 1 dashed, 2 dotted", title_fontsize=8)
    fig.suptitle("Modular addition mod 97, 50 % of pairs train; 2-layer transformer (the paper's block), width 128")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- fine-tuning


def _paired(rep: dict, method: str, key: str, draws: int = 4000) -> tuple[float, float, float]:
    """Mean over examples (all seeds) of method − baseline in ``key``, with a 95 % bootstrap interval."""
    rng = np.random.default_rng(0)
    diffs = []
    for r in rep["runs"]:
        if r["method"] != method:
            continue
        b = next((q for q in rep["runs"] if q["method"] == "baseline" and q["seed"] == r["seed"]), None)
        if b is not None:
            diffs.append(np.asarray(r[key], float) - np.asarray(b[key], float))
    if not diffs:
        return (math.nan, math.nan, math.nan)
    n = sum(len(d) for d in diffs)
    boot = sum(d[rng.integers(0, len(d), (draws, len(d)))].sum(1) for d in diffs) / n
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(np.concatenate(diffs).mean()), float(lo), float(hi)


def finetune_summary(rep: dict) -> tuple[str, list[dict]]:
    lines = [
        "| method | seeds | exact match, pooled [95 % Wilson] | per seed | Δ exact vs baseline [95 % bootstrap] |"
        " answer NLL (mean) | Δ NLL vs baseline [95 % bootstrap] | final train loss (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    base = rep["base"]
    k = sum(sum(b["hits"]) for b in base.values())
    n = sum(len(b["hits"]) for b in base.values())
    lo, hi = wilson(k, n)
    lines.append(
        f"| untrained model | {', '.join(base)} | {k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}] |"
        f" {' / '.join(format(b['accuracy'], '.2f') for b in base.values())} | — |"
        f" {np.mean([x for b in base.values() for x in b['nll']]):.3f} | — | — |"
    )
    rows.append({"method": "untrained", "acc": k / n, "ci": (lo, hi), "dnll": None})
    for m in dict.fromkeys(r["method"] for r in rep["runs"]):
        rs = sorted((r for r in rep["runs"] if r["method"] == m), key=lambda r: r["seed"])
        k = sum(sum(r["hits"]) for r in rs)
        n = sum(len(r["hits"]) for r in rs)
        lo, hi = wilson(k, n)
        nll = np.mean([x for r in rs for x in r["nll"]])
        loss = np.mean([r["losses"][-1] for r in rs])
        if m == "baseline":
            dacc = dnll = "—"
            d = None
        else:
            a = _paired(rep, m, "hits")
            d = _paired(rep, m, "nll")
            dacc = f"{a[0]:+.3f} [{a[1]:+.3f}, {a[2]:+.3f}]"
            dnll = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        lines.append(
            f"| {m} | {', '.join(str(r['seed']) for r in rs)} | {k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}] |"
            f" {' / '.join(format(r['accuracy'], '.2f') for r in rs)} | {dacc} | {nll:.3f} | {dnll} | {loss:.3f} |"
        )
        rows.append({"method": m, "acc": k / n, "ci": (lo, hi), "dnll": d})
    return "\n".join(lines), rows


def finetune_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [r["method"] for r in rows]
    acc = [r["acc"] for r in rows]
    err = [[r["acc"] - r["ci"][0] for r in rows], [r["ci"][1] - r["acc"] for r in rows]]
    axes[0].errorbar(range(len(rows)), acc, yerr=err, fmt="o", capsize=4)
    axes[0].set_xticks(range(len(rows)), names, rotation=20)
    axes[0].set_ylabel("held-out exact match (pooled seeds)")
    axes[0].set_title("accuracy, 95 % Wilson")
    d = [r for r in rows if r["dnll"] is not None]
    axes[1].errorbar(
        range(len(d)),
        [r["dnll"][0] for r in d],
        yerr=[[r["dnll"][0] - r["dnll"][1] for r in d], [r["dnll"][2] - r["dnll"][0] for r in d]],
        fmt="o",
        capsize=4,
    )
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].set_xticks(range(len(d)), [r["method"] for r in d], rotation=20)
    axes[1].set_ylabel("Δ answer NLL vs baseline (nats)")
    axes[1].set_title("paired difference, 95 % bootstrap (below 0 = better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- pruning


def pruning_table(path: Path) -> str:
    rows = json.loads(path.read_text())["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["score"] != "dense"})
    dense = next(r for r in rows if r["score"] == "dense")
    lines = ["| score | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |", "|---" * (len(sparsities) + 1) + "|"]
    lines.append(
        f"| dense (0 %) | {dense['ppl']:.1f} [{dense['ci'][0]:.1f}, {dense['ci'][1]:.1f}] |"
        + " |" * (len(sparsities) - 1)
    )
    for score in dict.fromkeys(r["score"] for r in rows if r["score"] != "dense"):
        cells = []
        for s in sparsities:
            r = next((r for r in rows if r["score"] == score and r["sparsity"] == s), None)
            cells.append("—" if r is None else f"{r['ppl']:.3g} [{r['ci'][0]:.3g}, {r['ci'][1]:.3g}]")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grokking", default="docs/training_grokking.jsonl")
    ap.add_argument(
        "--grokking-long",
        default="docs/training_grokking_baseline3000.jsonl",
        help="the baseline at a larger cap (a table, no figure)",
    )
    ap.add_argument("--finetune", default="docs/training_finetune.json")
    ap.add_argument("--pruning", default="docs/training_pruning.json")
    args = ap.parse_args()
    if Path(args.grokking).exists():
        runs = load_runs(Path(args.grokking))
        grokking_plot(runs, Path(args.grokking).with_suffix(".png"))
        text, s = grokking_summary(runs)
        print(text, ratio_lines(s), sep="\n\n", end="\n\n")
    if Path(args.grokking_long).exists():
        print(grokking_summary(load_runs(Path(args.grokking_long)))[0], end="\n\n")
    if Path(args.finetune).exists():
        text, rows = finetune_summary(json.loads(Path(args.finetune).read_text()))
        finetune_plot(rows, Path(args.finetune).with_suffix(".png"))
        print(text, end="\n\n")
    if Path(args.pruning).exists():
        print(pruning_table(Path(args.pruning)))


if __name__ == "__main__":
    main()
