"""``sazanami bench``: benchmarks from the command line. Thin layer over :mod:`sazanami.bench.frontier`.

Registered on the main group in :mod:`sazanami.cli`.
"""

from __future__ import annotations

from pathlib import Path

import click

from sazanami.cli.options import backend_option, engine_from_options
from sazanami.errors import ParameterError

DEFAULT_OUT = Path("bench") / "out" / "frontier"
#: One cache for every run, so a full run reuses a quick run's generations.
DEFAULT_CACHE = Path("bench") / "out" / "frontier-cache.jsonl"


@click.group(name="bench")
def bench_group() -> None:
    """Benchmarks that measure what sazanami's samplers buy."""


@bench_group.command("frontier")
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSONL prompts ({id, prompt} per line)  [default: bench/data/creative_dev.jsonl]",
)
@click.option("--samples", "-k", type=int, default=None, help="Samples per prompt and setting  [default: 8; quick 4]")
@click.option("--max-tokens", type=int, default=None, help="New tokens per sample  [default: 48; quick 32]")
@click.option(
    "--methods",
    default=None,
    help="Comma-separated methods (temperature is always included)  [default: all]; see --list-methods.",
)
@click.option("--limit", type=int, default=None, help="Use the first N prompts  [default: all; quick 6]")
@click.option("--quick", is_flag=True, help="Few prompts, samples, tokens and settings: minutes on a laptop CPU.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder for NAME.csv, NAME.png, NAME_gain.png, NAME_prompts.csv, NAME.json  "
    "[default: bench/out/frontier, or bench/out/frontier-quick]",
)
@click.option("--name", default="frontier", show_default=True, help="File name stem of the outputs.")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    default=None,
    help="Generation cache (JSONL), shared by runs  [default: bench/out/frontier-cache.jsonl]",
)
@click.option("--fresh", is_flag=True, help="Ignore cached generations.")
@click.option("--model", "-m", default=None, help="Registry name, HF directory or .gguf  [default: the embedded model]")
@backend_option
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of the samples and the bootstrap.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="torch CPU threads; 1 is much faster when other jobs share the cores  [default: torch's]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-setting lines.")
@click.option("--list-methods", is_flag=True, help="List the methods and their sweeps, then exit.")
def frontier(
    prompts: str | None,
    samples: int | None,
    max_tokens: int | None,
    methods: str | None,
    limit: int | None,
    quick: bool,
    out: str | None,
    name: str,
    cache: str | None,
    fresh: bool,
    model: str | None,
    backend: str,
    seed: int,
    n_boot: int,
    threads: int | None,
    quiet: bool,
    list_methods: bool,
) -> None:
    """Diversity vs perplexity of every sampler setting: the frontier, and who beats temperature.

    For each method and setting, draws SAMPLES completions per prompt (seeds shared across
    settings), measures semantic diversity, distinct-2, self-BLEU, perplexity under the
    model at T = 1 and the Radvand surprisal-entropy gap, and writes a CSV (means with 95%
    bootstrap intervals over prompts, and each setting's diversity gain over the temperature
    curve at equal perplexity) and plots of the frontier and of the gains.
    """
    from sazanami.bench import frontier as fr

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
    out_dir = Path(out) if out else DEFAULT_OUT.with_name("frontier-quick" if quick else "frontier")
    config = fr.FrontierConfig(
        prompts=prompts or fr.DEFAULT_PROMPTS,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None,
        samples=samples,
        max_tokens=max_tokens,
        limit=limit,
        quick=quick,
        model=model,
        seed=seed,
        n_boot=n_boot,
        cache=Path(cache) if cache else DEFAULT_CACHE,
        fresh=fresh,
    )
    from sazanami.models import DEFAULT_MODEL

    rows = config.resolved().samples or 1  # each prompt's samples run as one batch
    engine = engine_from_options(model or DEFAULT_MODEL, True, backend, rows)
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
