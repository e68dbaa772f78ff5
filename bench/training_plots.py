"""Plots and a summary table of the grokking runs (``docs/training_grokking_s*.jsonl``).

    python bench/training_plots.py        # writes docs/training_grokking.png, prints a markdown table
"""

from __future__ import annotations

import json
from pathlib import Path


def load(pattern: str = "docs/training_grokking_s*.jsonl") -> list[dict]:
    runs = []
    for path in sorted(Path().glob(pattern)):
        runs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return runs


def _first(curve: list, column: int, threshold: float) -> str:
    step = next((c[0] for c in curve if c[column] >= threshold), None)
    return "—" if step is None else str(step)


def table(runs: list[dict]) -> str:
    """One row per run: steps to 95 % validation accuracy (or > budget) and milestones on the way."""
    lines = [
        "| method | seed | budget | steps to 95 % val | train ≥ 99 % at | val ≥ 10 % at | val ≥ 50 % at | val acc at end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["seed"], r["budget"], r["method"])):
        c = r["curve"]
        reached = str(r["steps_to_95"]) if r["steps_to_95"] else f"> {r['budget']}"
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['budget']} | {reached} | {_first(c, 1, 0.99)} | {_first(c, 2, 0.10)}"
            f" | {_first(c, 2, 0.50)} | {c[-1][2]:.3f} (step {c[-1][0]}) |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: -r["budget"])  # a longer run of a method is drawn first, under the shorter
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in runs:
        steps = [c[0] for c in r["curve"]]
        ls = "-" if r["seed"] == 0 else "--"
        label = f"{r['method']} (seed {r['seed']}, budget {r['budget']})"
        axes[0].plot(steps, [c[1] for c in r["curve"]], ls, color=colors[r["method"]], lw=1, label=label)
        axes[1].plot(steps, [c[2] for c in r["curve"]], ls, color=colors[r["method"]], lw=1, label=label)
    for ax, name in zip(axes, ("train accuracy (1024 fixed train pairs)", "validation accuracy")):
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        ax.axhline(0.95, color="grey", lw=0.5)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    fig.suptitle("Modular addition mod 97, 50 % of pairs train; 2-layer transformer, width 128")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pruning_table(path: Path = Path("docs/training_pruning.json")) -> str:
    rows = json.loads(path.read_text())["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["score"] != "dense"})
    dense = next(r for r in rows if r["score"] == "dense")
    lines = ["| score | " + " | ".join(f"{s:g}" for s in sparsities) + " |", "|---" * (len(sparsities) + 1) + "|"]
    lines.append(f"| dense | {dense['ppl']:.1f} [{dense['ci'][0]:.1f}, {dense['ci'][1]:.1f}] (0 %) |" + " |" * (len(sparsities) - 1))
    for score in dict.fromkeys(r["score"] for r in rows if r["score"] != "dense"):
        cells = []
        for s in sparsities:
            r = next((r for r in rows if r["score"] == score and r["sparsity"] == s), None)
            cells.append("—" if r is None else f"{r['ppl']:.3g} [{r['ci'][0]:.3g}, {r['ci'][1]:.3g}]")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetune_table(path: Path = Path("docs/training_finetune.json")) -> str:
    rep = json.loads(path.read_text())
    b = rep["base"]
    lines = ["| method | seed | held-out exact match [95 % Wilson] | final train loss |", "|---|---|---|---|",
             f"| base model (no training) | — | {b['accuracy']:.3f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}] (n = {b['n']}) | — |"]
    for r in sorted(rep["runs"], key=lambda r: (r["method"], r["seed"])):
        lines.append(f"| {r['method']} | {r['seed']} | {r['accuracy']:.3f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] | {r['final_loss']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = load()
    if runs:
        plot(runs, Path("docs/training_grokking.png"))
        print(table(runs), end="\n\n")
    if Path("docs/training_pruning.json").exists():
        print(pruning_table(), end="\n\n")
    if Path("docs/training_finetune.json").exists():
        print(finetune_table())
