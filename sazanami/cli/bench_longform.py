"""``sazanami bench longform``: thin layer over :mod:`sazanami.bench.longform` (registered in :mod:`.bench`)."""

from __future__ import annotations

from pathlib import Path

import click

from sazanami.cli.options import backend_option, engine_from_options
from sazanami.errors import ParameterError

DEFAULT_OUT = Path("bench") / "out" / "longform"
DEFAULT_CACHE = Path("bench") / "out" / "longform-cache.jsonl"


@click.command("longform")
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSONL prompts ({id, prompt} per line)  [default: bench/data/creative_test.jsonl, the held-out set]",
)
@click.option("--samples", "-k", type=int, default=None, help="Samples per prompt and setting  [default: 8; quick 4]")
@click.option("--max-tokens", type=int, default=None, help="New tokens per sample  [default: 512; quick 256]")
@click.option(
    "--methods",
    default=None,
    help="Comma-separated methods (temperature always included)  [default: all; quick: a fixed subset]; "
    "see --list-methods.",
)
@click.option("--limit", type=int, default=None, help="Use the first N prompts  [default: all; quick 6]")
@click.option(
    "--judge-samples",
    type=int,
    default=None,
    help="Samples per prompt and setting scored by Gemma 3 270M; 0 = no judge  [default: all; quick 1]",
)
@click.option(
    "--partitioner",
    type=click.Choice(["embedding", "unigram"]),
    default="embedding",
    show_default=True,
    help="Equivalence of two samples for distinct_k: MiniLM cosine or unigram Jaccard, at the thresholds "
    "fixed on bench/data/equivalence_pairs.jsonl.",
)
@click.option("--quick", is_flag=True, help="6 prompts × 4 samples × 256 tokens, 8 settings (temperature, white/pink/brown temperature noise, the pink quantile draw), 1 judged sample each.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder  [default: bench/out/longform]")
@click.option("--name", default="longform", show_default=True, help="File name stem of the outputs.")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    default=None,
    help="Generation cache (JSONL; judge scores go beside it)  [default: bench/out/longform-cache.jsonl]",
)
@click.option("--model", "-m", default=None, help="Registry name or HF directory  [default: the embedded model]")
@backend_option
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of the samples and the bootstrap.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--threads", type=int, default=None, help="torch and llama.cpp CPU threads; 1 on shared cores  [default: torch's; the judge: physical cores]"
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-setting lines.")
@click.option("--list-methods", is_flag=True, help="List the methods and their sweeps, then exit.")
def longform(
    prompts: str | None,
    samples: int | None,
    max_tokens: int | None,
    methods: str | None,
    limit: int | None,
    judge_samples: int | None,
    partitioner: str,
    quick: bool,
    out: str | None,
    name: str,
    cache: str | None,
    model: str | None,
    backend: str,
    seed: int,
    n_boot: int,
    threads: int | None,
    quiet: bool,
    list_methods: bool,
) -> None:
    """Long texts: surprisal spectra vs human prose, repetition, degeneration, distinct_k, and
    perplexity under an independent judge (Gemma 3 270M), per sampler setting.

    Writes longform.csv (means with 95% bootstrap intervals over prompts, and gains over the
    temperature curve at equal judge perplexity), longform_prompts.csv, longform.json and
    plots of the frontier, the surprisal spectra and the degeneration curves.
    """
    from sazanami.bench import longform as lf

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
    config = lf.LongformConfig(
        prompts=prompts or lf.TEST_PROMPTS,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None,
        samples=samples,
        max_tokens=max_tokens,
        limit=limit,
        judge_samples=judge_samples,
        quick=quick,
        model=model,
        seed=seed,
        n_boot=n_boot,
        cache=Path(cache) if cache else DEFAULT_CACHE,
        partitioner=partitioner,
        threads=threads,
    )
    from sazanami.models import DEFAULT_MODEL

    rows = config.resolved().samples or 1  # each prompt's samples run as one batch
    engine = engine_from_options(model or DEFAULT_MODEL, True, backend, rows)
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
