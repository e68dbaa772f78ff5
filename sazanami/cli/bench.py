"""``sazanami bench``: benchmarks from the command line. Thin layer over :mod:`sazanami.evals.frontier`.

Registered on the main group in :mod:`sazanami.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.cli.options import backend_option, config_from_options, config_options, engine_from_options
from sazanami.errors import ParameterError
from sazanami.evals.frontier.run import FrontierConfig

DEFAULT_OUT = Path("bench") / "out" / "frontier"
#: One cache for every run, so a full run reuses a quick run's generations.
DEFAULT_CACHE = Path("bench") / "out" / "frontier-cache.jsonl"


@click.group(name="bench")
def bench_group() -> None:
    """Benchmarks that measure what sazanami's samplers buy."""


FRONTIER_FIELDS = (
    "prompts",
    "samples",
    "max_tokens",
    "methods",
    "limit",
    "quick",
    "cache",
    "fresh",
    "model",
    "seed",
    "n_boot",
)
"""The :class:`~sazanami.evals.frontier.FrontierConfig` fields ``bench frontier`` takes as options."""


@bench_group.command("frontier")
@config_options(FrontierConfig, FRONTIER_FIELDS, {"cache": str(DEFAULT_CACHE)})
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder for NAME.csv, NAME.png, NAME_gain.png, NAME_prompts.csv, NAME.json  "
    "[default: bench/out/frontier, or bench/out/frontier-quick]",
)
@click.option("--name", default="frontier", show_default=True, help="File name stem of the outputs.")
@backend_option
@click.option(
    "--threads",
    type=int,
    default=None,
    help="torch CPU threads; 1 is much faster when other jobs share the cores  [default: torch's]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-setting lines.")
@click.option("--list-methods", is_flag=True, help="List the methods and their sweeps, then exit.")
def frontier(
    out: str | None,
    name: str,
    backend: str,
    threads: int | None,
    quiet: bool,
    list_methods: bool,
    **fields: Any,
) -> None:
    """Diversity vs perplexity of every sampler setting: the frontier, and who beats temperature.

    For each method and setting, draws SAMPLES completions per prompt (seeds shared across
    settings), measures semantic diversity, distinct-2, self-BLEU, perplexity under the
    model at T = 1 and the Radvand surprisal-entropy gap, and writes a CSV (means with 95%
    bootstrap intervals over prompts, and each setting's diversity gain over the temperature
    curve at equal perplexity) and plots of the frontier and of the gains.
    """
    from sazanami.evals import frontier as fr

    if list_methods:
        for m in fr.METHODS.values():
            values = ", ".join(f"{v:g}" for v in m.values)
            betas = f"; β points {', '.join(f'{b:g}' for b in m.betas)}" if m.betas else ""
            click.echo(f"{m.name:18} {m.description} — {m.sweep}: {values}{betas}")
        return
    if threads is not None:
        if threads < 1:
            raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
        import torch

        torch.set_num_threads(threads)
    out_dir = Path(out) if out else DEFAULT_OUT.with_name("frontier-quick" if fields["quick"] else "frontier")
    config = config_from_options(fr.FrontierConfig, fields)
    from sazanami.models import DEFAULT_MODEL

    rows = config.resolved().samples or 1  # each prompt's samples run as one batch
    engine = engine_from_options(config.model or DEFAULT_MODEL, True, backend, rows)
    if not quiet:
        click.echo(f"backend: {engine.backend.capabilities.backend}", err=True)
    result = fr.run_frontier(config, engine, progress=not quiet, log=(lambda s: None) if quiet else None)
    paths = fr.write_outputs(result, out_dir, name)
    rows = result.rows()
    beyond = [r for r in rows if r["verdict"] == "beyond"]
    click.echo(
        f"{len(rows)} settings, {len(result.prompts)} prompts × {result.config.samples} samples × "
        f"{result.config.max_tokens} tokens in {result.wall_s:.0f} s "
        f"({sum(r.generated for r in result.results)} rows generated)"
    )
    click.echo("beyond the temperature frontier (95% interval of the semantic-diversity gain above 0):")
    for r in beyond:
        repetitive = r["distinct_2_verdict"] == "below"
        note = "  (but distinct-2 below the temperature curve: repetition)" if repetitive else ""
        click.echo(f"  {r['method']} {r['label']}: +{r['gain']:.3f} [{r['gain_lo']:.3f}, {r['gain_hi']:.3f}]{note}")
    if not beyond:
        click.echo("  none")
    for key, path in paths.items():
        click.echo(f"{key}: {path}")


from sazanami.cli.bench_longform import longform  # noqa: E402  (its own module; registered here)

bench_group.add_command(longform)

from sazanami.cli.bench_humaneval import humaneval  # noqa: E402  (its own module; registered here)

bench_group.add_command(humaneval)

from sazanami.cli.bench_humaneval_search import humaneval_search  # noqa: E402  (its own module; registered here)

bench_group.add_command(humaneval_search)
