"""The long-form run's files: CSVs, the run's facts (JSON) and three plots.

``longform.png``: distinct_k, semantic diversity and within-sample distinct-2 against
perplexity under the judge; ``longform_spectra.png``: the surprisal PSD of the human reference
and of each setting; ``longform_degeneration.png``: the fraction of samples not yet degenerated
at each position. Plot helpers are the frontier's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sazanami.evals.frontier.outputs import write_csv, write_run_facts
from sazanami.evals.frontier.plots import plot_method, pyplot, save_figure
from sazanami.evals.longform.run import LongformResult

_PANELS = (
    ("distinct_k", "distinct_k (equivalence classes among k samples)"),
    ("semantic_diversity", "semantic diversity (mean pairwise cosine distance)"),
    ("distinct_2_within", "distinct-2 within a sample"),
    ("psd_slope", "surprisal PSD slope β̂ (human reference: dashed)"),
)


def plot_longform(result: LongformResult, path: str | Path, title: str = "") -> Path:
    """Each panel: a metric against perplexity under the judge (generator when no judge), per method."""
    plt = pyplot()
    judged = any(math.isfinite(r.summary.get("ppl_judge", math.nan)) for r in result.results)
    key = "judge" if judged else "gen"
    rows = []
    for r in result.rows():
        rows.append(
            r
            | {
                "perplexity": r[f"ppl_{key}"],
                "perplexity_lo": r[f"ppl_{key}_lo"],
                "perplexity_hi": r[f"ppl_{key}_hi"],
            }
        )
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(5.2 * len(_PANELS), 4.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, (metric, label) in zip(axes[0], _PANELS, strict=True):
        for i, m in enumerate(methods):
            color = "black" if m == "temperature" else colors[(i - 1) % len(colors)]
            plot_method(ax, [r for r in rows if r["method"] == m], m, color, m == "temperature", metric)
        h = result.human
        if metric == "psd_slope" and all(math.isfinite(h[k]) for k in ("psd_slope", "psd_slope_lo", "psd_slope_hi")):
            ax.axhline(h["psd_slope"], color="grey", ls="--", lw=1)
            ax.axhspan(h["psd_slope_lo"], h["psd_slope_hi"], color="grey", alpha=0.15)
        if any(math.isfinite(r["perplexity"]) and math.isfinite(r[metric]) for r in rows):
            ax.set_xscale("log")  # an all-nan panel (spectra of short samples) cannot be log-scaled
        ax.set_xlabel(f"perplexity under {'the judge (Gemma 3 270M)' if judged else 'the generator'}, log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7, loc="best")
    return save_figure(fig, path, title, title_size=9)


def plot_spectra(result: LongformResult, path: str | Path, title: str = "") -> Path:
    """Mean Welch PSD of the surprisal series: the human reference (black) and every setting."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(result.results):
        if r.spectrum is not None:
            f, p = r.spectrum
            ax.loglog(f[1:], p[1:], lw=1, color=colors[i % len(colors)], label=r.setting.name)
    if result.human.get("spectrum") is not None:
        f, p = result.human["spectrum"]
        ax.loglog(f[1:], p[1:], lw=2.5, color="black", label="human reference (Python docs prose)")
    ax.set_xlabel("frequency (cycles/token)")
    ax.set_ylabel("surprisal power (nats²/cycle)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, title, title_size=9)


def plot_degeneration(result: LongformResult, path: str | Path, title: str = "") -> Path:
    """Fraction of samples not yet degenerated (no loop, no token with p < p_min) by position."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(result.results):
        style = "-" if r.setting.method == "temperature" else "--"
        ax.plot(
            np.arange(len(r.survival)), r.survival, style, lw=1.2, color=colors[i % len(colors)], label=r.setting.name
        )
    ax.set_xlabel("token position")
    ax.set_ylabel("fraction of samples not yet degenerated")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, title, title_size=9)


def write_outputs(result: LongformResult, out: str | Path, name: str = "longform") -> dict[str, Path]:
    """``NAME.csv`` (one row per setting), ``NAME_prompts.csv``, ``NAME.json`` (run facts, human
    reference, partitioner check) and the three plots, under ``out``."""
    out = Path(out)
    cfg = result.config
    title = (
        f"{cfg.model or 'smollm2-135m'} · {Path(cfg.prompts).name} · {len(result.prompts)} prompts × "
        f"{cfg.samples} samples × {cfg.max_tokens} tokens · judge: {result.judge}\n95% bootstrap intervals over prompts"
    )
    paths = {
        "csv": write_csv(result.rows(), out / f"{name}.csv"),
        "prompts_csv": write_csv(result.prompt_rows(), out / f"{name}_prompts.csv"),
        "png": plot_longform(result, out / f"{name}.png", title),
        "spectra_png": plot_spectra(result, out / f"{name}_spectra.png", title),
        "degeneration_png": plot_degeneration(result, out / f"{name}_degeneration.png", title),
    }
    human = {k: v for k, v in result.human.items() if k != "spectrum"}
    paths["json"] = write_run_facts(
        result, out / f"{name}.json", judge=result.judge, human_reference=human, partitioner=result.partitioner
    )
    return paths
