"""``sazanami generate``: N variants of a prompt, each from its own seed."""

from __future__ import annotations

import json
from typing import Any

import click

from sazanami.cli.options import (
    engine_from_options,
    engine_options,
    highlight,
    island_options,
    islands_from_options,
    params_from_options,
    sampling_options,
)


@click.command()
@click.argument("prompt")
@sampling_options
@island_options
@click.option("--stream", is_flag=True, help="Print tokens as they are generated.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (injected spans marked).")
@engine_options
def generate(prompt: str, stream: bool, as_json: bool, **kw: Any) -> None:
    """Generate N variants of PROMPT, each from its own seed."""
    params = params_from_options(kw)
    rows = params.beams.width if params.beams is not None else params.n
    engine = engine_from_options(
        kw["model"], kw["prefix_cache"], kw["backend"], rows, params.fluctuation, kw["ray_replicas"], kw["ray_address"]
    )
    islands = islands_from_options(kw, engine.tokenizer)
    if params.beams is not None:  # a beams entry in --fluctuation: the beam-search entry, not the deprecated field
        from sazanami.sampling.beam_params import BeamParams

        rows = engine.beam_rows([prompt], BeamParams.from_sampling(params), kw["raw"], islands=islands)
    else:
        rows = engine.rows_for([prompt], params, kw["raw"], islands=islands)
    if params.beams is not None or not stream or as_json:  # beams do not stream
        completions = engine.run(rows)
    else:
        out: list[Any] = []
        multi = len(rows) > 1
        for deltas in engine.steps(rows, out):
            for d in deltas:
                if d.text:
                    click.echo(f"[{d.row}] {d.text}\n" if multi else d.text, nl=False)
        click.echo()
        return
    if as_json:
        doc = {
            "model": kw["model"],
            "backend": engine.backend.capabilities.backend,
            "prompt": prompt,
            "params": params.to_dict(),
            "islands": islands.to_dict() if islands is not None else None,
            "completions": [c.to_dict() for c in completions],
        }
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for c in completions:
        header = f"── variant {c.index}  seed={c.seed}  tokens={c.completion_tokens}  finish={c.finish_reason}  mean logprob={c.mean_logprob:.2f}"
        click.echo(click.style(header, bold=True))
        click.echo(highlight(c, lambda s: click.style(s, dim=True)).strip() + "\n")
