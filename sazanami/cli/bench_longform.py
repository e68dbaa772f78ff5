"""``sazanami bench longform``: thin layer over :mod:`sazanami.evals.longform` (registered in :mod:`.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.cli.options import backend_option, config_from_options, config_options, engine_from_options
from sazanami.errors import ParameterError
from sazanami.evals.longform.run import LongformConfig

DEFAULT_OUT = Path("bench") / "out" / "longform"
DEFAULT_CACHE = Path("bench") / "out" / "longform-cache.jsonl"


LONGFORM_FIELDS = (
    "prompts", "samples", "max_tokens", "methods", "limit", "judge_samples", "partitioner", "quick", "cache",
    "model", "seed", "n_boot",
)  # fmt: skip
"""The :class:`~sazanami.evals.longform.LongformConfig` fields ``bench longform`` takes as options."""


@click.command("longform")
@config_options(LongformConfig, LONGFORM_FIELDS, {"cache": str(DEFAULT_CACHE)})
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder  [default: bench/out/longform]"
)
@click.option("--name", default="longform", show_default=True, help="File name stem of the outputs.")
@backend_option
@click.option(
    "--threads",
    type=int,
    default=None,
    help="torch and llama.cpp CPU threads; 1 on shared cores  [default: torch's; the judge: physical cores]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-setting lines.")
@click.option("--list-methods", is_flag=True, help="List the methods and their sweeps, then exit.")
def longform(
    out: str | None,
    name: str,
    backend: str,
    threads: int | None,
    quiet: bool,
    list_methods: bool,
    **fields: Any,
) -> None:
    """Long texts: surprisal spectra vs human prose, repetition, degeneration, distinct_k, and
    perplexity under an independent judge (Gemma 3 270M), per sampler setting.

    Writes longform.csv (means with 95% bootstrap intervals over prompts, and gains over the
    temperature curve at equal judge perplexity), longform_prompts.csv, longform.json and
    plots of the frontier, the surprisal spectra and the degeneration curves.
    """
    from sazanami.evals import longform as lf

    if list_methods:
        for m in lf.LONGFORM_METHODS.values():
            quick_mark = " (quick)" if m.name in lf.QUICK_METHODS else ""
            click.echo(
                f"{m.name:18} {m.description} — {m.sweep}: {', '.join(f'{v:g}' for v in m.values)}; "
                f"quick {', '.join(f'{v:g}' for v in m.quick_values)}{quick_mark}"
            )
        return
    if threads is not None:
        if threads < 1:
            raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
        import torch

        torch.set_num_threads(threads)
    config = config_from_options(lf.LongformConfig, fields | {"threads": threads})
    from sazanami.models import DEFAULT_MODEL

    rows = config.resolved().samples or 1  # each prompt's samples run as one batch
    engine = engine_from_options(config.model or DEFAULT_MODEL, True, backend, rows)
    if not quiet:
        click.echo(f"backend: {engine.backend.capabilities.backend}", err=True)
    result = lf.run_longform(config, engine, progress=not quiet, log=(lambda s: None) if quiet else None)
    paths = lf.write_outputs(result, Path(out) if out else DEFAULT_OUT, name)
    cfg = result.config
    h = result.human
    click.echo(
        f"{len(result.results)} settings, {len(result.prompts)} prompts × {cfg.samples} samples × "
        f"{cfg.max_tokens} tokens in {result.wall_s:.0f} s; judge: {result.judge}"
    )
    click.echo(
        f"human reference ({h['passages']} passages): PSD slope {h['psd_slope']:.3f} "
        f"[{h['psd_slope_lo']:.3f}, {h['psd_slope_hi']:.3f}], DFA {h['dfa']:.3f} [{h['dfa_lo']:.3f}, {h['dfa_hi']:.3f}]"
    )
    for r in result.rows():
        click.echo(
            f"  {r['method']} {r['label']}: judge ppl {r['ppl_judge']:.1f}, distinct_k {r['distinct_k']:.2f} "
            f"[{r['distinct_k_lo']:.2f}, {r['distinct_k_hi']:.2f}], slope {r['psd_slope']:.3f}, "
            f"degeneration {r['degeneration']:.2f}"
        )
    for key, path in paths.items():
        click.echo(f"{key}: {path}")
