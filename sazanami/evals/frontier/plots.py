"""The frontier's plots: diversity against perplexity per method, and a forest plot of the gains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, title: str, title_size: int) -> Path:
    """Title, lay out and write ``fig`` as a PNG at ``path`` (folders made); close it."""
    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


_BASELINES = ("top_p", "min_p", "typical", "dynatemp", "mirostat")


def plot_frontier(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Semantic diversity (top row) and distinct-2 (bottom) vs perplexity (x, log) per method.

    Three panels over the same temperature curve (black): truncation and adaptive baselines;
    noise on the temperature and the logits; noise on the draw and inside the model. Lines
    join a method's sweep; off-curve β points are hollow markers.
    """
    plt = pyplot()
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "temperature"]
    baselines = [m for m in methods if m in _BASELINES]
    outer = [m for m in methods if m not in _BASELINES and ("temperature" in m or "logits" in m)]
    inner = [m for m in methods if m not in baselines and m not in outer]
    panels = [
        ("truncation and adaptive samplers", baselines),
        ("noise on the temperature or the logits", outer),
        ("noise on the draw or inside the model", inner),
    ]
    panels = [p for p in panels if p[1]] or [("temperature", [])]
    metrics = (
        ("semantic_diversity", "semantic diversity (mean pairwise cosine distance)"),
        ("distinct_2", "distinct-2 (distinct bigrams / bigrams)"),
    )
    fig, axes = plt.subplots(
        len(metrics),
        len(panels),
        figsize=(6.5 * len(panels), 5.5 * len(metrics)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    colors = plt.get_cmap("tab10").colors
    for row, (metric, ylabel) in enumerate(metrics):
        for ax, (name, members) in zip(axes[row], panels, strict=True):
            for i, m in enumerate(["temperature", *members]):
                color = "black" if m == "temperature" else colors[(i - 1) % len(colors)]
                plot_method(ax, [r for r in rows if r["method"] == m], m, color, m == "temperature", metric)
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
            if row == 0:
                ax.set_title(name)
                ax.legend(fontsize=8, loc="lower right")
            if row == len(metrics) - 1:
                ax.set_xlabel("perplexity under the reference model (T = 1), log scale")
        axes[row][0].set_ylabel(ylabel)
    return save_figure(fig, path, title, title_size=10)


def plot_method(ax: Any, rows: list[dict[str, Any]], name: str, color: Any, reference: bool, metric: str) -> None:
    curve = sorted((r for r in rows if r["sweep"] != "beta"), key=lambda r: r["value"])
    for group, hollow in ((curve, False), ([r for r in rows if r["sweep"] == "beta"], True)):
        if not group:
            continue
        x = np.array([r["perplexity"] for r in group])
        y = np.array([r[metric] for r in group])
        xerr = np.array(
            [
                [r["perplexity"] - r["perplexity_lo"] for r in group],
                [r["perplexity_hi"] - r["perplexity"] for r in group],
            ]
        )
        yerr = np.array(
            [
                [r[metric] - r[f"{metric}_lo"] for r in group],
                [r[f"{metric}_hi"] - r[metric] for r in group],
            ]
        )
        ax.errorbar(
            x,
            y,
            xerr=np.clip(xerr, 0, None),
            yerr=np.clip(yerr, 0, None),
            color=color,
            fmt="none" if hollow else "-",
            lw=2.5 if reference else 1.2,
            elinewidth=0.7,
            capsize=2,
            alpha=0.9,
        )
        ax.scatter(
            x,
            y,
            s=28,
            facecolors="none" if hollow else color,
            edgecolors=color,
            zorder=3,
            label=None if hollow else name,
        )
        for r, xi, yi in zip(group, x, y, strict=True):
            if hollow or reference or r is group[0] or r is group[-1]:
                ax.annotate(r["label"], (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)


def plot_gains(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Frontier gains of every non-temperature setting with their intervals (a forest plot).

    Left: semantic diversity; right: distinct-2 (a drop there flags repetition). Green: the
    interval lies above 0; red: below; blue: it holds 0.
    """
    plt = pyplot()
    items = [r for r in rows if r["method"] != "temperature"]
    n = len(items)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.22 * n + 1.6), sharey=True, squeeze=False)
    panels = (("gain", "semantic-diversity gain"), ("distinct_2_gain", "distinct-2 gain"))
    for ax, (key, xlabel) in zip(axes[0], panels, strict=True):
        for i, r in enumerate(items):
            y, g, lo, hi = n - 1 - i, r[key], r[f"{key}_lo"], r[f"{key}_hi"]
            if not math.isfinite(g):
                ax.text(0, y, "outside the temperature range", fontsize=7, va="center", ha="center", color="grey")
                continue
            color = "tab:green" if lo > 0 else ("tab:red" if hi < 0 else "tab:blue")
            ax.errorbar([g], [y], xerr=[[g - lo], [hi - g]], fmt="o", color=color, ms=4, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"{xlabel} over the temperature curve\nat equal perplexity (95% interval)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(n))
    axes[0][0].set_yticklabels([f"{r['method']} {r['label']}" for r in reversed(items)], fontsize=7)
    axes[0][0].set_ylim(-0.7, n - 0.3)
    return save_figure(fig, path, title, title_size=9)
